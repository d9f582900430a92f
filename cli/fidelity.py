"""``scripts/fidelity.py``: how closely the installed backends agree, given the same weights.

For the book's net (and its batch-norm variant) every backend loads the same
framework-neutral weights; per stage, the largest absolute difference from the reference
backend (PyTorch if installed), then the same after one SGD step (loss and weights).
"""
from __future__ import annotations

import numpy as np

from common.net import spec as S
from backends.config import DEFAULT, installed

from .errors import guard
from .options import ArgumentParser, get_backend

SPECS = {"d2l": lambda: S.googlenet("d2l"),
         "bn": lambda: S.googlenet("bn", in_channels=1, num_classes=10, input_size=96,
                                   aux_logits=False, dropout=0.0)}


def measure(bk, spec, X, y, seed):
    net = bk.build(spec, seed=seed)
    outs = bk.stage_outputs(net, X)
    trainer = bk.Trainer(net, lr=0.1)
    loss, _ = trainer.train_step(bk.to_tensor(X), bk.to_tensor(y))
    return outs, loss, bk.get_weights(net)


def parser():
    p = ArgumentParser(description="Measure how closely the installed backends agree, given the "
                                   "same weights and input (the tables of docs/fidelity.md).")
    p.add_argument("--backends", default=",".join(installed()))
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    return p


@guard
def main(argv=None):
    args = parser().parse_args(argv)
    names = args.backends.split(",")
    ref = DEFAULT if DEFAULT in names else names[0]
    rng = np.random.default_rng(args.seed)
    for key, make in SPECS.items():
        spec = make()
        X = rng.random((args.batch, 1, 96, 96), dtype=np.float32)
        y = np.arange(args.batch) % 10
        res = {n: measure(get_backend(n), spec, X, y, args.seed) for n in names}
        others = [n for n in names if n != ref]
        print(f"\n### `{key}`: largest |difference| from {ref} (batch {args.batch}, float32, CPU)\n")
        print("| | " + " | ".join(others) + " |")
        print("| --- |" + " --- |" * len(others))
        for stage in res[ref][0]:
            print(f"| {stage} | " + " | ".join(
                f"{np.abs(res[n][0][stage] - res[ref][0][stage]).max():.1e}" for n in others) + " |")
        print("| loss after one SGD step (batch sum) | " + " | ".join(
            f"{abs(res[n][1] - res[ref][1]):.1e}" for n in others) + " |")
        print("| weights after one SGD step | " + " | ".join(
            f"{max(np.abs(res[n][2][k] - res[ref][2][k]).max() for k in res[ref][2]):.1e}"
            for n in others) + " |")
    return 0
