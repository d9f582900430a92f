"""Command-line options shared by the commands: the model, the backend, the recipe, the data.

Options that define a run (the recipe's hyperparameters, the model, the data subset)
default to ``None`` here, so that a command can tell what the user asked for from what
it fills in: a new run takes the book's values for what is not given; ``--resume``
refuses a defining option that differs from the run's (see :func:`run_changes`).
"""
from __future__ import annotations

import argparse

from common.inputs import data as D, datasets as DS
from common.net import weights as W
from common.net.spec import get_spec
from backends.config import ENV_VAR, resolve, weight_format
from common.train import finetune as FT
from common.train.schedules import SCHEDULES
from common.train.train_config import AMP, OPTIMIZERS, RECIPES, Recipe, named_recipe

from .errors import ArgumentParser, UserError

__all__ = ["ArgumentParser", "add_backend_arg", "add_model_args", "add_recipe_args", "model_options",
           "build_from_options", "get_backend", "recipe_from", "run_changes", "add_data_args", "data_options",
           "load_dataset", "load_datasets", "base_recipe", "spec_of", "add_weights_args", "read_weights",
           "add_checkpoint_args", "checkpoint_every", "add_finetune_args", "read_start"]

#: model options: attribute of the parsed arguments -> flag
MODEL_FLAGS = dict(preset="--preset", aux_logits="--aux/--no-aux", norm="--norm",
                   branch3_kernel="--branch3-kernel", dropout="--dropout")


def add_model_args(p):
    g = p.add_argument_group("model (the table)")
    g.add_argument("--preset", help="the family's member: d2l (default, the book's net), paper, bn, "
                                    "tv_googlenet, paddle_googlenet, tv_inception_v3 (inception_v3), "
                                    "keras_inception_v3, paddle_inception_v3, gluon_inception_v3 "
                                    "(docs/family.md)")
    g.add_argument("--variant", dest="preset", help="alias of --preset")
    g.add_argument("--aux", dest="aux_logits", action="store_true", default=None,
                   help="add the two auxiliary heads (paper, bn: on by default)")
    g.add_argument("--no-aux", dest="aux_logits", action="store_false")
    g.add_argument("--norm", choices=("none", "bn", "lrn"), help="normalisation (preset's default)")
    g.add_argument("--branch3-kernel", type=int, choices=(3, 5))
    g.add_argument("--dropout", type=float, help="dropout before the classifier")
    return p


def model_options(args, in_channels=None, num_classes=None, input_size=None, defaults=None) -> dict:
    """The model options a run records: the options given, over ``defaults`` (a named
    recipe's model), over the book's net."""
    out = dict(dict(preset="d2l"), **(defaults or {}))
    opts = dict(preset=args.preset, aux_logits=args.aux_logits, norm=args.norm,
                branch3_kernel=args.branch3_kernel, dropout=args.dropout, in_channels=in_channels,
                num_classes=num_classes, input_size=input_size)
    if args.preset is not None and args.preset != out["preset"]:
        out = dict(preset=args.preset)                  # another net: the recipe's options go
    out.update({k: v for k, v in opts.items() if v is not None})
    return out


def spec_of(model: dict):
    """The table of recorded model options (raises SpecError for a bad combination)."""
    m = dict(model)
    return get_spec(m.pop("preset"), **m)


def build_from_options(bk, model: dict, seed=0, **kwargs):
    """``bk.build`` from a run's model options (``kwargs``: ``weights``, ``world``)."""
    model = dict(model)
    return bk.build(model.pop("preset"), seed=seed, **model, **kwargs)


def add_weights_args(p):
    """How a weight file is taken: ``--drop-extra``."""
    p.add_argument("--drop-extra", action="store_true",
                   help="drop the file's tensors that the network does not have (the aux heads "
                        "of a --preset paper --aux file for a --no-aux net) instead of refusing "
                        "the file; every tensor the network has must still be there and fit")
    return p


