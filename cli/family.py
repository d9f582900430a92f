"""``scripts/family.py``: the family's members trained on one backend with one recipe, compared.

The chapter's first exercise says: implement GoogLeNet's successors, *run them, then observe
the results*.  This trains each member (``--presets``; default: one of each architecture) in
its own process (``scripts/train.py``), on the same data with the same recipe and budget, at
the smallest input each takes from ``--resize`` up (the Inception v3, v4 and ResNet members
need 75x75; BN-Inception refuses sizes where its stride-2 branches misalign), and writes a
report: parameters, multiply-adds per example at that size, examples per second, test
accuracy, and the epoch and training time at which each first reached ``--target-acc``;
``family.json`` (the numbers) and ``family-acc-vs-macs.png`` (accuracy against multiply-adds).

    python scripts/family.py --backend tensorflow --recipe fast --epochs 2 \\
        --data-dir ../shared/data/fashion-mnist-subset --out reports/family
    python scripts/family.py --from-runs reports/family          # the report again, no training
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time

from common.net import oracle
from common.net.family import PRESETS
from common.results import report as R

from .compare import run_measured, train_command
from .errors import UserError, guard
from .options import ArgumentParser, add_data_args, add_recipe_args, get_backend
from backends.config import resolve

#: one member of each architecture, in the order of the line
DEFAULT = ("d2l", "bn", "tv_googlenet", "bn_inception", "keras_inception_v3", "inception_v4",
           "keras_inception_resnet_v2")
FIGURE = "family-acc-vs-macs.png"


def training_size(preset, at_least):
    """The smallest square input from ``at_least`` up that the member takes without aux heads."""
    spec = dataclasses.replace(PRESETS[preset].builder(preset, in_channels=1, num_classes=10), aux=())
    found = oracle.fitting_sizes(spec, range(at_least, at_least + 256), 1)
    if found:
        return found[0]
    raise UserError(f"no input from {at_least} to {at_least + 255} fits {preset!r}")


def parser():
    p = ArgumentParser(description="Train the family's members on one backend with one recipe and "
                                   "compare them (the chapter's exercise 1).")
    p.add_argument("--backend", help="the backend every member trains on (default: $GOOGLENET_BACKEND)")
    p.add_argument("--presets", help=f"comma-separated members (default: {','.join(DEFAULT)})")
    p.add_argument("--out", help="report folder (default: reports/family-<time>)")
    p.add_argument("--from-runs", metavar="DIR", help="report the runs under DIR, train nothing")
    p.add_argument("--target-acc", type=float, default=0.85, metavar="ACC",
                   help="the test accuracy whose first epoch and training time are reported (0.85)")
    add_data_args(p)
    add_recipe_args(p)
    return p


def run_member(args, backend, preset, out):
    run_dir = os.path.join(out, preset)
    os.makedirs(run_dir, exist_ok=True)
    size = training_size(preset, args.resize or 64)
    member = argparse.Namespace(**dict(vars(args), preset=preset, resize=size, norm=None, branch3_kernel=None,
                                       dropout=None, aux_logits=False if PRESETS[preset].defaults.get(
                                           "aux_logits") else None))
    cmd = train_command(member, backend, run_dir, None)
    print(f"{preset}: training at {size}x{size} (log {os.path.join(run_dir, 'stderr.log')})", flush=True)
    process = dict(backend=backend, preset=preset, command=cmd, **run_measured(cmd, run_dir))
    R.write_json(os.path.join(run_dir, R.PROCESS), process)
    print(f"{preset}: exit {process['returncode']} in {process['wall_time']:.0f} s", flush=True)


def rows(root, target):
    """One row per member run found under ``root`` (a folder per member holding run.json)."""
    out = []
    for name in sorted(os.listdir(root)):
        rec = R.read_json(os.path.join(root, name, "run.json"))
        if not rec or not rec.get("history"):
            continue
        reached = R.time_to(rec["history"], target) if target else None
        out.append(dict(preset=rec["model"]["preset"], backend=rec["backend"], size=rec["recipe"]["resize"],
                        params=rec["params"], macs=rec["macs_per_example"], epochs=rec["epochs_done"],
                        examples_per_sec=rec.get("examples_per_sec_compute"), test_acc=rec["test_acc"],
                        train_time=rec["train_time"], reached=reached, cpu=rec.get("cpu")))
    order = {p: i for i, p in enumerate(list(DEFAULT) + [p for p in PRESETS if p not in DEFAULT])}
    return sorted(out, key=lambda r: (order.get(r["preset"], 99), r["preset"]))


def markdown(table, target) -> str:
    lines = [f"| member | input | parameters | mult-adds / example | examples/s | test acc | "
             f"epoch, training time to {target:.2f} |", "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in table:
        reached = (f"epoch {r['reached']['epoch']}, {r['reached']['seconds']:.0f} s" if r["reached"]
                   else f"not in {r['epochs']} epochs")
        lines.append(f"| `{r['preset']}` | {r['size']} | {r['params']:,} | {r['macs'] / 1e6:,.0f} M | "
                     f"{R.fmt(r['examples_per_sec'], '{:.1f}')} | {r['test_acc']:.4f} | {reached} |")
    cpus = sorted({r["cpu"] for r in table if r.get("cpu")})
    return "\n".join(lines + ["", "CPU: " + ("; ".join(cpus) if cpus else "not recorded")])


def figure(table, path):
    """Test accuracy against multiply-adds per example, one labelled point per member."""
    from common.results.plots import _pyplot
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, r in enumerate(table):
        ax.scatter(r["macs"] / 1e6, r["test_acc"], s=20 + r["params"] / 1e6 * 3, alpha=0.7)
        ax.annotate(r["preset"], (r["macs"] / 1e6, r["test_acc"]), fontsize=7,
                    xytext=(4, 3 if i % 2 else -10), textcoords="offset points")
    ax.set_xscale("log")
    from matplotlib.ticker import NullFormatter, ScalarFormatter
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks([100, 150, 200, 300, 450])
    ax.set_xlabel("multiply-adds per example (M, at the size each trained at; log scale)")
    ax.set_ylabel("test accuracy")
    ax.grid(True, alpha=0.3)
    ax.set_title("the family on Fashion-MNIST (area: parameters)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@guard
def main(argv=None):
    args = parser().parse_args(argv)
    if not 0 <= args.target_acc <= 1:
        raise UserError(f"--target-acc must be between 0 and 1, not {args.target_acc}")
    out = args.from_runs or args.out or os.path.join("reports", f"family-{time.strftime('%Y%m%d-%H%M%S')}")
    if not args.from_runs:
        backend = resolve(args.backend)
        get_backend(backend)                         # installed, or one clear error line
        presets = [p.strip() for p in args.presets.split(",")] if args.presets else list(DEFAULT)
        unknown = [p for p in presets if p not in PRESETS]
        if unknown:
            raise UserError(f"unknown member(s) {unknown}; choose from {sorted(PRESETS)}")
        for preset in presets:
            run_member(args, backend, preset, out)
    if not os.path.isdir(out):
        raise UserError(f"{out} is not a folder of member runs")
    table = rows(out, args.target_acc)
    if not table:
        raise UserError(f"no finished member run (run.json with a history) under {out}")
    R.write_json(os.path.join(out, "family.json"), dict(target_acc=args.target_acc, members=table))
    text = markdown(table, args.target_acc)
    with open(os.path.join(out, "family.md"), "w") as f:
        f.write(text + "\n")
    figure(table, os.path.join(out, FIGURE))
    print(text)
    print(f"report: {os.path.join(out, 'family.md')}, {os.path.join(out, FIGURE)}")
    return 0
