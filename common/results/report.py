"""Side-by-side comparison of backends: run records in, one report folder out.

Framework-free.  An *entry* is one backend's line of the comparison::

    dict(backend=..., status=..., run_dir=..., record=<run.json or None>,
         process=<process.json or None>, detail=<why it failed, or None>)

``record`` is the run record written by :func:`common.train.loop.fit`; ``process`` is what
``scripts/compare.py`` measured around the training subprocess (written next to the
run record as ``process.json``: exit code, wall time, peak memory, initial weights).
:func:`combine` turns entries into one structure; :func:`write_report` writes
``report.md``, ``curves.png``, ``throughput.png`` and ``combined.json`` from it.
The report prints the records' numbers, only formatted (see :data:`COLUMNS`).
"""
from __future__ import annotations

import glob
import itertools
import json
import os
import shlex
import time
from typing import Iterable, List, Optional

from . import plots
from ..train.train_config import Recipe

RUN = "run.json"
PROCESS = "process.json"
OK, FAILED, NOT_INSTALLED, MISSING = "ok", "failed", "not installed", "no run record"

WHY = (
    "All backends read the same examples in the same order, with the same hyperparameters, "
    "from the same initial weights, so the differences that remain come from how each "
    "framework computes, not from what it computes: "
    "(1) float32 summation order: convolutions and matrix products are reduced in a "
    "kernel-specific order (oneDNN, Eigen, MKL; cuDNN picks among algorithms), so results "
    "differ in the last bits from the first step on, and training, being chaotic, amplifies "
    "those bits into visibly different curves; "
    "(2) framework-specific details of batch norm and of the optimiser: the constants are "
    "shared (eps, momentum, unbiased running variance, coupled weight decay) but fused "
    "kernels and the order of the update's operations differ (MXNet, for example, sums the "
    "per-example losses and rescales the gradient by 1/batch where the others average in the "
    "loss), which again changes rounding only; dropout masks, where the preset has dropout, "
    "come from each framework's own random generator; "
    "(3) on a GPU, nondeterministic kernels (atomic additions in backward convolutions, "
    "autotuned algorithm choice) make even two runs of one backend differ. "
    "Differences of a few tenths of a point after short training, on a small test set, are "
    "within this noise; compare them with the spread of one backend over several seeds.")

#: (heading, how to read the value from an entry, format)
COLUMNS = (
    ("backend", lambda e: e["backend"], "{}"),
    ("framework", lambda e: _rec(e, "framework_version"), "{}"),
    ("device", lambda e: _rec(e, "device"), "{}"),
    ("parameters", lambda e: _rec(e, "params"), "{:,}"),
    ("mult-adds / example", lambda e: _rec(e, "macs_per_example"), "{:,}"),
    ("train loss", lambda e: _rec(e, "train_loss"), "{:.4f}"),
    ("train acc", lambda e: _rec(e, "train_acc"), "{:.4f}"),
    ("test acc", lambda e: _rec(e, "test_acc"), "{:.4f}"),
    ("examples/s compute", lambda e: _rec(e, "examples_per_sec_compute"), "{:.1f}"),
    ("examples/s end-to-end", lambda e: _rec(e, "examples_per_sec_end_to_end"), "{:.1f}"),
    ("peak memory (MiB)", lambda e: _proc(e, "peak_rss_mib"), "{:.1f}"),
    ("wall time (s)", lambda e: _proc(e, "wall_time"), "{:.1f}"),
    ("status", lambda e: status_text(e), "{}"),
)
#: recipe and data fields that must agree for a fair comparison
SAME = ("recipe", "model", "data", "data_dir", "limit", "train_examples", "test_examples")


def _rec(e, key):
    return (e.get("record") or {}).get(key)


def _proc(e, key):
    return (e.get("process") or {}).get(key)


def fmt(value, spec="{}") -> str:
    """A cell: the value formatted, or an em dash where there is none."""
    return "—" if value is None else spec.format(value)


