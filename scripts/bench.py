#!/usr/bin/env python
"""Benchmark our GoogLeNet against the book's own code, every installed backend, one run.

    .venv/bin/python scripts/bench.py                          # all backends, batch 32, 96x96
    .venv/bin/python scripts/bench.py --backends pytorch,mxnet --repeats 7 --steps 10
    .venv/bin/python scripts/bench.py --quick --backends pytorch   # a smoke test (seconds)

For each backend, three configurations (and any opt-in ones), each in its own subprocess
(``scripts/bench.py --worker BACKEND --config CONFIG`` prints one JSON line), so that
frameworks never share a process and the peak memory (max RSS) is that configuration's:

* ``book``  — the book's code: ``tests/reference/book_<backend>.py``'s ``book_net()`` and
  ``make_book_step`` (one step exactly as ``d2l.train_ch6``), ``book_logits`` for inference;
* ``eager`` — ours without fast paths: ``build()`` + ``Trainer(net, fast=False)``;
* ``fast``  — ours as shipped: ``build()`` + ``Trainer(net, fast=True)`` (the default);
* opt-in fast paths that are not the default, for PyTorch ``channels_last``
  (``Trainer(net, fast='channels_last')``); ``--no-opt-in`` leaves them out.

Training throughput: ``--warmup`` steps excluded, then ``--repeats`` timings of ``--steps``
steps each; the median is reported.  A step takes a NumPy batch (generated data, four
batches cycled) and returns host numbers, so it is synchronised and includes the
NumPy-to-tensor conversion for both the book and ours.  Inference: the same with the
eval step (``book_logits`` / ``Trainer.eval_step``).

Also measured in the same run: the float32 matrix-multiply rate of this machine
(2048x2048, median of 7) with NumPy and with each selected framework in its own process
(NumPy again at the end); the best of them is the roofline (examples/s = peak FLOP/s / training FLOPs per example; see
``common/bench.py`` for the FLOP convention), and, for one backend, the data
pipeline: ``common.loop.fit`` with ``common.data.Loader`` on a generated dataset,
compute-only vs end-to-end examples/s.

Writes ``bench.json`` and ``bench.md`` into ``--out`` (default ``reports/bench-<time>/``).
"""
import argparse
import datetime
import importlib
import itertools
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import traceback

import _path  # noqa: F401
from common import bench as B
from common.switch import BACKENDS, FRAMEWORK_MODULE, canonical, is_installed

CONFIGS = ("book", "eager", "fast")
#: ours: config name -> the Trainer's ``fast`` argument
OURS = {"eager": False, "fast": True}
#: documented opt-in fast paths that are not the default (they change float32 summation
#: order beyond the equivalence tests' tolerance), measured as extra configurations
OPT_IN = {"pytorch": {"channels_last": "channels_last"}}
MARK = "BENCH-RESULT "
#: the issue's targets (2-core CPU, batch 32, 96x96)
TARGET_RATIO, TARGET_ROOFLINE, TARGET_BEST_ROOFLINE = 1.5, 0.5, 0.6
#: the book's training figures the issue quotes for this machine (examples/s)
ISSUE_BOOK = {"pytorch": 32.5, "mxnet": 18.4, "tensorflow": 36.2, "paddle": 8.0}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default=",".join(BACKENDS),
                   help="comma-separated backends (default: all four; missing ones are skipped)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--input-size", type=int, default=96)
    p.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is reported")
    p.add_argument("--steps", type=int, default=8, help="steps per timed repeat")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, caches)")
    p.add_argument("--configs", default=",".join(CONFIGS), help="which of book,eager,fast to run")
    p.add_argument("--no-opt-in", dest="opt_in", action="store_false",
                   help="skip the opt-in fast paths (PyTorch channels_last)")
    p.add_argument("--pipeline-backend", default="pytorch",
                   help="backend for the data-pipeline check (end-to-end vs compute-only); 'none' skips it")
    p.add_argument("--pipeline-batches", type=int, default=24, help="batches per epoch of that check")
    p.add_argument("--matmul-size", type=int, default=2048)
    p.add_argument("--timeout", type=float, default=1800, help="seconds per worker subprocess")
    p.add_argument("--out", default=None, help="output folder (default reports/bench-<time>/)")
    p.add_argument("--quick", action="store_true",
                   help="tiny settings for a smoke test: batch 2, 32x32, 1 warm-up, 1 repeat of 1 step")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--config", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.batch_size, args.input_size, args.repeats, args.steps, args.warmup = 2, 32, 1, 1, 1
        args.pipeline_batches, args.matmul_size = 3, 256
    return args


