#!/usr/bin/env python
"""Convert GoogLeNet weights between the four frameworks' formats and the neutral one.

    python scripts/convert.py runs/<run>/checkpoint model.pt            # -> PyTorch state_dict
    python scripts/convert.py model.pt model.weights.h5 --preset d2l    # PyTorch -> Keras
    python scripts/convert.py model.params weights.npz                  # MXNet -> neutral

The format follows the file name: ``.npz`` framework-neutral (canonical names and
layouts, what checkpoints hold), ``.pt`` PyTorch, ``.weights.h5`` Keras, ``.params``
Gluon, ``.pdparams`` Paddle.  The network comes from the run's ``run.json`` for a run or
checkpoint, else from the model options.  After writing, the result is loaded back and
its logits on a random batch are compared with the source's.
"""
import argparse
import json
import os
import sys

import _path  # noqa: F401
import importlib.util

if importlib.util.find_spec("torch"):
    import torch  # noqa: F401  (before TensorFlow, should both be used)
import numpy as np

from common import weights as W
from common.cli import add_model_args, build_from_options, get_backend_or_exit, model_options
from common.switch import BACKENDS

SUFFIXES = {".pt": "pytorch", ".weights.h5": "tensorflow", ".params": "mxnet", ".pdparams": "paddle"}


def backend_of(path):
    for suffix, name in SUFFIXES.items():
        if path.endswith(suffix):
            return name
    if path.endswith(".npz"):
        return None
    sys.exit(f"error: {path}: unknown format; use .npz, " + ", ".join(SUFFIXES))


def source_model(src, args):
    """(weights file, model options) for a run folder, a checkpoint or a plain file."""
    if os.path.isdir(src):
        ckpt = os.path.join(src, "checkpoint") if os.path.isdir(os.path.join(src, "checkpoint")) else src
        run = os.path.join(os.path.dirname(os.path.abspath(ckpt)), "run.json")
        if not os.path.exists(run):
            sys.exit(f"error: {src} is a folder but not a run or a checkpoint (no run.json)")
        with open(run) as f:
            return os.path.join(ckpt, "weights.npz"), json.load(f)["model"]
    if not os.path.exists(src):
        sys.exit(f"error: {src} does not exist")
    return src, model_options(args, in_channels=args.in_channels, num_classes=args.num_classes,
                              input_size=args.input_size)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="a run folder, a checkpoint, or a weight file")
    p.add_argument("out", help="the file to write; its suffix picks the format")
    p.add_argument("--in-channels", type=int)
    p.add_argument("--num-classes", type=int)
    p.add_argument("--input-size", type=int)
    add_model_args(p)
    args = p.parse_args(argv)
    path, model = source_model(args.src, args)
    src_name, dst_name = backend_of(path), backend_of(args.out)
    X = None
    if src_name:                                     # a native file: read it with its framework
        src_bk = get_backend_or_exit(src_name)
        net = build_from_options(src_bk, model, seed=None)
        src_bk.load_native(net, path)
        weights = src_bk.get_weights(net)
        X = np.random.default_rng(0).random((2, net.spec.in_channels, net.input_size, net.input_size),
                                            dtype=np.float32)
        reference = src_bk.forward(net, X)
    else:
        try:
            weights = W.load(path)
        except W.WeightsError as e:
            sys.exit(f"error: {e}")
    checker = get_backend_or_exit(dst_name or src_name or "pytorch")
    net = build_from_options(checker, model, seed=None)
    try:
        checker.set_weights(net, weights)            # validates names and shapes first
    except W.WeightsError as e:
        sys.exit(f"error: {path} does not fit the {model['preset']} network: {e}")
    if dst_name:
        checker.save_native(net, args.out)
        checker.load_native(net, args.out)
    else:
        W.save(args.out, weights, converted_from=path)
        checker.set_weights(net, W.load(args.out))
    if X is None:
        X = np.random.default_rng(0).random((2, net.spec.in_channels, net.input_size, net.input_size),
                                            dtype=np.float32)
        reference = None
    if reference is not None:
        diff = float(np.abs(checker.forward(net, X) - reference).max())
        print(f"logits of {args.out} ({dst_name or 'neutral'}) vs {path} ({src_name}): max |diff| {diff:.2e}")
    print(f"wrote {args.out} ({dst_name or 'framework-neutral .npz'}; {len(weights)} tensors)")


if __name__ == "__main__":
    main()