def has_numbers(e) -> bool:
    """The entry has a run record with a final test accuracy (it succeeded)."""
    return e["status"] == OK and _rec(e, "test_acc") is not None


def status_text(e) -> str:
    rec, code = e.get("record"), _proc(e, "returncode")
    if e["status"] == FAILED and code is not None:
        return f"failed (exit {code})"
    if e["status"] == OK and rec and not rec.get("complete", True):
        return f"ok, incomplete ({rec['epochs_done']}/{rec['recipe']['num_epochs']} epochs)"
    return e["status"]


def read_json(path) -> Optional[dict]:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
    return path


def tail(path, n=20) -> str:
    """The last ``n`` lines of a text file ('' if it does not exist)."""
    if not path or not os.path.exists(path):
        return ""
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-n:])


def entry(backend, status, run_dir=None, record=None, process=None, detail=None) -> dict:
    return dict(backend=backend, status=status, run_dir=run_dir, record=record, process=process,
                detail=detail)


def load_run(run_dir) -> dict:
    """The entry of a finished run folder: its run record and, if any, ``process.json``."""
    record, process = read_json(os.path.join(run_dir, RUN)), read_json(os.path.join(run_dir, PROCESS))
    backend = (record or {}).get("backend") or (process or {}).get("backend")
    ok = record is not None and (process is None or process.get("returncode") == 0)
    detail = None if ok else (process or {}).get("stderr_tail") or f"no {RUN} in {run_dir}"
    return entry(backend, OK if ok else FAILED, run_dir, record, process, detail)


def find_runs(root, backends: Optional[Iterable[str]] = None):
    """Entries for the run records under ``root`` (any depth), newest per backend by mtime.

    Returns ``(entries, notes)``: one entry per backend found (in ``backends`` order when
    given, a ``no run record`` entry for each one not found) and a note for every backend
    with several runs, naming the one taken.
    """
    paths = sorted(glob.glob(os.path.join(root, "**", RUN), recursive=True),
                   key=os.path.getmtime, reverse=True)
    by_backend = {}
    for path in paths:
        with open(path) as f:
            by_backend.setdefault(json.load(f).get("backend"), []).append(os.path.dirname(path))
    wanted = list(backends) if backends else sorted(b for b in by_backend if b)
    entries, notes = [], []
    for b in wanted:
        runs = by_backend.get(b, [])
        if not runs:
            entries.append(entry(b, MISSING, detail=f"no {RUN} of {b} under {root}"))
            continue
        if len(runs) > 1:
            notes.append(f"{b}: {len(runs)} run records under {root}; using the newest, {runs[0]}")
        entries.append(load_run(runs[0]))
    return entries, notes


def largest_gap(entries) -> Optional[dict]:
    """The pair of successful backends furthest apart in test accuracy (None if fewer than two)."""
    done = [e for e in entries if has_numbers(e)]
    if len(done) < 2:
        return None
    a, b = max(itertools.combinations(done, 2),
               key=lambda p: abs(p[0]["record"]["test_acc"] - p[1]["record"]["test_acc"]))
    hi, lo = sorted((a, b), key=lambda e: -e["record"]["test_acc"])
    acc = (hi["record"]["test_acc"], lo["record"]["test_acc"])
    return dict(pair=[hi["backend"], lo["backend"]], test_acc=list(acc),
                points=100 * (acc[0] - acc[1]))


def init_from(e) -> Optional[str]:
    """The initial weight file of a run: ``process.json``'s, else ``--init-from`` in its command."""
    if _proc(e, "init_from"):
        return _proc(e, "init_from")
    args = shlex.split(_rec(e, "command") or "")
    return next((v for k, v in zip(args, args[1:]) if k == "--init-from"), None)


def initial_weights(e) -> str:
    """What a run started from: its initial weight file, else the recipe's initialisation
    with the run's seed (``common.net.weights.xavier_init``: the same arrays on every backend)."""
    seed = (_rec(e, "recipe") or {}).get("seed", 0)
    return init_from(e) or f"the recipe's Xavier-uniform initialisation, seed {seed}"


