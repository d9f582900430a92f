#!/usr/bin/env python
"""Print the layer table of GoogLeNet as built by one backend (like torchinfo / paddle.summary).

    GOOGLENET_BACKEND=paddle python scripts/summary.py
    python scripts/summary.py --backend tf --preset paper --aux

Output shapes and parameter counts are read from the built framework model; the
multiply-adds are the oracle's for those shapes.  Shapes are shown channels-first
(C x H x W) for every backend; TensorFlow computes in NHWC.
"""
import _path  # noqa: F401
from cli.errors import run
from cli.summary import main

if __name__ == "__main__":
    run(main)
