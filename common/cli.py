"""Command-line front ends shared by every script (``scripts/train*.py``, ``evaluate.py``).

One parser, one way to turn options into a network, a recipe and a run folder, so
the per-backend scripts are a line each.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

from . import data as D, oracle, weights as W
from .spec import SpecError, get_spec
from .switch import BackendError, ENV_VAR, resolve
from .train_config import OPTIMIZERS, Recipe


def add_model_args(p):
    g = p.add_argument_group("model (the table)")
    g.add_argument("--preset", default="d2l", help="d2l (default, the book's net), paper or bn")
    g.add_argument("--variant", dest="preset", help="alias of --preset")
    g.add_argument("--aux", dest="aux_logits", action="store_true", default=None,
                   help="add the two auxiliary heads (paper, bn: on by default)")
    g.add_argument("--no-aux", dest="aux_logits", action="store_false")
    g.add_argument("--norm", choices=("none", "bn", "lrn"), help="normalisation (preset's default)")
    g.add_argument("--branch3-kernel", type=int, choices=(3, 5))
    g.add_argument("--dropout", type=float, help="dropout before the classifier")
    return p


def model_options(args, in_channels=None, num_classes=None, input_size=None):
    opts = dict(aux_logits=args.aux_logits, norm=args.norm, branch3_kernel=args.branch3_kernel,
                dropout=args.dropout, in_channels=in_channels, num_classes=num_classes,
                input_size=input_size)
    return dict(preset=args.preset, **{k: v for k, v in opts.items() if v is not None})


def build_from_options(bk, model, seed=0):
    model = dict(model)
    return bk.build(model.pop("preset"), seed=seed, **model)


def add_backend_arg(p, fixed=None):
    if fixed is None:
        p.add_argument("--backend", help=f"mxnet, pytorch, tensorflow or paddle "
                                         f"(default: ${ENV_VAR}, else pytorch)")
    p.set_defaults(backend=fixed)
    return p


def get_backend_or_exit(name):
    from backends import get_backend
    try:
        return get_backend(name)
    except BackendError as e:
        sys.exit(f"error: {e}")


def add_recipe_args(p, epochs_default=None):
    """The recipe's options, shared by train.py and compare.py (defaults: the book's)."""
    r = Recipe()
    p.add_argument("--epochs", "--num-epochs", dest="num_epochs", type=int, default=epochs_default,
                   help=f"epochs ({r.num_epochs})")
    p.add_argument("--batch-size", type=int, default=r.batch_size)
    p.add_argument("--lr", type=float, default=r.lr)
    p.add_argument("--momentum", type=float, default=r.momentum)
    p.add_argument("--weight-decay", type=float, default=r.weight_decay)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=r.optimizer)
    p.add_argument("--seed", type=int, default=r.seed, help="initial weights and example order")
    p.add_argument("--resize", type=int, default=r.resize, help="input size (96)")
    p.add_argument("--limit", type=int, help="use only the first N training examples (smoke runs)")
    return p


def train_parser(fixed_backend=None):
    p = argparse.ArgumentParser(description="Train GoogLeNet on Fashion-MNIST (the book's recipe "
                                            "by default: 10 epochs, batch 128, SGD lr 0.1, 96x96).")
    add_backend_arg(p, fixed_backend)
    p.add_argument("--data-dir", help=f"Fashion-MNIST folder (default: ${D.ENV_DATA}, else "
                                      f"{D.default_dir()}; downloaded there if missing)")
    add_recipe_args(p)
    p.add_argument("--aux-weight", type=float, default=Recipe.aux_weight)
    p.add_argument("--run-dir", help="run folder (default: runs/<backend>-<preset>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--init-from", metavar="WEIGHTS", help="start from a weight file (.npz, any backend)")
    p.add_argument("--no-fast", dest="fast", action="store_false", help="disable the fast path")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    add_model_args(p)
    return p


def recipe_from(args) -> Recipe:
    return Recipe(num_epochs=args.num_epochs or Recipe.num_epochs, batch_size=args.batch_size, lr=args.lr,
                  momentum=args.momentum, weight_decay=args.weight_decay, optimizer=args.optimizer,
                  resize=args.resize, seed=args.seed, aux_weight=args.aux_weight)


def load_data(data_dir, resize, batch_size, seed, limit=None):
    train, test = D.load_fashion_mnist(data_dir, resize)
    if limit:
        train = D.Split(train.images[:limit], train.labels[:limit])
    return (D.Loader(train, batch_size, shuffle=True, seed=seed), D.Loader(test, batch_size))


def train_main(argv=None, fixed_backend=None):
    args = train_parser(fixed_backend).parse_args(argv)
    try:
        name = resolve(args.backend)
    except BackendError as e:
        sys.exit(f"error: {e}")
    from .loop import NonFiniteLoss, closing_lines, fit

    recipe = recipe_from(args)
    if args.resume:
        run_dir = args.resume
        try:
            with open(os.path.join(run_dir, "run.json")) as f:
                previous = json.load(f)
        except (OSError, ValueError) as e:
            sys.exit(f"error: --resume {run_dir}: not a run folder with a readable run.json ({e})")
        name, model = previous["backend"], previous["model"]
        recipe = Recipe(**previous["recipe"])
        if args.num_epochs is not None:        # --epochs extends (or sets) the resumed run
            recipe.num_epochs = args.num_epochs
        data_dir = previous.get("data_dir") if not args.data_dir else args.data_dir
        limit = previous.get("limit")
    else:
        model = model_options(args, in_channels=1, num_classes=10, input_size=args.resize)
        data_dir, limit = args.data_dir, args.limit
    try:
        m = dict(model)
        spec = get_spec(m.pop("preset"), **m)
        analysis = oracle.check_input(spec, recipe.resize)
    except SpecError as e:
        sys.exit(f"error: {e}")
    bk = get_backend_or_exit(name)
    try:
        train_iter, test_iter = load_data(data_dir, recipe.resize, recipe.batch_size, recipe.seed, limit)
    except D.DataError as e:
        sys.exit(f"error: {e}")
    net = build_from_options(bk, model, seed=recipe.seed)
    if args.init_from:
        try:
            bk.set_weights(net, W.load(args.init_from))
        except (W.WeightsError, FileNotFoundError) as e:
            sys.exit(f"error: --init-from {args.init_from}: {e}")
    run_dir = args.resume or args.run_dir or os.path.join(
        "runs", f"{name}-{model['preset']}-{time.strftime('%Y%m%d-%H%M%S')}")
    record = dict(backend=name, framework_version=bk.framework_version(), device=bk.device(),
                  model=model, params=bk.count_params(net), macs_per_example=analysis.macs,
                  data_dir=D.data_dir(data_dir), limit=limit, train_examples=len(train_iter.split),
                  test_examples=len(test_iter.split), fast=args.fast, init_from=args.init_from,
                  python=platform.python_version(), command=" ".join(sys.argv))
    print(f"{name} {bk.framework_version()} on {bk.device()}: {model['preset']} net, "
          f"{record['params']:,} parameters, {len(train_iter.split)} train / "
          f"{len(test_iter.split)} test examples at {recipe.resize}x{recipe.resize}; run folder {run_dir}")
    try:
        rec = fit(bk, net, train_iter, test_iter, recipe, run_dir, resume=bool(args.resume),
                  record=record, progress=args.progress, fast=args.fast)
    except NonFiniteLoss as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit(f"\ninterrupted; continue with: python scripts/train.py --resume {run_dir}")
    print(closing_lines(rec))
    print(f"run record {os.path.join(run_dir, 'run.json')}, curves {os.path.join(run_dir, 'curves.png')}, "
          f"checkpoint {os.path.join(run_dir, 'checkpoint')}")
    return rec