def differences(entries) -> List[str]:
    """What differs between the successful runs among the things that should not."""
    done = [e for e in entries if has_numbers(e)]
    lines = []
    for key in SAME:
        values = {e["backend"]: e["record"].get(key) for e in done}
        if key == "recipe":               # a field newer than a record had its default then
            values = {b: v if v is None else dict(Recipe().to_dict(), **v) for b, v in values.items()}
        if len({json.dumps(v, sort_keys=True) for v in values.values()}) > 1:
            lines.append(f"{key} differs: " + "; ".join(f"{b} {v}" for b, v in values.items()))
    inits = {e["backend"]: initial_weights(e) for e in done}
    if len(set(inits.values())) > 1:
        lines.append("initial weights differ: " + "; ".join(f"{b} {v}" for b, v in inits.items()))
    return lines


def combine(entries, notes=(), command=None, init=None) -> dict:
    """Everything the report shows, as one JSON-ready structure."""
    done = [e for e in entries if has_numbers(e)]
    return dict(created=time.strftime("%Y-%m-%d %H:%M:%S"), command=command, init_weights=init,
                recipe=done[0]["record"].get("recipe") if done else None,
                model=done[0]["record"].get("model") if done else None,
                backends=list(entries), succeeded=[e["backend"] for e in done],
                largest_gap=largest_gap(entries), differences=differences(entries), notes=list(notes),
                columns=[c[0] for c in COLUMNS])


def table(combined) -> List[str]:
    """The results as a Markdown table, one row per backend."""
    rows = [[fmt(get(e), spec) for _, get, spec in COLUMNS] for e in combined["backends"]]
    head = [c[0] for c in COLUMNS]
    align = ["---" if c in ("backend", "framework", "device", "status") else "---:" for c in head]
    return ["| " + " | ".join(r) + " |" for r in [head, align] + rows]


def gap_line(combined) -> str:
    g = combined["largest_gap"]
    if g is None:
        return "Largest gap in test accuracy: needs at least two successful backends."
    return (f"Largest pairwise gap in test accuracy: {g['points']:.2f} points, "
            f"{g['pair'][0]} ({g['test_acc'][0]:.4f}) vs {g['pair'][1]} ({g['test_acc'][1]:.4f}).")


def _settings(combined) -> List[str]:
    r, m = combined["recipe"], combined["model"]
    if not r:
        return []
    lines = [f"- model: {json.dumps(m)}",
             f"- recipe: epochs {r['num_epochs']}, batch {r['batch_size']}, {r['optimizer']} "
             f"lr {r['lr']} momentum {r['momentum']} weight decay {r['weight_decay']}, "
             f"input {r['resize']}x{r['resize']}, seed {r['seed']}"
             + (f", {r['amp']} mixed precision" if r.get("amp") else "")]
    done = [e for e in combined["backends"] if has_numbers(e)]
    rec = done[0]["record"]
    lines.append(f"- data: {rec.get('data_dir')}, {rec.get('train_examples')} train / "
                 f"{rec.get('test_examples')} test examples")
    first = combined["init_weights"] or initial_weights(done[0])
    same = len({initial_weights(e) for e in done}) == 1        # else differences() notes them
    lines.append(f"- initial weights: {first}" + (" (the same arrays on every backend)" if same else ""))
    cpus = sorted({e["record"].get("cpu") or "not recorded (runs before 2026-12-04)" for e in done})
    lines.append("- CPU and its instruction-set flags: " + " | ".join(cpus))     # speed depends on them
    return lines


def time_to(history, target) -> Optional[dict]:
    """The first epoch whose test accuracy reaches ``target``, with the training time spent
    until then (the sum of the epochs' ``train_time``: steps and data, not evaluation)."""
    spent = 0.0
    for h in history:
        spent += h.get("train_time", 0.0)
        if h.get("test_acc") is not None and h["test_acc"] >= target:
            return dict(epoch=h["epoch"], seconds=spent)
    return None


