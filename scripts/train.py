#!/usr/bin/env python
"""Train GoogLeNet on Fashion-MNIST with the backend from $GOOGLENET_BACKEND or --backend.

    GOOGLENET_BACKEND=mxnet python scripts/train.py                 # the book's recipe
    python scripts/train.py --backend paddle --epochs 2 --data-dir DIR
    python scripts/train.py --resume runs/<run>                      # continue a run
"""
import _path  # noqa: F401
from cli.errors import run
from cli.train import main

if __name__ == "__main__":
    run(main)
