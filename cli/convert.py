"""``scripts/convert.py``: weights between the four frameworks' formats and the neutral one."""
from __future__ import annotations

import json
import os

import numpy as np

from common import checkpoint, weights as W

from .errors import UserError, guard
from .options import ArgumentParser, add_model_args, build_from_options, get_backend, model_options

SUFFIXES = {".pt": "pytorch", ".weights.h5": "tensorflow", ".params": "mxnet", ".pdparams": "paddle"}


def backend_of(path):
    """The backend whose native format ``path`` names (None: the neutral .npz)."""
    for suffix, name in SUFFIXES.items():
        if path.endswith(suffix):
            return name
    if path.endswith(".npz"):
        return None
    raise UserError(f"{path}: unknown format; use .npz, " + ", ".join(SUFFIXES))


def source_model(src, args):
    """(weights file, model options) for a run folder, a checkpoint or a plain file."""
    if os.path.isdir(src):
        ckpt = src if os.path.exists(os.path.join(src, "weights.npz")) else checkpoint.find(src)
        run = os.path.join(os.path.dirname(os.path.abspath(ckpt or src)), "run.json")
        if ckpt is None or not os.path.exists(run):
            raise UserError(f"{src} is a folder but not a run or a checkpoint (no run.json)")
        with open(run) as f:
            return os.path.join(ckpt, "weights.npz"), json.load(f)["model"]
    if not os.path.exists(src):
        raise UserError(f"{src} does not exist")
    return src, model_options(args, in_channels=args.in_channels, num_classes=args.num_classes,
                              input_size=args.input_size)


def parser():
    p = ArgumentParser(description="Convert GoogLeNet weights between the frameworks' formats: .npz "
                                   "(framework-neutral), .pt, .weights.h5, .params, .pdparams.")
    p.add_argument("src", help="a run folder, a checkpoint, or a weight file")
    p.add_argument("out", help="the file to write; its suffix picks the format")
    p.add_argument("--in-channels", type=int)
    p.add_argument("--num-classes", type=int)
    p.add_argument("--input-size", type=int)
    add_model_args(p)
    return p


def _batch(net):
    return np.random.default_rng(0).random((2, net.spec.in_channels, net.input_size, net.input_size),
                                           dtype=np.float32)


@guard
def main(argv=None):
    args = parser().parse_args(argv)
    dst_name = backend_of(args.out)
    path, model = source_model(args.src, args)
    src_name = backend_of(path)
    X = reference = None
    if src_name:                                     # a native file: read it with its framework
        src_bk = get_backend(src_name)
        net = build_from_options(src_bk, model, seed=None)
        src_bk.load_native(net, path)
        weights = src_bk.get_weights(net)
        X = _batch(net)
        reference = src_bk.forward(net, X)
    else:
        weights = W.load(path)
    checker = get_backend(dst_name or src_name or "pytorch")
    net = build_from_options(checker, model, seed=None)
    try:
        checker.set_weights(net, weights)            # validates names and shapes first
    except W.WeightsError as e:
        raise UserError(f"{path} does not fit the {model['preset']} network: {e}") from None
    if dst_name:
        checker.save_native(net, args.out)
        checker.load_native(net, args.out)
    else:
        W.save(args.out, weights, converted_from=path)
        checker.set_weights(net, W.load(args.out))
    if reference is not None:
        diff = float(np.abs(checker.forward(net, X) - reference).max())
        print(f"logits of {args.out} ({dst_name or 'neutral'}) vs {path} ({src_name}): max |diff| {diff:.2e}")
    print(f"wrote {args.out} ({dst_name or 'framework-neutral .npz'}; {len(weights)} tensors)")
    return 0