def epochs_markdown(combined, target=None) -> List[str]:
    """Test accuracy after every epoch, one column per backend; with ``target``, the epoch
    and the training time at which each backend first reached it."""
    done = _done(combined)
    if not done:
        return []
    hist = {b: e["record"].get("history") or [] for b, e in done.items()}
    n = max(len(h) for h in hist.values())
    lines = ["## Test accuracy per epoch", "", "| epoch | " + " | ".join(done) + " |",
             "| ---: |" + " ---: |" * len(done)]
    for i in range(n):
        cells = [fmt(h[i]["test_acc"] if i < len(h) else None, "{:.4f}") for h in hist.values()]
        lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    if target:
        reach = {b: time_to(h, target) for b, h in hist.items()}
        cells = [f"epoch {r['epoch']}, {r['seconds']:.0f} s" if r else "not reached" for r in reach.values()]
        lines += [f"| first ≥ {target:g} | " + " | ".join(cells) + " |", "",
                  f"Time to {target:g}: the training time (steps and data, not evaluation) summed over "
                  f"the epochs up to the first whose test accuracy reached {target:g}; it depends on the "
                  f"machine's load (see the throughput columns)."]
    return lines + [""]


def tensorboard_command(logdir) -> str:
    """The command that shows every run under ``logdir`` in one TensorBoard (each run folder
    holds its own event files, so the runs are named by their folders: ``runs/<backend>``)."""
    return f"tensorboard --logdir {shlex.quote(str(logdir))} --host 127.0.0.1"


def tensorboard_markdown(combined) -> List[str]:
    if not combined.get("logdir"):
        return []
    return ["## In TensorBoard", "",
            "Every run folder holds its TensorBoard event files (per step: `step/train_loss`, `step/lr`, "
            "`step/examples_per_sec`; per epoch: `epoch/train_loss`, `epoch/train_acc`, `epoch/test_loss`, "
            "`epoch/test_acc`; the settings as text and hparams), so one command overlays the backends, "
            "each run named by its folder:", "", "```", tensorboard_command(combined["logdir"]), "```",
            "", "then open <http://127.0.0.1:6006> (docs/compare.md).", ""]


