#!/usr/bin/env python
"""Accuracy of a trained model on the Fashion-MNIST test set, with any backend.

    python scripts/evaluate.py runs/<run> --data-dir DIR
    python scripts/evaluate.py runs/<run>/checkpoint --backend tensorflow   # trained with another
    python scripts/evaluate.py weights.npz --preset bn                     # a bare weight file

The weights are framework-neutral, so a model trained with one backend evaluates with any
other.  Backend: --backend > $GOOGLENET_BACKEND > the run's own.
"""
import _path  # noqa: F401
from cli.errors import run
from cli.evaluate import main

if __name__ == "__main__":
    run(main)
