"""``scripts/evaluate.py``: the test accuracy of a trained model, with any backend."""
from __future__ import annotations

import json
import os

import numpy as np

from common.train import checkpoint
from common.inputs import data as D
from common.serve import predict as P
from common.serve import export as X
from common.net import weights as W
from common.net.family import ALIASES, PRESETS
from common.train.loop import evaluate
from backends.config import ENV_VAR, resolve

from .errors import UserError, guard
from .options import (ArgumentParser, add_data_args, add_model_args, add_weights_args, build_from_options,
                      data_options, get_backend, load_dataset, model_options, read_weights, spec_of)


def parser():
    p = ArgumentParser(description="Accuracy of a trained model on the Fashion-MNIST test set, with "
                                   "any backend (the weights are framework-neutral).")
    p.add_argument("source", help="a run folder, its checkpoint folder, a weight file in any format "
                                  "(.npz, .pt, .weights.h5, .params, .pdparams), or an artifact written by "
                                  "scripts/export.py (model.onnx, model.int8.onnx, ...), run in its own runtime")
    p.add_argument("--backend", help=f"default: ${ENV_VAR}, else the run's own, else pytorch")
    add_data_args(p)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--resize", type=int, help="input size (default: the run's; 96 for a weight file)")
    add_weights_args(p)
    add_model_args(p)
    p.epilog = ("The model options describe a bare weight file; given with a run they override "
                "the run's model, and weights that do not fit are refused.")
    return p


def locate(source):
    """(weights.npz path, the run record or None) of a run folder, a checkpoint or a file."""
    if os.path.isdir(source):
        run_dir = source if os.path.exists(os.path.join(source, "run.json")) else os.path.dirname(
            os.path.abspath(source))
        path = (os.path.join(source, "weights.npz") if os.path.exists(os.path.join(source, "weights.npz"))
                else checkpoint.find(source) and os.path.join(checkpoint.find(source), "weights.npz"))
        if not path or not os.path.exists(os.path.join(run_dir, "run.json")):
            raise UserError(f"{source} is not a run folder or a run's checkpoint (it needs a "
                            f"weights.npz and the run's run.json)")
        with open(os.path.join(run_dir, "run.json")) as f:
            return path, json.load(f)
    if not os.path.exists(source):
        raise UserError(f"{source} does not exist")
    return source, None


def preset_of(name) -> str:
    """The family's member a weight file records (``W.save(..., spec=net.spec.name)``): its
    table's name, ``*`` marking a preset built with options (``tv_googlenet*``); ``d2l`` for
    a file that names none (or a user's table)."""
    name = str(name or "").rstrip("*")
    return name if name in PRESETS or name in ALIASES else "d2l"


def evaluate_artifact(args, path, meta):
    """The test accuracy of an exported artifact in its serving runtime (ONNX Runtime for
    ``.onnx`` and ``.int8.onnx``): the test split of the dataset its source run trained on
    (``--data-dir`` > the run's folder), prepared as its metadata says."""
    from .predict import artifact_model
    src = meta.get("source") or {}
    run = None
    if src.get("run") and os.path.exists(os.path.join(src["run"], "run.json")):
        with open(os.path.join(src["run"], "run.json")) as f:
            run = json.load(f)
    data = (run or {}).get("data") or {"dataset": (meta.get("dataset") or {}).get("name", "fashion-mnist")}
    if args.dataset:
        data = data_options(args)
    data_dir = args.data_dir or src.get("data_dir")
    ds = load_dataset(data, data_dir, int(meta["input"]["shape"][2]))
    pre = meta["preprocessing"]
    norm = dict(mean=pre["mean"], std=pre["std"]) if pre.get("normalize") else {}
    what, predict = artifact_model(path, meta, args.backend)
    losses, correct, n = 0.0, 0, 0
    for x, y in D.Loader(ds.test, args.batch_size, prefetch=0, **norm).epoch(0):
        p = P.softmax(predict(x))
        losses += float(-np.log(np.maximum(p[np.arange(len(y)), y], 1e-300)).sum())
        correct += int((p.argmax(1) == y).sum())
        n += len(y)
    print(f"{path} with {what}: test loss {losses / n:.4f}, test acc {correct / n:.4f} ({n} examples; "
          f"{meta.get('format')} of a run trained with {src.get('trained_with')})")
    return 0


@guard
def main(argv=None):
    args = parser().parse_args(argv)
    found = X.find_artifact(args.source) if os.path.exists(args.source) else None
    if found and not os.path.exists(os.path.join(found[0], "weights.npz")):
        return evaluate_artifact(args, *found)
    path, run = locate(args.source)
    meta = W.meta(path)                          # a neutral file's record of its model; {} otherwise
    size = args.resize or (run or {}).get("recipe", {}).get("resize") or meta.get("input_size") or 96
    data = run.get("data", {"dataset": "fashion-mnist"}) if run else data_options(args)
    data_dir = args.data_dir or (run or {}).get("data_dir")
    ds = None
    if run is None:                              # a bare weight file: the data give the shape
        ds = load_dataset(data, data_dir, size)
        model = model_options(args, input_size=size, **ds.model_options())
        if args.preset is None:
            model["preset"] = preset_of(meta.get("spec"))
    elif any(getattr(args, k) is not None for k in ("preset", "aux_logits", "norm", "branch3_kernel",
                                                    "dropout")):
        m = run["model"]
        model = model_options(args, input_size=size, in_channels=m.get("in_channels"),
                              num_classes=m.get("num_classes"))
    else:
        model = dict(run["model"], input_size=size)
    name = resolve(args.backend or os.environ.get(ENV_VAR) or (run or {}).get("backend"))
    try:                                         # read and checked before a network is built
        weights = read_weights(path, spec_of(model), size, allow_extra=args.drop_extra)
    except W.WeightsMismatch as e:
        raise UserError(f"{path} does not fit the {model['preset']} network at {size}x{size}: {e}") from None
    bk = get_backend(name)
    net = bk.set_weights(build_from_options(bk, model, seed=None), weights)
    ds = ds or load_dataset(data, data_dir, size)
    recorded = (run or {}).get("dataset", {})
    norm = (dict(mean=recorded["mean"], std=recorded["std"]) if recorded.get("normalize")
            else dict(mean=ds.mean, std=ds.std) if ds.normalize else {})
    test = ds.test
    loss, acc = evaluate(bk, bk.Trainer(net), D.Loader(test, args.batch_size, **norm))
    trained = f"; trained with {run['backend']}" if run else ""
    print(f"{name} on {bk.device()}: test loss {loss:.4f}, test acc {acc:.4f} ({len(test)} examples{trained})")
    return 0
