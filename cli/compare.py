"""``scripts/compare.py``: the backends side by side, one command, one report.

Each backend trains in its own process (``scripts/train.py``) on the same data, in the
same example order, with the same hyperparameters and from the same initial weights (one
framework-neutral weight file, passed with ``--init-from``).  The process's wall time and
peak memory are written next to its run record (``process.json``).  The report
(``report.md``, plots, ``combined.json``) is written by :mod:`common.results.report`; see
docs/compare.md.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time

from common.results import report as R
from common.net import weights as W
from common.net.oracle import check_input
from backends.config import canonical, installed, is_installed, missing_message
from common.train.train_config import Recipe

from .errors import UserError, guard
from .main import command
from .options import (DEFINING, ArgumentParser, add_data_args, add_model_args, add_recipe_args,
                      base_recipe, data_options, load_datasets, model_options, recipe_from, spec_of)

#: options handed unchanged to every scripts/train.py
PASSED = ("recipe", "num_epochs") + DEFINING + ("limit", "data_dir", "dataset", "val_fraction",
                                                 "split_seed", "channels")
#: on/off options: attribute -> (flag when True, flag when False)
SWITCHES = dict(nesterov=("--nesterov", None), flip=("--flip", "--no-flip"), strict=("--strict", None),
                aux_logits=("--aux", "--no-aux"), sample=(None, "--no-sample"))


def parser():
    r = Recipe()
    p = ArgumentParser(description="Compare the backends side by side: one command, one report.")
    p.add_argument("--backends", help="comma-separated (default: every installed backend; "
                                      "with --from-runs: every backend found)")
    p.add_argument("--from-runs", metavar="DIR", help="aggregate the run records under DIR, train nothing")
    p.add_argument("--out", help="report folder (default: reports/compare-<time>)")
    p.add_argument("--seeds", type=int, default=1,
                   help="train every backend with N seeds (--seed, --seed + 1, ...) and report mean ± std "
                        "and whether the gap between frameworks exceeds the spread over seeds")
    p.add_argument("--target-acc", type=float, default=0.85, metavar="ACC",
                   help="report the epoch and training time at which each backend first reached this "
                        "test accuracy (0.85; 0 to leave it out)")
    add_data_args(p, sample=True)
    add_recipe_args(p, epochs_default=r.num_epochs)
    add_model_args(p)
    return p


def backend_list(text, default):
    return [canonical(b) for b in text.split(",") if b.strip()] if text else default


def write_init(recipe, model, path):
    """The one initial weight file every backend starts from: the recipe's Xavier init."""
    spec = spec_of(model)
    check_input(spec, recipe.resize)
    return W.save(path, W.xavier_init(spec, recipe.seed, recipe.resize), spec=spec.name,
                  input_size=recipe.resize, seed=recipe.seed)


def train_command(args, backend, run_dir, init):
    cmd = command("train") + ["--backend", backend, "--run-dir", run_dir] + (["--init-from", init] if init else [])
    for name in PASSED + ("preset", "norm", "branch3_kernel", "dropout"):
        value = getattr(args, name, None)
        if value is None or name in SWITCHES:
            continue
        value = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        cmd += ["--" + name.replace("_", "-"), value]
    for name, (on, off) in SWITCHES.items():
        value = getattr(args, name, None)
        if value is not None and (on if value else off):
            cmd.append(on if value else off)
    return cmd


def run_measured(cmd, run_dir):
    """Run ``cmd`` with its output in ``run_dir``; its exit code, wall time and peak memory."""
    out, err = os.path.join(run_dir, "stdout.log"), os.path.join(run_dir, "stderr.log")
    start = time.perf_counter()
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe)
        _, status, usage = os.wait4(proc.pid, 0)      # this child's own rusage
    proc.returncode = os.waitstatus_to_exitcode(status)
    kib = 1024 if sys.platform == "darwin" else 1      # ru_maxrss: bytes on macOS, KiB on Linux
    return dict(returncode=proc.returncode, wall_time=time.perf_counter() - start,
                peak_rss_mib=usage.ru_maxrss / kib / 1024, stdout_log=out, stderr_log=err,
                stderr_tail=R.tail(err))


def run_backend(args, backend, run_dir, init, sha256):
    """Train one backend in its own process; its entry (``process.json`` written next to run.json)."""
    if not is_installed(backend):
        return R.entry(backend, R.NOT_INSTALLED, detail=missing_message(backend))
    os.makedirs(run_dir, exist_ok=True)
    cmd = train_command(args, backend, run_dir, init)
    print(f"{backend}: training (log {os.path.join(run_dir, 'stderr.log')})", flush=True)
    process = dict(backend=backend, command=cmd, init_from=init, init_sha256=sha256,
                   **run_measured(cmd, run_dir))
    R.write_json(os.path.join(run_dir, R.PROCESS), process)
    e = R.load_run(run_dir)
    print(f"{backend}: {R.status_text(e)} in {process['wall_time']:.1f} s, "
          f"peak memory {process['peak_rss_mib']:.0f} MiB", flush=True)
    return e


@guard
def main(argv=None):
    args = parser().parse_args(argv)
    if not 0 <= args.target_acc <= 1:
        raise UserError(f"--target-acc must be between 0 and 1, not {args.target_acc}")
    out = args.out or os.path.join("reports", f"compare-{time.strftime('%Y%m%d-%H%M%S')}")
    init, notes, seeds = None, [], None
    if args.from_runs:
        entries, notes = R.find_runs(args.from_runs, backend_list(args.backends, None))
    else:
        backends = backend_list(args.backends, installed())
        recipe = recipe_from(args)
        ds, _ = load_datasets(dict(data_options(args), sample=args.sample), args.data_dir, recipe,
                              args.limit)                                             # cached once
        print(ds.summary())
        model = model_options(args, input_size=recipe.resize, defaults=base_recipe(args)[1],
                              **ds.model_options())
        if args.seeds < 1:
            raise UserError(f"--seeds must be at least 1, not {args.seeds}")
        by_seed = {}
        for seed in range(recipe.seed, recipe.seed + args.seeds):
            where = out if args.seeds == 1 else os.path.join(out, f"seed-{seed}")
            seeded = argparse.Namespace(**dict(vars(args), seed=seed))
            recipe.seed = seed
            path = write_init(recipe, model, os.path.abspath(os.path.join(where, "init-weights.npz")))
            init = init or path
            sha256 = hashlib.sha256(open(path, "rb").read()).hexdigest()
            if args.seeds > 1:
                print(f"seed {seed}:", flush=True)
            by_seed[seed] = [run_backend(seeded, b, os.path.abspath(os.path.join(where, "runs", b)), path,
                                         sha256) for b in backends]
        entries = by_seed[min(by_seed)]
        if args.seeds > 1:
            seeds = R.seed_summary(by_seed)
    command = " ".join(["scripts/compare.py"] + (sys.argv[1:] if argv is None else list(argv)))
    combined = R.combine(entries, notes, command=command, init=init)
    combined["seeds"] = seeds
    combined["target_acc"] = args.target_acc or None
    combined["logdir"] = args.from_runs or out            # every run folder under it holds its event files
    path = R.write_report(combined, out)
    print("\n".join(R.table(combined) + ["", R.gap_line(combined)] + [f"note: {n}" for n in notes]))
    if seeds:
        print("\n".join(R.seeds_markdown(seeds)[4:]))
    print(f"report {path}")
    print(f"TensorBoard, the runs overlaid: {R.tensorboard_command(combined['logdir'])}")
    return 0 if combined["succeeded"] else 1


