"""``scripts/train.py``: train GoogLeNet on Fashion-MNIST with any backend, or resume a run."""
from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time

from backends import launch
from common.net import oracle, weights as W
from common import runtime
from common.train.checkpoint import CheckpointError
from common.train.interrupt import Interrupted, StopRequest
from common.train.loop import closing_lines, fit
from common.train.runlock import RunLock
from backends.config import resolve
from common.train.train_config import Recipe

from . import nodes as N
from .errors import UserError, guard
from .main import command
from .options import (ArgumentParser, add_backend_arg, add_checkpoint_args, add_data_args, add_finetune_args,
                      add_model_args, add_recipe_args, add_weights_args, base_recipe, build_from_options,
                      checkpoint_every, data_options, get_backend, load_datasets, model_options, read_start,
                      recipe_from, run_changes, spec_of)
from . import finetune as FTC


def parser(fixed_backend=None):
    p = ArgumentParser(description="Train GoogLeNet on Fashion-MNIST (the book's recipe by default: "
                                   "10 epochs, batch 128, SGD lr 0.1, 96x96).")
    add_backend_arg(p, fixed_backend)
    add_data_args(p, sample=True)
    add_recipe_args(p)
    p.add_argument("--run-dir", help="run folder (default: runs/<backend>-<preset>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its last checkpoint (--epochs extends it)")
    p.add_argument("--init-from", "--weights", dest="init_from", metavar="WEIGHTS",
                   help="start from a weight file in any format (.npz, .pt, .weights.h5, .params, "
                        ".pdparams), a zoo's ImageNet file (torchvision .pth, Keras .h5, Paddle .pdparams, "
                        "Gluon .params) or imagenet:SOURCE, downloaded once (docs/pretrained.md); checked "
                        "against the model before training starts")
    add_weights_args(p)
    add_finetune_args(p)
    add_checkpoint_args(p)
    p.add_argument("--no-fast", dest="fast", action="store_false", help="disable the fast path")
    g = p.add_argument_group("several workers (docs/distributed.md)")
    g.add_argument("--nproc-per-node", "--nproc_per_node", dest="nproc_per_node", type=int, default=1,
                   help="train with N workers on this machine, on the backend's own distributed engine "
                        "(--batch-size stays the global batch)")
    g.add_argument("--dist-timeout", type=float, default=600.0,
                   help="seconds a worker waits for the others before the run ends (600)")
    N.add_node_args(g)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false",
                   help="write no TensorBoard event files into the run folder (written by default: "
                        "tensorboard --logdir runs)")
    p.add_argument("--log-histograms", type=int, metavar="N",
                   help="also log the weights' histograms to TensorBoard every N steps")
    add_model_args(p)
    return p