# =========================================================================== workers
def _emit(obj):
    sys.stdout.flush()
    print(MARK + json.dumps(obj), flush=True)


def worker_roofline(args):
    """Matrix-multiply rate of NumPy's BLAS (no framework in this process)."""
    return {"numpy": B.numpy_matmul_peak(args.matmul_size)}


def _framework_matmul(backend):
    """(library name, matmul(a, b) that returns once the product is computed) for a backend."""
    if backend == "pytorch":
        import torch

        def mm(a, b):
            c = torch.matmul(a, b)
            if c.is_cuda:
                torch.cuda.synchronize()
            return c
        return "torch " + torch.__version__, mm
    if backend == "tensorflow":
        import tensorflow as tf
        return "tensorflow " + tf.__version__, lambda a, b: tf.linalg.matmul(a, b).numpy()
    if backend == "mxnet":
        import mxnet as mx
        return "mxnet " + mx.__version__, lambda a, b: mx.nd.dot(a, b).wait_to_read()
    if backend == "paddle":
        import paddle
        return "paddle " + paddle.__version__, lambda a, b: paddle.matmul(a, b).numpy()
    raise ValueError(backend)


def worker_matmul(backend, args):
    """The same float32 matrix multiply with the backend's framework, in its own process."""
    import numpy as np
    from backends import get_backend
    bk = get_backend(backend)
    library, mm = _framework_matmul(backend)
    n = args.matmul_size
    rng = np.random.default_rng(0)
    to = (lambda x: __import__("mxnet").nd.array(x)) if backend == "mxnet" else bk.to_tensor
    a, b = (to(rng.random((n, n), dtype=np.float32)) for _ in range(2))
    runs = B.matmul_gflops(mm, a, b, n)
    return dict(library=library, n=n, gflops=B.median(runs), runs=runs)


def worker_config(backend, config, args):
    """Time one configuration of one backend; see the module docstring."""
    from backends import get_backend
    bk = get_backend(backend)
    data = B.batches(args.batch_size, args.input_size)
    t0 = time.perf_counter()
    if config == "book":
        ref = importlib.import_module(f"tests.reference.book_{backend}")
        net = ref.book_net()
        step = ref.make_book_step(net, lr=0.1)
        train = lambda X, y: step(X, y)                             # noqa: E731
        infer = lambda X, y: ref.book_logits(net, X)                # noqa: E731
    elif config in OURS or config in OPT_IN.get(backend, {}):
        net = bk.build(input_size=args.input_size)
        trainer = bk.Trainer(net, lr=0.1, fast=OURS.get(config, OPT_IN.get(backend, {}).get(config)))
        train = lambda X, y: trainer.train_step(bk.to_tensor(X), bk.to_tensor(y))  # noqa: E731
        infer = lambda X, y: trainer.eval_step(bk.to_tensor(X), bk.to_tensor(y))   # noqa: E731
    else:
        raise ValueError(f"unknown config {config!r}")
    build_s = time.perf_counter() - t0

    def timed(fn):
        cycle = itertools.cycle(data)
        call = lambda: fn(*next(cycle))                              # noqa: E731
        t = time.perf_counter()
        call()
        first = time.perf_counter() - t
        for _ in range(args.warmup - 1):
            call()
        runs = B.time_repeats(call, args.steps, args.repeats, args.batch_size)
        return first, runs

    first_train, train_runs = timed(train)
    first_infer, infer_runs = timed(infer)        # after training: book_logits switches to eval mode
    return dict(backend=backend, config=config, framework_version=bk.framework_version(),
                device=bk.device(), build_s=build_s, first_step_s=first_train,
                first_infer_s=first_infer, train_ex_s=B.median(train_runs), train_runs=train_runs,
                infer_ex_s=B.median(infer_runs), infer_runs=infer_runs, peak_rss_mb=B.peak_rss_mb())


