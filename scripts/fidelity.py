#!/usr/bin/env python
"""Measure how closely the installed backends agree, given the same weights and input.

    python scripts/fidelity.py [--backends ...] [--batch 4]

The tables in docs/fidelity.md come from this script.
"""
import _path  # noqa: F401
import importlib.util

if importlib.util.find_spec("torch"):
    import torch  # noqa: F401  (before TensorFlow)
from cli.errors import run
from cli.fidelity import main

if __name__ == "__main__":
    run(main)