def _freeze(text):
    try:
        return FT.normalize_freeze(text)
    except FT.FreezeError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_finetune_args(p):
    """Fine-tuning from ``--init-from`` (docs/finetune.md): the classes, what is frozen, the
    body's learning rate, the aux heads."""
    g = p.add_argument_group("fine-tuning (docs/finetune.md)")
    g.add_argument("--num-classes", type=int, metavar="N",
                   help="the classes of the new network (default: the data's; given, it must be the "
                        "data's). A classifier of --init-from's file with other classes is re-initialised")
    g.add_argument("--freeze", type=_freeze, metavar="WHAT",
                   help="none (default), body (or features: every stage but the last) or upto:STAGE: "
                        "those stages are not trained and their batch norms stay in inference mode")
    g.add_argument("--body-lr-factor", type=float, metavar="F",
                   help="the body's learning rate is F times the head's (1; 0: the body does not move)")
    g.add_argument("--aux-init", choices=FT.AUX_INIT,
                   help="the aux heads of --init-from's file: keep (default; their classifiers "
                        "re-initialised if the classes differ), reinit (all their layers) or drop "
                        "(a network without aux heads)")
    return p


def zoo_start(path, spec):
    """The canonical weights of a zoo's ImageNet file or ``imagenet:SOURCE`` (``cli.zoo``), or
    ``None`` for one of this project's own files; a zoo's weights need its preset."""
    from common.net import pretrained as PT
    from . import zoo as Z
    found = Z.load(path)
    if found is None:
        return None
    src, weights, _ = found
    from common.net.family import ALIASES
    preset = spec.name.rstrip("*")
    if ALIASES.get(preset, preset) != src.preset:
        raise UserError(f"--init-from {path} holds {PT.TOKEN}{src.name}'s {src.preset} weights; train that "
                        f"network: add --preset {src.preset} (and --channels 3: the zoo's net sees RGB)")
    return weights


def read_start(path, spec, input_size=None, *, seed=0, aux="keep", aux_heads=None, allow_extra=False):
    """The weights to start a run from (``--init-from``): a file in any format read as
    :func:`read_weights` reads it, then its classifiers fitted to ``spec``'s classes
    (:func:`common.train.finetune.start_weights`: a :class:`~common.train.finetune.Start`).
    Raises ``WeightsMismatch`` if the body does not fit."""
    raw = zoo_start(path, spec)
    if raw is None:
        fmt = weight_format(path)
        native = get_backend(fmt).read_native if fmt else None
        raw = W.load_any(path, spec, input_size, native=native)
    return FT.start_weights(spec, raw, input_size, seed=seed, aux=aux, aux_heads=aux_heads,
                            allow_extra=allow_extra)


def add_checkpoint_args(p):
    """How often a run writes its checkpoint: ``--checkpoint-every N`` steps, on top of every epoch."""
    p.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="also write the checkpoint every N steps inside an epoch (atomically; --resume "
                        "continues such a checkpoint exactly where it stopped); default: after every "
                        "epoch only. With --resume: the run's own unless given")
    return p


def checkpoint_every(args, previous: dict = None):
    """``--checkpoint-every`` checked, or (resuming) the run's own; None: every epoch only."""
    n = args.checkpoint_every if args.checkpoint_every is not None else (previous or {}).get("checkpoint_every")
    if n is not None and n < 1:
        raise UserError(f"--checkpoint-every must be at least 1 step, not {n}")
    return n


def read_weights(path, spec, input_size=None, allow_extra=False):
    """The checked canonical weights of a file in any format (``.npz``, ``.pt``,
    ``.weights.h5``, ``.params``, ``.pdparams``), by :func:`common.net.weights.read` with the
    ``read_native`` of the backend whose format the suffix names (its framework is imported;
    no network is built).  Raises ``WeightsMismatch`` if the file does not fit the table,
    ``WeightsError`` if it cannot be read or is refused (it could run code)."""
    fmt = weight_format(path)
    native = get_backend(fmt).read_native if fmt else None
    return W.read(path, spec, input_size, native=native, allow_extra=allow_extra)


def add_backend_arg(p, fixed=None):
    if fixed is None:
        p.add_argument("--backend", help=f"mxnet, pytorch, tensorflow or paddle "
                                         f"(default: ${ENV_VAR}, else pytorch)")
    p.set_defaults(backend=fixed)
    return p


def get_backend(name=None):
    """The backend module (its framework imported); BackendError names the valid choices or
    the pip install to run."""
    from backends import get_backend as get
    return get(resolve(name))