def markdown(combined) -> str:
    """The text of report.md."""
    out = ["# GoogLeNet on four frameworks: side by side", "",
           f"Created {combined['created']}" + (f" by `{combined['command']}`" if combined["command"] else "")
           + ".", ""]
    out += _settings(combined) + ["", "## Results", ""] + table(combined) + ["", gap_line(combined), ""]
    out += [f"- Note: {n}" for n in combined["notes"] + combined["differences"]]
    out += [""] + epochs_markdown(combined, combined.get("target_acc"))
    devices = {_rec(e, "device") for e in combined["backends"] if has_numbers(e)}
    gpu = "" if devices - {"cpu"} else " (All runs here are on the CPU, so (3) does not apply.)"
    out += ["", "## Why they differ", "", WHY + gpu, "",
            "## Curves and throughput", "", "![per-step training loss](steps.png)", "",
            "![per-epoch curves](curves.png)", "",
            "![throughput](throughput.png)", "",
            "Compute-only examples/s count only the time inside `train_step` (forward, backward, "
            "update); end-to-end examples/s divide by the whole training part of each epoch, data "
            "preparation and host-to-device copies included. Peak memory is the training "
            "process's maximum resident set size (host memory); wall time is the whole process, "
            "start-up and evaluation included. See docs/compare.md.", ""]
    out += tensorboard_markdown(combined)
    if combined.get("seeds"):
        out += seeds_markdown(combined["seeds"])
    failed = [e for e in combined["backends"] if not has_numbers(e)]
    if failed:
        out += ["## Failures", ""]
        for e in failed:
            out += [f"### {e['backend']}: {status_text(e)}", "", "```", (e["detail"] or "").rstrip(), "```", ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- several seeds
def seed_summary(by_seed) -> dict:
    """Is a gap between frameworks real or noise?  ``by_seed`` maps a seed to its entries
    (one per backend).  Per backend: test accuracy per seed, mean, standard deviation
    (n - 1) and range; the largest gap between two backends' means; the largest spread of
    one backend over the seeds; and the verdict: the gap is *beyond the noise* when it
    exceeds that spread (the largest range of one framework over the seeds)."""
    seeds = sorted(by_seed)
    per = {}
    for seed in seeds:
        for e in by_seed[seed]:
            if has_numbers(e):
                per.setdefault(e["backend"], {})[seed] = e["record"]["test_acc"]
    rows = {}
    for b, accs in per.items():
        a = [accs[s] for s in seeds if s in accs]
        mean = sum(a) / len(a)
        std = (sum((x - mean) ** 2 for x in a) / (len(a) - 1)) ** 0.5 if len(a) > 1 else None
        rows[b] = dict(test_acc={str(s): accs[s] for s in seeds if s in accs}, mean=mean, std=std,
                       range=max(a) - min(a), n=len(a))
    out = dict(seeds=seeds, backends=rows, largest_gap=None, spread=None, verdict=None)
    full = {b: r for b, r in rows.items() if r["n"] == len(seeds)}
    if len(full) >= 2 and len(seeds) >= 2:
        hi = max(full, key=lambda b: full[b]["mean"])
        lo = min(full, key=lambda b: full[b]["mean"])
        gap = full[hi]["mean"] - full[lo]["mean"]
        widest = max(full, key=lambda b: full[b]["range"])
        out.update(largest_gap=dict(pair=[hi, lo], points=100 * gap),
                   spread=dict(backend=widest, points=100 * full[widest]["range"],
                               std_points=100 * max(r["std"] for r in full.values())))
        beyond = gap > full[widest]["range"]
        out["verdict"] = (
            f"The largest gap between frameworks' mean test accuracies, {100 * gap:.2f} points "
            f"({hi} vs {lo}), is {'LARGER' if beyond else 'smaller'} than the spread of one framework "
            f"over {len(seeds)} seeds ({100 * full[widest]['range']:.2f} points, {widest}): "
            + ("a difference beyond seed noise (check it with more seeds)." if beyond else
               "the frameworks are indistinguishable at this setting; the gap is seed noise."))
    return out


def seeds_markdown(summary) -> List[str]:
    seeds = summary["seeds"]
    head = ["backend"] + [f"seed {s}" for s in seeds] + ["mean ± std", "range"]
    lines = ["## Over seeds", "",
             f"Every backend trained with seeds {', '.join(map(str, seeds))} (initial weights and example "
             f"order; each seed's initial weight file shared by all backends). Test accuracy:", "",
             "| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for b, r in summary["backends"].items():
        cells = [fmt(r["test_acc"].get(str(s)), "{:.4f}") for s in seeds]
        spread = f"{r['mean']:.4f} ± {r['std']:.4f}" if r["std"] is not None else f"{r['mean']:.4f}"
        lines.append("| " + " | ".join([b] + cells + [spread, f"{r['range']:.4f}"]) + " |")
    lines += ["", summary["verdict"] or "A verdict needs two seeds and two backends that finished them all.", ""]
    return lines


def _done(combined):
    return {e["backend"]: e for e in combined["backends"] if has_numbers(e)}


def write_report(combined, out_dir) -> str:
    """Write report.md, curves.png, throughput.png and combined.json; return report.md's path."""
    os.makedirs(out_dir, exist_ok=True)
    done = _done(combined)
    plots.epoch_curves({b: e["record"]["history"] for b, e in done.items()},
                       os.path.join(out_dir, "curves.png"))
    plots.throughput({b: e["record"] for b, e in done.items()}, os.path.join(out_dir, "throughput.png"))
    steps = {b: e["record"]["steps"] for b, e in done.items() if e["record"].get("steps")}
    if steps:
        plots.step_curves(steps, os.path.join(out_dir, "steps.png"))
    write_json(os.path.join(out_dir, "combined.json"), combined)
    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as f:
        f.write(markdown(combined))
    return path