def worker_pipeline(backend, args):
    """``common.loop.fit`` with ``common.data.Loader`` on generated uint8 data: the last
    epoch's compute-only vs end-to-end examples/s (definitions in ``common/loop.py``)."""
    import numpy as np
    from backends import get_backend
    from common.data import Loader, Split
    from common.loop import fit
    from common.train_config import Recipe
    bk = get_backend(backend)
    rng = np.random.default_rng(0)
    n = args.pipeline_batches * args.batch_size
    s = args.input_size
    train = Split(rng.integers(0, 256, (n, s, s), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64))
    test = Split(train.images[:args.batch_size], train.labels[:args.batch_size])
    recipe = Recipe(num_epochs=2, batch_size=args.batch_size, resize=s)
    net = bk.build(input_size=s)
    with tempfile.TemporaryDirectory() as run_dir:
        rec = fit(bk, net, Loader(train, args.batch_size, shuffle=True), Loader(test, args.batch_size),
                  recipe, run_dir, progress=False, log=lambda *a, **k: None, fast=True)
    h = rec["history"][-1]                        # the second epoch: warm-up excluded
    compute, e2e = h["examples"] / h["compute_time"], h["examples"] / h["train_time"]
    return dict(backend=backend, examples=h["examples"], compute_ex_s=compute, end_to_end_ex_s=e2e,
                end_to_end_over_compute=e2e / compute, within_10pct=e2e >= 0.9 * compute)


def worker_main(args):
    try:
        if args.worker == "roofline":
            res = worker_roofline(args)
        elif args.config == "matmul":
            res = worker_matmul(canonical(args.worker), args)
        elif args.config == "pipeline":
            res = worker_pipeline(canonical(args.worker), args)
        else:
            res = worker_config(canonical(args.worker), args.config, args)
        res["status"] = "ok"
    except Exception as e:                                          # reported, not raised
        res = dict(status="failed", error=f"{type(e).__name__}: {e}",
                   traceback=traceback.format_exc()[-3000:])
    _emit(res)


# =========================================================================== driver
def _worker_argv(args, who, config=None):
    argv = [sys.executable, os.path.abspath(__file__), "--worker", who,
            "--batch-size", str(args.batch_size), "--input-size", str(args.input_size),
            "--repeats", str(args.repeats), "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--pipeline-batches", str(args.pipeline_batches), "--matmul-size", str(args.matmul_size)]
    return argv + (["--config", config] if config else [])