def _sizes(text):
    try:
        sizes = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 80,96,112, not {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes like 80,96,112, not {text!r}")
    return sizes


def add_recipe_args(p, epochs_default=None):
    """The recipe's options, shared by train.py and compare.py (unset: the named recipe's,
    the book's by default)."""
    r = Recipe()
    g = p.add_argument_group("recipe (unset options: the named recipe's; common/train/train_config.py)")
    g.add_argument("--recipe", choices=list(RECIPES), help="a named recipe: book (default: the chapter's) "
                                                          "or fast (high accuracy in few epochs on a CPU)")
    g.add_argument("--epochs", "--num-epochs", dest="num_epochs", type=int, default=epochs_default,
                   help=f"epochs ({r.num_epochs}); with --resume, the new total")
    g.add_argument("--batch-size", type=int, help=f"examples per step ({r.batch_size})")
    g.add_argument("--lr", type=float, help=f"(peak) learning rate ({r.lr})")
    g.add_argument("--optimizer", choices=OPTIMIZERS, help=f"({r.optimizer})")
    g.add_argument("--momentum", type=float, help=f"SGD momentum ({r.momentum})")
    g.add_argument("--nesterov", action="store_true", default=None, help="Nesterov momentum")
    g.add_argument("--weight-decay", type=float, help="weight decay (coupled L2; decoupled for adamw)")
    g.add_argument("--label-smoothing", type=float, help="label smoothing of the training loss (0)")
    g.add_argument("--clip-norm", type=float, help="clip the gradients' global norm to this (0: off)")
    g.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule (constant)")
    g.add_argument("--warmup-epochs", type=float, help="linear warm-up, in epochs (0)")
    g.add_argument("--step-epochs", type=int, help="step schedule: decay every this many epochs (30)")
    g.add_argument("--gamma", type=float, help="step schedule: decay factor (0.1)")
    g.add_argument("--final-lr-factor", type=float, help="cosine schedule: final lr / lr (0)")
    g.add_argument("--crop-padding", type=int, help="random crop after padding this many pixels (0)")
    g.add_argument("--flip", action="store_true", default=None, help="random horizontal flips")
    g.add_argument("--no-flip", dest="flip", action="store_false")
    g.add_argument("--erase", type=float, help="probability of random erasing (0)")
    g.add_argument("--train-scales", type=_sizes, help="multi-scale training: sizes like 80,96,112")
    g.add_argument("--test-scales", type=_sizes, help="multi-scale testing: softmax averaged over sizes")
    g.add_argument("--scale-every", type=int, help="draw a new training size every N steps (1)")
    g.add_argument("--seed", type=int, help=f"initial weights, example order, augmentation ({r.seed})")
    g.add_argument("--resize", type=int, help=f"input size ({r.resize})")
    g.add_argument("--aux-weight", type=float, help=f"weight of each auxiliary loss ({r.aux_weight})")
    g.add_argument("--limit", type=int, help="use only the first N training examples (smoke runs)")
    g.add_argument("--amp", choices=AMP, help="mixed precision with the framework's own API: bf16 (CPU "
                                              "and GPU where the framework can) or fp16 (GPU only, with "
                                              "loss scaling); default float32 (docs/performance.md)")
    return p


#: recipe fields that define a run (all but the number of epochs, which --resume may extend)
DEFINING = tuple(f for f in Recipe.__dataclass_fields__ if f != "num_epochs")


def base_recipe(args):
    """(recipe, model defaults) of ``--recipe`` (the book's when not given)."""
    return named_recipe(getattr(args, "recipe", None) or "book")


def recipe_from(args, base: Recipe = None) -> Recipe:
    """The recipe: ``base`` (the named recipe's) with every option the user gave."""
    r = Recipe(**(base or base_recipe(args)[0]).to_dict())
    for name in DEFINING + ("num_epochs",):
        value = getattr(args, name, None)
        if value is not None:
            setattr(r, name, value)
    r.__post_init__()
    _check_recipe(r)
    return r


def _check_recipe(r: Recipe):
    for name in ("num_epochs", "batch_size", "resize", "scale_every"):
        if getattr(r, name) < 1:
            raise UserError(f"--{name.replace('_', '-').replace('num-', '')} must be at least 1, "
                            f"not {getattr(r, name)}")
    if not r.lr > 0:
        raise UserError(f"--lr must be positive, not {r.lr}")


# Over the complexity limit on purpose: one check per option that defines a run.
def run_changes(args, previous: dict) -> list:  # noqa: C901
    """The defining options given on ``--resume`` that differ from the run's: ``[(flag, given,
    the run's)]``."""
    changes = []
    recipe = Recipe(**previous.get("recipe", {})).to_dict()
    for name in DEFINING:
        given = getattr(args, name, None)
        if isinstance(given, tuple):
            given = list(given)
        if given is not None and given != recipe.get(name):
            changes.append((f"--{name.replace('_', '-')}", given, recipe.get(name)))
    if getattr(args, "recipe", None) and args.recipe != previous.get("recipe_name", "book"):
        changes.append(("--recipe", args.recipe, previous.get("recipe_name", "book")))
    model = previous.get("model", {})
    for name, flag in MODEL_FLAGS.items():
        given = getattr(args, name, None)
        if given is not None and given != model.get(name, "d2l" if name == "preset" else None):
            changes.append((flag, given, model.get(name)))
    if getattr(args, "limit", None) is not None and args.limit != previous.get("limit"):
        changes.append(("--limit", args.limit, previous.get("limit")))
    for name in ("init_from", "aux_init"):          # how the run started
        if getattr(args, name, None):
            changes.append((f"--{name.replace('_', '-')}", getattr(args, name), previous.get(name)))
    data = previous.get("data", {})
    for name, default in DATA_DEFINING.items():
        given = getattr(args, name, None)
        if name == "dataset" and given is not None:
            given = DS.resolve_name(given)
        if given is not None and given != data.get(name, default):
            changes.append((f"--{name.replace('_', '-')}", given, data.get(name, default)))
    return changes


def add_data_args(p, data_dir=True, sample=False):
    """The data options: which dataset, where, and how it is split and read (``sample``: the
    command trains, so it may fall back to the shipped Fashion-MNIST sample: ``--no-sample``)."""
    g = p.add_argument_group("data (docs/datasets.md)")
    if data_dir:
        g.add_argument("--data-dir", help=f"the dataset's folder (Fashion-MNIST: default ${D.ENV_DATA}, "
                                          f"else {D.default_dir()}, downloaded there if missing)")
    g.add_argument("--dataset", help="fashion-mnist (default), folder (DIR/train/<class>/*.png ..., "
                                     "DIR/test/<class>/...) or cifar10")
    g.add_argument("--val-fraction", type=float,
                   help="hold out this fraction of each class of the training images as the test "
                        "split (one folder tree; or, to choose settings, Fashion-MNIST / CIFAR-10)")
    g.add_argument("--split-seed", type=int, help="seed of --val-fraction's split (0)")
    g.add_argument("--channels", type=int, choices=(1, 3), help="convert every image to 1 or 3 "
                                                                 "channels (default: the data's)")
    g.add_argument("--strict", action="store_true", default=None,
                   help="stop at an unreadable image instead of skipping it")
    if sample:
        g.add_argument("--no-sample", dest="sample", action="store_false",
                       help="stop with an error when Fashion-MNIST is neither in its folder nor "
                            "downloadable, instead of training on the 1,000-picture sample shipped "
                            "with the package")
    return p


#: data options that define a run: attribute -> default
DATA_DEFINING = dict(dataset="fashion-mnist", val_fraction=None, split_seed=0, channels=None,
                     strict=False)


def data_options(args) -> dict:
    """The data options of a new run (what its record stores)."""
    out = {k: (getattr(args, k, None) if getattr(args, k, None) is not None else v)
           for k, v in DATA_DEFINING.items()}
    out["dataset"] = DS.resolve_name(out["dataset"])
    return out


def load_datasets(options: dict, data_dir, recipe, limit=None):
    """(the dataset at the recipe's size, {size: the dataset} for its other scales)."""
    ds = load_dataset(options, data_dir, recipe.resize, limit)
    return ds, {s: load_dataset(options, data_dir, s, limit) for s in recipe.sizes() if s != recipe.resize}


def load_dataset(options: dict, data_dir, size, limit=None):
    """The dataset of recorded data options (``data_options``); ``options["sample"]``: may fall
    back to the shipped Fashion-MNIST sample (training only; default not)."""
    return DS.load_dataset(options["dataset"], data_dir, size, channels=options.get("channels"),
                           val_fraction=options.get("val_fraction"), seed=options.get("split_seed") or 0,
                           strict=bool(options.get("strict")), limit=limit,
                           sample=bool(options.get("sample", False)))
