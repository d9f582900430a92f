#!/usr/bin/env python
"""Train GoogLeNet on Fashion-MNIST with the mxnet backend (same options as train.py)."""
import _path  # noqa: F401
from common.cli import train_main

if __name__ == "__main__":
    train_main(fixed_backend="mxnet")