def run_worker(args, who, config=None, log=print):
    """One worker subprocess; its JSON result (status 'failed' with the reason if it broke)."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(_worker_argv(args, who, config), capture_output=True, text=True,
                           timeout=args.timeout, cwd=_path.ROOT)
    except subprocess.TimeoutExpired:
        return dict(status="failed", error=f"timed out after {args.timeout:.0f} s")
    lines = [l for l in p.stdout.splitlines() if l.startswith(MARK)]
    if not lines:
        return dict(status="failed", error=f"worker exited with {p.returncode} and no result",
                    stderr=p.stderr[-3000:])
    res = json.loads(lines[-1][len(MARK):])
    res["wall_s"] = time.perf_counter() - t0
    if res["status"] != "ok":
        log(f"  {who} {config or ''}: FAILED: {res.get('error')}")
    return res


def machine_info():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    return dict(cpu=cpu, cpus=os.cpu_count(), platform=platform.platform(),
                python=platform.python_version())


def loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def summarize_backend(res, flops, peak):
    """Derived numbers of one backend: GFLOP/s, roofline fraction, ratios."""
    cfg = {c: B.derive(r, flops, peak) if r.get("status") == "ok" else r
           for c, r in res["configs"].items()}
    res["configs"] = cfg
    g = lambda c, k: cfg.get(c, {}).get(k)                         # noqa: E731
    res.update(ratio_train=B.ratio(g("fast", "train_ex_s"), g("book", "train_ex_s")),
               ratio_infer=B.ratio(g("fast", "infer_ex_s"), g("book", "infer_ex_s")),
               fast_gain_train=B.ratio(g("fast", "train_ex_s"), g("eager", "train_ex_s")),
               fast_gain_infer=B.ratio(g("fast", "infer_ex_s"), g("eager", "infer_ex_s")),
               memory_ratio=B.ratio(g("fast", "peak_rss_mb"), g("book", "peak_rss_mb")))
    res["opt_in"] = {c: dict(ratio_train=B.ratio(g(c, "train_ex_s"), g("book", "train_ex_s")),
                             gain_train=B.ratio(g(c, "train_ex_s"), g("eager", "train_ex_s")),
                             ratio_infer=B.ratio(g(c, "infer_ex_s"), g("book", "infer_ex_s")),
                             gain_infer=B.ratio(g(c, "infer_ex_s"), g("eager", "infer_ex_s")))
                     for c in cfg if c not in CONFIGS}
    return res


def check_targets(backends):
    """The issue's targets, per backend and overall: met / missed (None where unmeasured)."""
    out, best = {}, None
    for name, r in backends.items():
        if r["status"] != "ok":
            continue
        frac = r["configs"].get("fast", {}).get("roofline_fraction")
        best = max(best or 0, frac or 0) if frac is not None else best
        out[name] = dict(ratio=r["ratio_train"],
                         ratio_met=None if r["ratio_train"] is None else r["ratio_train"] >= TARGET_RATIO,
                         roofline_fraction=frac,
                         roofline_met=None if frac is None else frac >= TARGET_ROOFLINE)
    out["best_roofline_fraction"] = best
    out["best_roofline_met"] = None if best is None else best >= TARGET_BEST_ROOFLINE
    return out


