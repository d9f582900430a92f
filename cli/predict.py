"""``scripts/predict.py``: the top-k classes of pictures, with a run's model or an exported artifact.

A run folder (or one of its checkpoint folders) runs the eager model of the chosen backend
with the run's classes and normalisation; an exported artifact (a file or folder with its
metadata beside it, from ``scripts/export.py``) runs in its own serving runtime: ONNX
Runtime for ``.onnx``, ``torch.jit`` / ``torch.export``, TensorFlow, Paddle Inference or
MXNet's ``SymbolBlock`` for the others.  Pictures are prepared exactly as the training
data were (``common/serve/predict.py``).
"""
from __future__ import annotations

import os

import numpy as np

from common.net import pretrained as PT
from common.serve import export as X, predict as P
from backends.config import ENV_VAR, FORMATS, resolve

from . import zoo as Z
from .errors import UserError, guard
from .export import load_net, locate_run, run_meta
from .options import ArgumentParser, get_backend

#: pictures per forward pass
CHUNK = 64


def parser():
    p = ArgumentParser(description="Print the most probable classes of pictures (PNG, JPEG, ...) with a "
                                   "trained model: a run folder or an exported artifact.")
    p.add_argument("model", metavar="RUN_OR_ARTIFACT",
                   help="a run folder (or its checkpoint folder), an artifact written by scripts/export.py "
                        "(model.onnx, model.pt2, saved_model/, ...), a zoo's ImageNet weight file "
                        "(torchvision .pth, Keras .h5, Paddle .pdparams, Gluon .params, or its .npz from "
                        "scripts/convert.py) or imagenet:SOURCE (docs/pretrained.md)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="picture files")
    p.add_argument("--top", type=int, default=3, help="how many classes to print per picture (3)")
    p.add_argument("--backend", help=f"for a run: the framework of the eager model (default: ${ENV_VAR}, "
                                     f"else the run's own); an artifact runs in its own runtime")
    return p


def artifact_model(path, meta, backend=None):
    """(description, predict function) of an exported artifact, in its serving runtime."""
    fmt = meta["format"]
    owner = FORMATS[fmt].backend
    if backend and resolve(backend) != owner:
        runtime = FORMATS[fmt].runtime
        raise UserError(f"{path} ({fmt}) runs in {runtime}, not with --backend {backend}; drop --backend "
                        f"(or give the run folder to use another framework)")
    if fmt in X.ONNX_FORMATS:
        int8 = ", int8" if fmt == X.ONNX_INT8.name else ""
        return f"ONNX Runtime ({meta.get('backend')}'s exporter{int8})", X.onnx_predictor(path)
    bk = get_backend(owner)
    return f"{FORMATS[fmt].runtime} ({fmt})", bk.export.predictor(path, fmt)


def eager_model(run, ckpt, backend=None):
    """(description, predict function) of a run's checkpoint on an eager backend:
    ``--backend`` > ``$GOOGLENET_BACKEND`` > the run's own."""
    name = resolve(backend or os.environ.get(ENV_VAR) or run.get("backend"))
    bk = get_backend(name)
    net = load_net(bk, run, ckpt)
    return f"{name} (eager, on {bk.device()})", lambda batch: bk.forward(net, batch)


def zoo_meta(src) -> dict:
    """The metadata of a zoo's ImageNet weights: the zoo's preprocessing, ImageNet's class names."""
    return dict(preprocessing=src.preprocessing, classes=list(PT.imagenet_classes()), model=dict(src.model),
                input=dict(shape=[None, 3, src.input_size, src.input_size]))


def zoo_model(src, weights, backend=None):
    """(description, predict function) of a zoo's ImageNet weights on an eager backend
    (``--backend`` > ``$GOOGLENET_BACKEND`` > the default)."""
    name = resolve(backend or os.environ.get(ENV_VAR) or None)
    bk = get_backend(name)
    net = bk.build(src.spec(), weights=weights, seed=None)
    return f"{name} (eager, on {bk.device()}; {PT.TOKEN}{src.name})", lambda batch: bk.forward(net, batch)


@guard
def main(argv=None):
    args = parser().parse_intermixed_args(argv)
    if args.top < 1:
        raise UserError(f"--top must be at least 1, not {args.top}")
    zoo = Z.load(args.model)
    found = X.find_artifact(args.model) if zoo is None and os.path.exists(args.model) else None
    if zoo is not None:
        src, weights, _ = zoo
        meta = zoo_meta(src)
        load = lambda: zoo_model(src, weights, args.backend)             # noqa: E731
    elif found:
        path, meta = found
        load = lambda: artifact_model(path, meta, args.backend)          # noqa: E731
    else:
        run_dir, ckpt, run, state = locate_run(args.model)
        meta = run_meta(run_dir, ckpt, run, state)
        load = lambda: eager_model(run, ckpt, args.backend)             # noqa: E731
    batch = P.prepare(args.images, meta["preprocessing"])               # every picture first
    what, predict = load()
    logits = np.concatenate([predict(batch[i:i + CHUNK]) for i in range(0, len(batch), CHUNK)])
    probs = P.softmax(logits)
    print(f"{args.model}: {meta['model'].get('preset')} net, {len(meta['classes'])} classes, "
          f"{meta['input']['shape'][1]}x{meta['input']['shape'][2]}x{meta['input']['shape'][3]} input, "
          f"with {what}")
    for path, row in zip(args.images, probs):
        print(P.format_line(path, P.top_k(row, meta["classes"], args.top)))
    return 0
