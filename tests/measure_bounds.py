"""How far inside their derived bounds the backends land: the tables of docs/fidelity.md.

    python -m tests.measure_bounds                      # this machine's full instruction set
    ONEDNN_MAX_CPU_ISA=AVX2 DNNL_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        ATEN_CPU_CAPABILITY=avx2 OPENBLAS_CORETYPE=Haswell python -m tests.measure_bounds

For every check of tests/test_equivalence.py and tests/test_recipes.py and every installed
backend: the largest |backend - float64| and the largest ratio of it to its bound (a test
fails above 1).  The first line names the CPU flags and the instruction-set caps in effect.
"""
import os
import sys

import numpy as np

import torch  # noqa: F401  (before TensorFlow)

from common.runtime import cpu_summary
from backends.config import installed
from tests import test_equivalence as E, test_recipes as R
from tests.conftest import backend_or_skip


def ratios(got, want, bound):
    got, want, bound = (np.asarray(a, np.float64) for a in (got, want, bound))
    err = np.abs(got - want)
    return float(err.max()), float(np.where(err == 0, 0, err / np.maximum(bound, 1e-300)).max())


def merge(rows):
    return max(r[0] for r in rows), max(r[1] for r in rows)


def main():
    print(f"cpu: {cpu_summary()}\n")
    names = installed()
    checks = {}
    for key in E.FORWARD_SPECS:
        ref, bounds = E.cached("float64", ("forward", key), E.forward_outputs(key))
        checks[f"forward `{key}` (stages, features, logits)"] = lambda n, key=key, ref=ref, bounds=bounds: merge(
            [ratios(v, ref[k], bounds[k]) for k, v in E.cached(n, ("forward", key), E.forward_outputs(key)).items()])
    for key in E.SETTINGS:
        ref = E.cached("float64", key, E.training(key))
        checks[f"`{key}` loss and weights ({len(ref.ties)} ties)"] = lambda n, key=key, ref=ref: merge(
            [ratios(E.cached(n, key, E.training(key))[0], ref.losses, ref.loss_bounds)]
            + [ratios(w, ref.weights[k], ref.bounds[k]) for k, w in E.cached(n, key, E.training(key))[1].items()])
    (loss, lb), (stats, sb) = E.cached("float64", "bn-step", E.bn_step)
    checks["BN step: loss and running statistics"] = lambda n: merge(
        [ratios(E.cached(n, "bn-step", E.bn_step)[0], loss, lb)]
        + [ratios(v, stats[k], sb[k]) for k, v in E.cached(n, "bn-step", E.bn_step)[1].items()])
    for key in R.OPTIONS:
        ref = R.run_steps("float64", key)
        checks[f"recipe `{key}`, 4 steps ({len(ref.ties)} ties)"] = lambda n, key=key, ref=ref: merge(
            [ratios(R.run_steps(n, key)[0], ref.losses, ref.loss_bounds)]
            + [ratios(w, ref.weights[k], ref.bounds[k]) for k, w in R.run_steps(n, key)[1].items()])
    print("| check | " + " | ".join(names) + " |")
    print("| --- |" + " ---: |" * len(names))
    for what, measure in checks.items():
        cells = []
        for n in names:
            backend_or_skip(n)
            err, ratio = measure(n)
            cells.append(f"{err:.1e} ({ratio:.3f})")
        print(f"| {what} | " + " | ".join(cells) + " |")
        sys.stdout.flush()
    print("\ncells: largest |backend - float64| (largest |backend - float64| / bound)")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