def read_run(run_dir) -> dict:
    """The run record of a run folder (a UserError if there is none)."""
    path = os.path.join(run_dir, "run.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"{run_dir} is not a run folder with a readable run.json ({e})") from None


def resumed(args, previous=None):
    """(backend, model options, recipe, data options, data dir, limit) of the run to resume
    (``previous``: its run record, read here if not given)."""
    previous = read_run(args.resume) if previous is None else previous
    changes = run_changes(args, previous)
    if changes:
        given = ", ".join(f"{flag} {value}" for flag, value, _ in changes)
        was = ", ".join(f"{flag} {old}" for flag, _, old in changes if old is not None)
        raise UserError(f"{given}: these options define the run and cannot change when it resumes"
                        + (f" (it was trained with {was})" if was else "") +
                        f". Drop them to continue {args.resume}, or start a new run; only --epochs "
                        f"(the new total) and --data-dir may be given with --resume.")
    if args.backend and resolve(args.backend) != previous["backend"]:
        raise UserError(f"{args.resume} was trained with {previous['backend']}, whose optimiser state "
                        f"only {previous['backend']} reads; resume it with --backend "
                        f"{previous['backend']}, or start a new run from its weights with --init-from "
                        f"{os.path.join(args.resume, 'checkpoint', 'weights.npz')}")
    recipe = recipe_from(args, Recipe(**previous["recipe"]))
    data = previous.get("data", {"dataset": "fashion-mnist"})
    return (previous["backend"], previous["model"], recipe, data, args.data_dir or previous.get("data_dir"),
            previous.get("limit"))


def plan_run(args, previous=None):
    """What to train, decided from the options (or ``previous``, the record of the run to
    resume) alone: no framework, no data.  Returns (backend, model options, recipe, data
    options, data dir, limit, recipe name)."""
    if args.resume:
        name, model, recipe, data, data_dir, limit = resumed(args, previous)
        return name, model, recipe, data, data_dir, limit, previous.get("recipe_name", "book")
    recipe = recipe_from(args)
    model = FTC.model_for(args, model_options(args, input_size=recipe.resize, defaults=base_recipe(args)[1]))
    return (resolve(args.backend), model, recipe, data_options(args), args.data_dir, args.limit,
            args.recipe or "book")


def check_sizes(model, recipe):
    """Refuse, before any data is read, an input too small for the table and scales that the
    table's weights cannot follow."""
    oracle.check_input(spec_of(model), recipe.resize)
    FTC.check_plan(model, recipe)
    shapes = oracle.param_shapes(spec_of(model), recipe.resize)
    for size in recipe.sizes():
        oracle.check_input(spec_of(dict(model, input_size=size)), size)
        if oracle.param_shapes(spec_of(dict(model, input_size=size)), size) != shapes:
            raise UserError(f"the {model['preset']} net's weights depend on its input size (a dense "
                            f"layer after a flatten, e.g. the aux heads), so it cannot run at {size} as "
                            f"well as {recipe.resize}; drop the scales or the aux heads (--no-aux)")


def without(argv, option):
    """``argv`` without ``option`` and its value (``--opt V`` or ``--opt=V``)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == option:
            skip = True
        elif not a.startswith(option + "="):
            out.append(a)
    return out


def launch_workers(args, argv, name, run_dir, fixed_backend, nodes=None):
    """``--nproc-per-node N``: N workers of this command on this machine, the backend's way
    (``nodes``: this machine's share of a run on several, cli/nodes.py)."""
    script = command("train", f"train_{fixed_backend}.py" if fixed_backend else None)
    worker_argv = script + N.worker_argv(argv, without)
    if not args.resume and not args.run_dir:
        worker_argv += ["--run-dir", run_dir]
    if not fixed_backend and not args.backend:
        worker_argv += ["--backend", name]
    resume = N.resume_command(args, train_command(), run_dir)
    if nodes is not None:
        print(f"{name}: {N.described(args)}: waiting for every node", flush=True)
    try:
        procs = launch.plan(name, worker_argv, args.nproc_per_node, launch.workdir(run_dir), nodes=nodes)
    except launch.LaunchError as e:       # the nodes did not meet: nothing ran
        raise UserError(str(e)) from None
    print(f"{name}: {N.described(args)}, each with {procs[-1].env['OMP_NUM_THREADS']} thread(s); "
          f"run folder {run_dir}", flush=True)
    try:
        launch.run(procs)
    except launch.LaunchError as e:
        raise UserError(f"{e}. Nothing already checkpointed is lost; continue with: {resume}") from None
    except KeyboardInterrupt as e:        # Ctrl-C or SIGTERM: the workers checkpointed and stopped
        print(f"\n{interruption(e)}; the workers wrote a checkpoint where they stopped; continue "
              f"with: {resume}", file=sys.stderr)
        return getattr(e, "exit_code", 130)
    return 0


def interruption(e: KeyboardInterrupt) -> str:
    """``stopped by SIGTERM`` (or ``interrupted``, a plain KeyboardInterrupt)."""
    return f"stopped by {e.signal_name}" if isinstance(e, Interrupted) else "interrupted"


def check_run_dir(run_dir, option):
    """A run folder that is a file is refused before anything is read or written."""
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise UserError(f"{option} {run_dir} is a file, not a folder: a run folder holds run.json and "
                        f"the checkpoints" + ("; give a folder (it is created if missing)"
                                              if option == "--run-dir" else ""))


@guard
def main(argv=None, fixed_backend=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser(fixed_backend).parse_args(argv)
    stop = StopRequest()                 # SIGTERM and Ctrl-C: a checkpoint, then the resume command
    try:
        with stop.installed():
            return train(args, argv, fixed_backend, stop)
    except KeyboardInterrupt as e:       # before or after the training loop: nothing to save there
        print(f"\n{interruption(e)}; nothing was being trained, nothing was lost", file=sys.stderr)
        return getattr(e, "exit_code", 130)


def train(args, argv, fixed_backend, stop):
    if args.nproc_per_node < 1:
        raise UserError(f"--nproc-per-node must be at least 1, not {args.nproc_per_node}")
    N.restarted(args)                     # torchrun restarted this worker: --run-dir R is --resume R
    nodes = N.nodes_of(args)
    if args.log_histograms is not None and args.log_histograms < 1:
        raise UserError(f"--log-histograms must be at least 1 step, not {args.log_histograms}")
    if args.resume:
        check_run_dir(args.resume, "--resume")
    previous = read_run(args.resume) if args.resume else None     # the run record, read once
    name, model, recipe, data, data_dir, limit, recipe_name = plan_run(args, previous)
    every = checkpoint_every(args, previous)
    check_sizes(model, recipe)                                  # before the data: fails fast
    if recipe.amp:                        # can the framework do it here? (before the data too)
        get_backend(name).Trainer.check_amp(recipe.amp)
    def stamp(t=None):
        return os.path.join("runs", f"{name}-{model['preset']}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(t))}")
    run_dir = args.resume or args.run_dir or stamp()
    check_run_dir(run_dir, "--run-dir")
    worker = bool(os.environ.get(launch.WORKER))              # started by our launcher, which holds the lock
    if N.launched_here(args) and not worker:      # node 0's launcher holds the lock of a run on several
        with RunLock(run_dir) if args.node_rank == 0 else contextlib.nullcontext():
            return launch_workers(args, argv, name, run_dir, fixed_backend, nodes)
    ds, at_sizes = load_datasets(dict(data, sample=args.sample), data_dir, recipe, limit)
    if previous and list(ds.classes) != previous.get("dataset", {}).get("classes", list(ds.classes)):
        raise UserError(f"the classes in {ds.info.get('dir')} are not those {args.resume} was trained on")
    model.update(ds.model_options())                          # the model follows the data
    FTC.check_classes(args, model, ds)
    analysis = oracle.check_input(spec_of(model), recipe.resize)
    bk = get_backend(name)
    world = bk.distribute.init(args.dist_timeout)             # first: TensorFlow needs it so
    say = print if world.main else (lambda *a, **k: None)
    if world.distributed and not (args.resume or args.run_dir):   # started by torchrun ...: rank 0 names the run
        run_dir = stamp(float(world.sum([time.time() if world.main else 0.0])))
    with contextlib.ExitStack() as held:
        held.callback(world.close)
        rec = train_in(args, bk, world, say, name, model, recipe, data, ds, at_sizes, analysis, limit,
                       recipe_name, run_dir, every, stop, worker, held)
    if isinstance(rec, int):
        return rec
    say(closing_lines(rec))
    say(f"run record {os.path.join(run_dir, 'run.json')}, curves {os.path.join(run_dir, 'curves.png')}, "
        f"checkpoint {os.path.join(run_dir, 'checkpoint')}")
    return 0


def train_command() -> str:
    """How the user started training, for the command that resumes: ``googlenet train`` where
    the installed command ran, else the book-style script."""
    argv0 = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "googlenet train" if argv0.startswith("googlenet") else "python scripts/train.py"


def bf16_advice(flags=None):
    """What bf16 does on this CPU: its own bf16 arithmetic, or emulation (docs/performance.md)."""
    hw = runtime.bf16_hardware(flags)
    if hw:
        return (f"bf16: this CPU has {hw} arithmetic, which the frameworks' oneDNN kernels use "
                f"(speed measured in docs/performance.md)")
    return ("warning: this CPU lists neither avx512_bf16 nor amx_bf16, so bf16 is emulated (converted "
            f"to float32 and back): expect it to train {BF16_EMULATED_SLOWDOWN} slower than float32 here "
            "(measured on an AVX2-only AMD EPYC; docs/performance.md). Use it to check the numbers; for "
            "speed train in float32")


#: bf16 against float32 training time where the CPU has no bf16 arithmetic: measured on an
#: AVX2-only AMD EPYC (2026-11-24, docs/performance.md): PyTorch 8.6x and 9.6x, TensorFlow
#: 8.1x and 15.7x, the book's net at batch 32, 96x96
BF16_EMULATED_SLOWDOWN = "8 to 16 times"


def train_in(args, bk, world, say, name, model, recipe, data, ds, at_sizes, analysis, limit, recipe_name,
             run_dir, every, stop, worker, held):
    """Build the network and train it in ``run_dir``, locked in ``held`` (an ExitStack) just
    before the first file is written; the run record, or an exit code."""
    train_iter, test_iter = ds.recipe_loaders(recipe, at_sizes)
    start = None
    if args.init_from:                    # read and checked in full before a network is built
        try:
            start = read_start(args.init_from, spec_of(model), recipe.resize, seed=recipe.seed,
                               aux=args.aux_init or "keep", aux_heads=FTC.file_aux_heads(model),
                               allow_extra=args.drop_extra)
        except W.WeightsMismatch as e:
            raise UserError(f"--init-from {args.init_from} does not fit the {model['preset']} "
                            f"network: {e}{FTC.hint(e, model)}") from None
    net = build_from_options(bk, model, seed=recipe.seed, weights=start and start.weights, world=world)
    record = dict(backend=name, framework_version=bk.framework_version(), device=bk.device(),
                  cpu=runtime.cpu_summary(), recipe_name=recipe_name,
                  model=model, params=bk.count_params(net), macs_per_example=analysis.macs,
                  data=data, dataset=ds.describe(), data_dir=ds.info.get("dir"), limit=limit,
                  train_examples=len(train_iter.split),
                  test_examples=len(test_iter.split), fast=args.fast, init_from=args.init_from,
                  **FTC.record_of(args, start),
                  python=platform.python_version(), command=" ".join(sys.argv))
    say(ds.summary())
    say(f"{name} {bk.framework_version()} on {bk.device()}: {model['preset']} net, "
        f"{record['params']:,} parameters, {len(train_iter.split)} train / "
        f"{len(test_iter.split)} test examples at {recipe.resize}x{recipe.resize}; run folder {run_dir}"
        + (f"; worker 0 of {world.size} ({world.engine})" if world.distributed else "")
        + (f"; {recipe.amp} mixed precision" if recipe.amp else ""))
    if recipe.amp == "bf16" and bk.device().startswith("cpu"):
        say(bf16_advice())
    for line in FTC.lines(args, start, net.spec, recipe):
        say(line)
    resume_hint = f"continue with: {train_command()} --resume {run_dir}"
    if world.main and not worker:         # one process per run folder (rank 0 of torchrun's workers)
        held.enter_context(RunLock(run_dir))
    try:
        return fit(bk, net, train_iter, test_iter, recipe, run_dir, resume=bool(args.resume),
                   record=record, progress=args.progress, fast=args.fast, world=world,
                   checkpoint_every=every, stop=stop, tensorboard=args.tensorboard,
                   log_histograms=args.log_histograms)
    except KeyboardInterrupt as e:
        where = getattr(e, "checkpoint", None)
        saved = (f" at {e.where}; checkpoint {where} written" if where else
                 "; the checkpoints already written are intact")
        # under our launcher, the launcher prints the command to resume (with --nproc-per-node)
        say(f"\n{interruption(e)}{saved}" + ("" if worker else f"; {resume_hint}"), file=sys.stderr)
        return getattr(e, "exit_code", 130)
    except CheckpointError as e:
        raise CheckpointError(f"{e} The checkpoints already written are intact; {resume_hint}") from None
