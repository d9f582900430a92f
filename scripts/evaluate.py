#!/usr/bin/env python
"""Accuracy of a saved model on the Fashion-MNIST test set, with any backend.

    python scripts/evaluate.py runs/<run>/checkpoint --data-dir DIR
    python scripts/evaluate.py runs/<run>/checkpoint --backend tensorflow   # trained with another

The checkpoint's weights are framework-neutral, so a model trained with one backend
evaluates with any other.  Backend: --backend > $GOOGLENET_BACKEND > the run's own.
"""
import argparse
import json
import os
import sys

import _path  # noqa: F401
from common import data as D, weights as W
from common.cli import build_from_options, get_backend_or_exit
from common.loop import evaluate
from common.switch import BackendError, ENV_VAR, resolve


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a run's checkpoint folder (or the run folder)")
    p.add_argument("--backend")
    p.add_argument("--data-dir")
    p.add_argument("--batch-size", type=int, default=256)
    args = p.parse_args(argv)
    ckpt = args.checkpoint
    if os.path.exists(os.path.join(ckpt, "checkpoint")):
        ckpt = os.path.join(ckpt, "checkpoint")
    run_json = os.path.join(os.path.dirname(os.path.abspath(ckpt)), "run.json")
    if not os.path.exists(os.path.join(ckpt, "weights.npz")) or not os.path.exists(run_json):
        sys.exit(f"error: {args.checkpoint} is not a run's checkpoint (needs weights.npz and ../run.json)")
    with open(run_json) as f:
        run = json.load(f)
    try:
        name = resolve(args.backend or os.environ.get(ENV_VAR) or run["backend"])
    except BackendError as e:
        sys.exit(f"error: {e}")
    bk = get_backend_or_exit(name)
    net = build_from_options(bk, run["model"], seed=None)
    try:
        bk.set_weights(net, W.load(os.path.join(ckpt, "weights.npz")))
        _, test = D.load_fashion_mnist(args.data_dir or run.get("data_dir"), net.input_size)
    except (W.WeightsError, D.DataError) as e:
        sys.exit(f"error: {e}")
    trainer = bk.Trainer(net)
    loss, acc = evaluate(bk, trainer, D.Loader(test, args.batch_size))
    print(f"{name} on {bk.device()}: test loss {loss:.4f}, test acc {acc:.4f} "
          f"({len(test)} examples; trained with {run['backend']})")
    return dict(backend=name, trained_with=run["backend"], test_loss=loss, test_acc=acc)


if __name__ == "__main__":
    main()
