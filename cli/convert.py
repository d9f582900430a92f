"""``scripts/convert.py``: weights between the four frameworks' formats and the neutral one."""
from __future__ import annotations

import json
import os

import numpy as np

from backends.config import NATIVE_SUFFIXES, weight_format
from common.train import checkpoint
from common.net import pretrained as PT, weights as W

from . import zoo as Z
from .errors import UserError, guard
from .options import (ArgumentParser, add_model_args, add_weights_args, build_from_options, get_backend,
                      model_options, read_weights, spec_of)

SUFFIXES = NATIVE_SUFFIXES


def backend_of(path):
    """The backend whose native format ``path`` names (None: the neutral .npz)."""
    try:
        return weight_format(path)
    except W.WeightsError:
        raise UserError(f"{path}: unknown format; use .npz, " + ", ".join(SUFFIXES)) from None


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
                                   "(framework-neutral), .pt, .weights.h5, .params, .pdparams; and the zoos' "
                                   "ImageNet weights (torchvision .pth, Keras .h5, Paddle .pdparams, Gluon "
                                   ".params, or imagenet:SOURCE) into any of them.")
    p.add_argument("src", help="a run folder, a checkpoint, a weight file, a zoo's weight file (its source "
                               "is told by its content) or imagenet:SOURCE (docs/pretrained.md)")
    p.add_argument("out", help="the file to write; its suffix picks the format")
    p.add_argument("--in-channels", type=int)
    p.add_argument("--num-classes", type=int)
    p.add_argument("--input-size", type=int)
    p.add_argument("--source", metavar="SOURCE", help="the zoo source of a zoo file, when its content is not "
                                                      "enough (" + ", ".join(PT.SOURCES) + ")")
    add_weights_args(p)
    add_model_args(p)
    p.epilog = ("Every format is read the same way: into the table's names first, without building "
                "a network, then checked as a whole (every tensor present, shapes right, nothing "
                "extra), and only then converted; no format is read in a way that can run code "
                "(docs/security.md).")
    return p


def _batch(net):
    return np.random.default_rng(0).random((2, net.spec.in_channels, net.input_size, net.input_size),
                                           dtype=np.float32)


@guard
def main(argv=None):
    args = parser().parse_args(argv)
    dst_name = backend_of(args.out)
    zoo = _zoo(args)
    if zoo is not None:
        return _convert_zoo(zoo, args.out, dst_name)
    path, model = source_model(args.src, args)
    src_name = backend_of(path)
    spec = spec_of(model)

    def read(p):
        try:
            return read_weights(p, spec, spec.input_size, allow_extra=args.drop_extra)
        except W.WeightsMismatch as e:
            raise UserError(f"{p} does not fit the {model['preset']} network: {e}") from None

    weights = read(path)                             # checked in full before anything is built
    X = reference = None
    if src_name:                                     # the source framework's logits, for comparison
        src_bk = get_backend(src_name)
        net = src_bk.set_weights(build_from_options(src_bk, model, seed=None), weights)
        X = _batch(net)
        reference = src_bk.forward(net, X)
    if dst_name:
        checker = get_backend(dst_name)
        net = checker.set_weights(build_from_options(checker, model, seed=None), weights)
        checker.save_native(net, args.out)
    else:
        W.save(args.out, weights, converted_from=path, spec=spec.name, input_size=spec.input_size)
    back = read(args.out)                            # the written file, through the same door
    if reference is not None:
        checker = get_backend(dst_name or src_name)
        net = checker.set_weights(build_from_options(checker, model, seed=None), back)
        diff = float(np.abs(checker.forward(net, X) - reference).max())
        print(f"logits of {args.out} ({dst_name or 'neutral'}) vs {path} ({src_name}): max |diff| {diff:.2e}")
    print(f"wrote {args.out} ({dst_name or 'framework-neutral .npz'}; {len(back)} tensors)")
    return 0


def _zoo(args):
    """``(source, weights, path)`` when ``src`` is a zoo's file or ``imagenet:SOURCE``."""
    if args.source:
        try:
            src = PT.source(args.source)
            return (src,) + PT.read(args.src, src.name)[1:] + (args.src,)
        except (W.WeightsError, OSError) as e:
            raise UserError(f"{args.src}: {e}") from None
    return Z.load(args.src)


def _convert_zoo(zoo, out, dst_name):
    """A zoo's weights into ``out``: the neutral .npz keeps the source's name, model options and
    preprocessing in its metadata (scripts/predict.py reads them); a framework's own format is
    written by that framework from the table's net."""
    src, weights, path = zoo
    spec = src.spec()
    if dst_name:
        bk = get_backend(dst_name)
        net = bk.set_weights(build_from_options(bk, src.model, seed=None), weights)
        bk.save_native(net, out)
    else:
        W.save(out, weights, converted_from=os.path.basename(path), pretrained=src.name, model=src.model,
               spec=spec.name, input_size=src.input_size, preprocessing=src.preprocessing, classes="imagenet")
    back = read_weights(out, spec, src.input_size)
    same = all(np.array_equal(back[k], weights[k]) for k in weights)
    print(f"{path}: {src.describe()}")
    print(f"wrote {out} ({dst_name or 'framework-neutral .npz'}; {len(back)} tensors, "
          f"{'bit-identical to the source' if same else 'NOT identical to the source'})")
    return 0 if same else 1