def tables(rep):
    """The markdown report: training, inference and memory, and the pipeline check."""
    f, rf = rep["flops"], rep["roofline"]
    s = rep["settings"]
    rows, inf_rows = [], []
    for name, r in rep["backends"].items():
        if r["status"] != "ok":
            rows.append([name, r["status"] + (": " + r.get("reason", "") if r.get("reason") else "")]
                        + [""] * 8)
            continue
        c = r["configs"]
        t = lambda k, key="train_ex_s": c.get(k, {}).get(key)        # noqa: E731
        rows.append([name, r.get("framework_version", ""), B.fmt(t("book")), B.fmt(t("eager")),
                     B.fmt(t("fast")), B.fmt(r["ratio_train"], 2, suffix="x"),
                     B.fmt(r["fast_gain_train"], 2, suffix="x"), B.fmt(t("fast", "train_gflops"), 0),
                     B.fmt(t("fast", "roofline_fraction"), pct=True),
                     B.fmt(t("book", "roofline_fraction"), pct=True)])
        inf_rows.append([name, B.fmt(t("book", "infer_ex_s")), B.fmt(t("eager", "infer_ex_s")),
                         B.fmt(t("fast", "infer_ex_s")), B.fmt(r["ratio_infer"], 2, suffix="x"),
                         B.fmt(t("book", "peak_rss_mb"), 0), B.fmt(t("eager", "peak_rss_mb"), 0),
                         B.fmt(t("fast", "peak_rss_mb"), 0), B.fmt(t("book", "first_step_s"), 1),
                         B.fmt(t("fast", "first_step_s"), 1)])
    out = [f"Batch {s['batch_size']}, {s['input_size']}x{s['input_size']}, median of {s['repeats']} x "
           f"{s['steps']} steps after {s['warmup']} warm-up; {rep['machine']['cpus']} CPUs "
           f"({rep['machine']['cpu']}), load average before {rep['load_before']}, after "
           f"{rep['load_after']}.",
           "",
           f"FLOPs per training example: {f['train_flops'] / 1e9:.3f} GFLOP "
           f"({f['forward_macs']:,} forward MACs; {B.FLOP_CONVENTION}). " + (
               f"Matmul peak {rf['peak_gflops']:.0f} GFLOP/s ({rf['peak_library']}, {s['matmul_size']}^2 "
               f"float32, best median of this run) -> roofline {rf['roofline_ex_s']:.1f} examples/s."
               if rf.get("peak_gflops") else "The matmul peak could not be measured."),
           "",
           "Matmul GFLOP/s (median), before the backends: " + ", ".join(
               f"{v['library']} {v['gflops']:.0f}" for v in rf["before"].values()
               if isinstance(v, dict) and v.get("gflops")) + "; after: " + ", ".join(
               f"{v['library']} {v['gflops']:.0f}" for v in rf["after"].values()
               if isinstance(v, dict) and v.get("gflops")) + ".",
           "",
           "Training (examples/s):",
           "",
           B.markdown_table(["backend", "version", "book", "ours eager", "ours fast", "ours/book",
                             "fast/eager", "GFLOP/s", "of roofline", "book of roofline"], rows),
           "",
           "Inference (examples/s), peak memory (max RSS of the process, MiB), first step (s):",
           "",
           B.markdown_table(["backend", "book", "ours eager", "ours fast", "ours/book", "RSS book",
                             "RSS eager", "RSS fast", "1st step book", "1st step fast"], inf_rows)]
    opt_rows = []
    for name, r in rep["backends"].items():
        for c, o in (r.get("opt_in") or {}).items():
            rc = r["configs"][c]
            if rc.get("status") != "ok":
                opt_rows.append([f"{name} {c}", rc.get("status", "")] + [""] * 6)
                continue
            opt_rows.append([f"{name} `{c}`", B.fmt(rc["train_ex_s"]), B.fmt(o["ratio_train"], 2, suffix="x"),
                             B.fmt(o["gain_train"], 2, suffix="x"), B.fmt(rc.get("roofline_fraction"), pct=True),
                             B.fmt(rc["infer_ex_s"]), B.fmt(o["gain_infer"], 2, suffix="x"),
                             B.fmt(rc["peak_rss_mb"], 0)])
    if opt_rows:
        out += ["", "Opt-in fast paths (not the default; training and inference examples/s):", "",
                B.markdown_table(["backend, path", "train", "/book", "/eager", "of roofline", "inference",
                                  "/eager", "RSS"], opt_rows)]
    p = rep.get("pipeline")
    if p and p.get("status") == "ok":
        out += ["", f"Data pipeline ({p['backend']}, common.loop.fit + Loader, {p['examples']} generated "
                    f"examples, second epoch): compute-only {p['compute_ex_s']:.1f}, end-to-end "
                    f"{p['end_to_end_ex_s']:.1f} examples/s ({100 * p['end_to_end_over_compute']:.0f} %; "
                    f"within 10 %: {'yes' if p['within_10pct'] else 'NO'})."]
    t = rep["targets"]
    lines = []
    for name, v in t.items():
        if isinstance(v, dict):
            lines.append(f"- {name}: ours/book {B.fmt(v['ratio'], 2, suffix='x')} "
                         f"({_met(v['ratio_met'])} >= {TARGET_RATIO}x), "
                         f"{B.fmt(v['roofline_fraction'], pct=True)} of roofline "
                         f"({_met(v['roofline_met'])} >= {TARGET_ROOFLINE:.0%})")
    lines.append(f"- best: {B.fmt(t['best_roofline_fraction'], pct=True)} of roofline "
                 f"({_met(t['best_roofline_met'])} >= {TARGET_BEST_ROOFLINE:.0%})")
    out += ["", "Targets:", ""] + lines
    return "\n".join(out) + "\n"


