"""Framework-free pieces of the benchmark (``scripts/bench.py``): FLOP accounting, the
matrix-multiply roofline, timing statistics, the worker's batches and the report tables.

FLOP convention (stated once, used everywhere):

* forward multiply-adds (MACs) per example come from the oracle
  (:func:`common.oracle.analyze`): conv and dense layers only, main network; bias
  additions, activations, pooling and the loss are not counted;
* one multiply-add = 2 FLOPs, so forward FLOPs = 2 * MACs;
* one training example = forward + backward, and the backward pass costs about twice
  the forward (gradients with respect to the inputs and to the weights, one
  convolution each), so training FLOPs = 3 * forward FLOPs = 6 * MACs.  (The first
  conv layer needs no input gradient, so the true count is about 1 % lower; the
  convention ignores that, as is usual.)

For the book's net at 1x96x96: 276,066,304 MACs, 0.552 GFLOP forward, 1.656 GFLOP per
training example.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from . import oracle

#: training FLOPs = TRAIN_FACTOR * forward FLOPs (forward + backward ~ 2x forward)
TRAIN_FACTOR = 3
FLOP_CONVENTION = ("forward FLOPs = 2 x oracle multiply-adds (conv and dense layers, main network); "
                   "training FLOPs = 3 x forward (backward ~ 2 x forward)")


# --------------------------------------------------------------------------- FLOPs
def flops(spec="d2l", input_size=None) -> Dict[str, int]:
    """Forward MACs, forward FLOPs and training FLOPs per example (see the module doc)."""
    macs = oracle.analyze(spec, input_size).macs
    return dict(forward_macs=macs, forward_flops=2 * macs, train_flops=TRAIN_FACTOR * 2 * macs)


# --------------------------------------------------------------------------- timing
def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def time_repeats(fn: Callable[[], object], steps: int, repeats: int, examples_per_call: int,
                 clock=time.perf_counter) -> List[float]:
    """``repeats`` timings of ``steps`` back-to-back calls of ``fn``, as examples/second
    each.  ``fn`` must synchronise (return host numbers), so wall time is compute time."""
    out = []
    for _ in range(repeats):
        t0 = clock()
        for _ in range(steps):
            fn()
        out.append(steps * examples_per_call / (clock() - t0))
    return out


def matmul_gflops(matmul: Callable, a, b, n: int, repeats: int = 7, warmup: int = 2) -> List[float]:
    """GFLOP/s of ``repeats`` timed ``matmul(a, b)`` of two n x n matrices (2 n^3 FLOPs)."""
    for _ in range(warmup):
        matmul(a, b)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        matmul(a, b)
        out.append(2.0 * n ** 3 / (time.perf_counter() - t0) / 1e9)
    return out


def numpy_matmul_peak(n: int = 2048, repeats: int = 7) -> Dict:
    """The float32 matrix-multiply rate of NumPy's BLAS here (median of ``repeats``)."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    runs = matmul_gflops(np.matmul, a, b, n, repeats)
    return dict(library="numpy " + np.__version__, n=n, gflops=median(runs), runs=runs)


# --------------------------------------------------------------------------- data
def batches(batch_size: int, input_size: int, count: int = 4, in_channels: int = 1,
            num_classes: int = 10, seed: int = 0):
    """``count`` generated batches (uniform [0, 1) float32 NCHW images, random labels),
    cycled by the benchmark so that no step sees the batch of the step before."""
    rng = np.random.default_rng(seed)
    return [(rng.random((batch_size, in_channels, input_size, input_size), dtype=np.float32),
             rng.integers(0, num_classes, batch_size).astype(np.int64)) for _ in range(count)]


def peak_rss_mb() -> Optional[float]:
    """This process's peak resident memory in MiB (``ru_maxrss``; None where unknown)."""
    try:
        import resource
        import sys
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / (1024 * 1024) if sys.platform == "darwin" else kb / 1024
    except (ImportError, OSError):
        return None


# --------------------------------------------------------------------------- derived numbers
def derive(result: Dict, train_flops: int, peak_gflops: float) -> Dict:
    """Add achieved GFLOP/s and the fraction of the matmul roofline to one configuration's
    result (``train_ex_s`` examples/s of training)."""
    r = dict(result)
    if r.get("train_ex_s"):
        r["train_gflops"] = r["train_ex_s"] * train_flops / 1e9
        r["roofline_fraction"] = r["train_gflops"] / peak_gflops if peak_gflops else None
    return r


def ratio(a, b):
    return a / b if a and b else None


# --------------------------------------------------------------------------- tables
def fmt(x, digits=1, pct=False, suffix=""):
    if x is None:
        return "—"
    if pct:
        return f"{100 * x:.0f} %"
    return f"{x:,.{digits}f}{suffix}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]],
                   align: Optional[str] = None) -> str:
    """A GitHub markdown table; ``align`` is one letter per column, ``l`` or ``r``."""
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
