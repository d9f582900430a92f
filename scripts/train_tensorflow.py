#!/usr/bin/env python
"""Train GoogLeNet on Fashion-MNIST with the tensorflow backend (same options as train.py)."""
import _path  # noqa: F401
from cli.errors import run
from cli.train import main

if __name__ == "__main__":
    run(main, fixed_backend="tensorflow")