def _met(v):
    return "—" if v is None else ("met" if v else "MISSED")


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    names = [canonical(n) for n in args.backends.split(",") if n.strip()]
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for c in configs:
        if c not in CONFIGS:
            raise SystemExit(f"unknown config {c!r}; choose from {', '.join(CONFIGS)}")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = args.out or os.path.join(_path.ROOT, "reports", f"bench-{stamp}")
    fl = B.flops("d2l", args.input_size)
    rep = dict(command=" ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable, _path.ROOT),
                                                          "scripts/bench.py"] + sys.argv[1:]),
               time=datetime.datetime.now().isoformat(timespec="seconds"), machine=machine_info(),
               load_before=loadavg(),
               settings=dict(batch_size=args.batch_size, input_size=args.input_size, repeats=args.repeats,
                             steps=args.steps, warmup=args.warmup, quick=args.quick,
                             matmul_size=args.matmul_size, configs=configs),
               flops=dict(fl, convention=B.FLOP_CONVENTION))
    print(f"GoogLeNet (d2l) at {args.input_size}x{args.input_size}: {fl['forward_macs']:,} forward MACs "
          f"-> {fl['train_flops'] / 1e9:.3f} GFLOP per training example ({B.FLOP_CONVENTION})")
    print(f"load average {rep['load_before']} on {rep['machine']['cpus']} CPUs")

    roof = {"before": run_worker(args, "roofline")}
    for name in names:                       # each framework's own matmul, in its own process
        if is_installed(name):
            r = run_worker(args, name, "matmul")
            if r.get("status") == "ok":
                roof["before"][name] = r
    print("matmul GFLOP/s: " + ", ".join(f"{v['library']} {v['gflops']:.0f}" for v in roof["before"].values()
                                           if isinstance(v, dict) and "gflops" in v), flush=True)
    backends = {}
    for name in names:
        if not is_installed(name):
            backends[name] = dict(status="skipped", reason=f"{FRAMEWORK_MODULE[name]} is not installed")
            print(f"{name}: skipped ({backends[name]['reason']})")
            continue
        res = dict(status="ok", configs={})
        extra = list(OPT_IN.get(name, {})) if args.opt_in else []
        for config in configs + extra:
            print(f"{name}: {config} ...", flush=True)
            r = run_worker(args, name, config)
            res["configs"][config] = r
            if r.get("status") == "ok":
                res["framework_version"] = r["framework_version"]
                print(f"  train {r['train_ex_s']:.1f} ex/s, inference {r['infer_ex_s']:.1f} ex/s, "
                      f"peak RSS {r['peak_rss_mb']:.0f} MiB, first step {r['first_step_s']:.1f} s")
        if not any(r.get("status") == "ok" for r in res["configs"].values()):
            res["status"] = "failed"
        backends[name] = res
    pipe_name = args.pipeline_backend.strip().lower()
    if pipe_name != "none":
        pipe_name = canonical(pipe_name)
        if is_installed(pipe_name):
            print(f"data pipeline ({pipe_name}) ...", flush=True)
            rep["pipeline"] = run_worker(args, pipe_name, "pipeline")
        else:
            rep["pipeline"] = dict(status="skipped", reason=f"{FRAMEWORK_MODULE[pipe_name]} is not installed")
    roof["after"] = run_worker(args, "roofline")
    rep["load_after"] = loadavg()

    # the roofline: the best matmul rate measured in this run, any library (the stricter ceiling)
    cands = [(v["gflops"], v["library"]) for when in ("before", "after")
             for v in roof[when].values() if isinstance(v, dict) and v.get("gflops")]
    peak, lib = max(cands) if cands else (None, None)
    rep["roofline"] = dict(roof, peak_gflops=peak, peak_library=lib,
                           roofline_ex_s=peak * 1e9 / fl["train_flops"] if peak else None)
    for name, r in backends.items():
        if r["status"] == "ok":
            summarize_backend(r, fl["train_flops"], peak)
    rep["backends"] = backends
    rep["issue_book_figures"] = ISSUE_BOOK
    rep["targets"] = check_targets(backends)

    md = tables(rep)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "bench.json"), "w") as f:
        json.dump(rep, f, indent=2)
    with open(os.path.join(out_dir, "bench.md"), "w") as f:
        f.write(f"# Benchmark, {rep['time']}\n\n`{rep['command']}`\n\n" + md)
    print()
    print(md)
    print(f"wrote {os.path.join(out_dir, 'bench.json')} and bench.md")
    return rep


if __name__ == "__main__":
    main()
