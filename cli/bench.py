"""``scripts/bench.py``: our GoogLeNet against the book's own code, every installed backend, one run.

The driver: it starts the workers (:mod:`cli.bench_workers`), each in its own process,
derives the numbers and writes the report with :mod:`common.results.bench`.  What is measured and
how: docs/performance.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import time

from common.results import bench as B
from common.results.bench import CONFIGS
from backends.config import CARDS, DEFAULT
from common.runtime import SWITCH, card_env
from backends.config import BACKENDS, FRAMEWORK_MODULE, canonical, is_installed

from . import bench_inference
from .bench_workers import MARK, OPT_IN, worker_main
from .errors import ArgumentParser, UserError, guard
from .main import command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: the book's training figures the issue quotes for this machine (examples/s)
ISSUE_BOOK = {n: c.bench.book_quote for n, c in CARDS.items() if c.bench.book_quote}


def card_targets():
    """The backends' own targets from their cards, for :func:`common.results.bench.check_targets`."""
    memory = [dict(backend=n, against=c.bench.memory_vs[0], limit=c.bench.memory_vs[1])
              for n, c in CARDS.items() if c.bench.memory_vs]
    return dict(settings_gain={n: c.bench.settings_gain for n, c in CARDS.items() if c.bench.settings_gain},
                memory=memory[0] if memory else None)


def parse_args(argv=None):
    p = ArgumentParser(description="Benchmark our GoogLeNet against the book's own code, every "
                                   "installed backend, in one run (see docs/performance.md).")
    p.add_argument("--backends", default=",".join(BACKENDS),
                   help="comma-separated backends (default: all four; missing ones are skipped)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--input-size", type=int, default=96)
    p.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is reported")
    p.add_argument("--steps", type=int, default=8, help="steps per timed repeat")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, caches)")
    p.add_argument("--configs", default=",".join(CONFIGS), help="which of book,eager,fast to run")
    p.add_argument("--no-zoo", dest="zoo", action="store_false",
                   help="skip the zoo configurations (each framework's own zoo model of the family against "
                        "ours)")
    p.add_argument("--zoo-batch", type=int, default=8, help="batch of the zoo configurations (8)")
    p.add_argument("--zoo-rounds", type=int, default=1,
                   help="run each zoo model and ours this many times, alternating (zoo, ours, then ours, zoo, "
                        "...), each in a fresh process; the medians over the rounds are reported (1)")
    p.add_argument("--zoo-size", type=int, default=None,
                   help="input size of the zoo configurations (default: each zoo model's own, 224 or 299; "
                        "--quick: the least both train at)")
    p.add_argument("--no-profile", dest="profile", action="store_false",
                   help="skip the per-stage forward profile")
    p.add_argument("--no-opt-in", dest="opt_in", action="store_false",
                   help="skip the extra configurations (book-env: the book's code with our settings; "
                        "shipped: ours with the framework's shipped settings)")
    p.add_argument("--pipeline-backend", default=DEFAULT,
                   help="backend for the data-pipeline check (end-to-end vs compute-only); 'none' skips it")
    p.add_argument("--pipeline-batches", type=int, default=24, help="batches per epoch of that check")
    p.add_argument("--matmul-size", type=int, default=2048)
    p.add_argument("--timeout", type=float, default=1800, help="seconds per worker subprocess")
    p.add_argument("--out", default=None, help="output folder (default reports/bench-<time>/)")
    p.add_argument("--quick", action="store_true",
                   help="tiny settings for a smoke test: batch 2, 32x32, 1 warm-up, 1 repeat of 1 step")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--config", default=None, help=argparse.SUPPRESS)
    bench_inference.add_args(p)
    args = p.parse_args(argv)
    if args.quick:
        args.batch_size, args.input_size, args.repeats, args.steps, args.warmup = 2, 32, 1, 1, 1
        args.pipeline_batches, args.matmul_size = 3, 256
        args.zoo_batch = 2
        bench_inference.quick(args)
    return args


def _worker_argv(args, who, config=None):
    argv = command("bench") + ["--worker", who,
            "--batch-size", str(args.batch_size), "--input-size", str(args.input_size),
            "--repeats", str(args.repeats), "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--pipeline-batches", str(args.pipeline_batches), "--matmul-size", str(args.matmul_size)]
    argv += ["--zoo-batch", str(args.zoo_batch)] + (["--zoo-size", str(args.zoo_size)] if args.zoo_size else [])
    return argv + (["--config", config] if config else [])


#: oneDNN's verbose switches: 3.x (PyTorch, TensorFlow, Paddle) and 2.x (MXNet 1.9.1)
VERBOSE = {"ONEDNN_VERBOSE": "1", "DNNL_VERBOSE": "1"}


def dispatched_isa(args, name):
    """The oneDNN version and the instruction set it dispatched in the backend's process (its
    first verbose lines), or what the process said instead."""
    r = run_worker(args, name, "isa", env=VERBOSE)
    lines = r.get("stdout", "").splitlines()
    version = next((l.split(",info,", 1)[1] for l in lines if ",info,oneDNN" in l), None)
    isa = next((l.split("isa:", 1)[1] for l in lines if ",info,cpu,isa:" in l), None)
    if r.get("status") != "ok":
        return f"not measured ({r.get('error')})"
    return f"{version}: {isa}" if isa else "no oneDNN primitive ran"


def run_worker(args, who, config=None, log=print, env=None):
    """One worker subprocess; its JSON result (status 'failed' with the reason if it broke).
    ``env``: variables to add to the worker's environment (its output is then kept in the
    result's ``stdout``)."""
    t0 = time.perf_counter()
    env, verbose = dict(os.environ, **(env or {})), bool(env)
    if config == "shipped":
        env[SWITCH] = "0"
    try:
        p = subprocess.run(_worker_argv(args, who, config), capture_output=True, text=True,
                           timeout=args.timeout, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired:
        return dict(status="failed", error=f"timed out after {args.timeout:.0f} s")
    lines = [l for l in p.stdout.splitlines() if l.startswith(MARK)]
    if not lines:
        return dict(status="failed", error=f"worker exited with {p.returncode} and no result",
                    stderr=p.stderr[-3000:])
    res = json.loads(lines[-1][len(MARK):])
    res["wall_s"] = time.perf_counter() - t0
    if verbose:
        res["stdout"] = "\n".join(l for l in p.stdout.splitlines()[:200] if not l.startswith(MARK))
    if res["status"] not in ("ok", "refused"):
        log(f"  {who} {config or ''}: FAILED: {res.get('error')}")
    return res


def run_zoo(args, name):
    """Each of the backend's zoo models (its card's ``bench.zoo``) and ours of the same preset,
    each in its own process, at one input size and batch: {zoo name: dict(zoo=..., ours=...)}."""
    out = {}
    for zname, preset, least, own in CARDS[name].bench.zoo:
        size = max(least, args.zoo_size or (least if args.quick else own))
        # the zoo's nets are 5-20x the book's work per example: fewer timed steps (3 x 2 after 2)
        sized = argparse.Namespace(**dict(vars(args), zoo_size=size, repeats=min(args.repeats, 3),
                                          steps=min(args.steps, 2), warmup=min(args.warmup, 2)))
        pair = dict(preset=preset, input_size=size, batch_size=args.zoo_batch, repeats=sized.repeats,
                    steps=sized.steps, warmup=sized.warmup)
        runs = {"zoo": [], "ours": []}
        for i in range(max(1, args.zoo_rounds)):
            for kind in ("zoo", "ours") if i % 2 == 0 else ("ours", "zoo"):   # alternate: drift hits both
                print(f"{name}: {kind}:{zname} ({preset}, {size}x{size}, batch {args.zoo_batch}) ...", flush=True)
                r = run_worker(sized, name, f"{kind}:{zname}")
                runs[kind].append(r)
                if r.get("status") == "ok":
                    print(f"  train {r['train_ex_s']:.2f} ex/s, inference {r['infer_ex_s']:.2f} ex/s "
                          f"({r['what']})", flush=True)
        pair.update({kind: B.over_rounds(rs) for kind, rs in runs.items()}, rounds=max(1, args.zoo_rounds))
        out[zname] = pair
    return out


# Over the complexity limit on purpose: the benchmark's runs in order, one branch per
# configuration and opt-in the issue asks for.
def run_benchmark(args):  # noqa: C901
    """The whole benchmark for parsed options; returns the report (also written to --out)."""
    names = [canonical(n) for n in args.backends.split(",") if n.strip()]
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for c in configs:
        if c not in CONFIGS:
            raise UserError(f"unknown config {c!r}; choose from {', '.join(CONFIGS)}")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = os.path.abspath(args.out or os.path.join("reports", f"bench-{stamp}"))
    fl = B.flops("d2l", args.input_size)
    rep = dict(command=" ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable, ROOT),
                                                          "scripts/bench.py"] + sys.argv[1:]),
               time=datetime.datetime.now().isoformat(timespec="seconds"), machine=B.machine_info(),
               load_before=B.loadavg(),
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
        if args.opt_in and (card_env(CARDS[name]) or CARDS[name].bench.book_env) and "book" in configs:
            extra.append("book-env")        # the book's code with our backend's settings
        if args.opt_in and card_env(CARDS[name]) and "fast" in configs:
            extra.append("shipped")         # ours, with the framework's shipped settings
        if args.opt_in and "fast" in configs:
            extra.append("bf16")            # ours, fast, --amp bf16 (refused where the framework cannot)
        for config in configs + extra:
            print(f"{name}: {config} ...", flush=True)
            r = run_worker(args, name, config)
            res["configs"][config] = r
            if r.get("status") == "refused":
                print(f"  refused: {r['reason']}")
            if r.get("status") == "ok":
                res["framework_version"] = r["framework_version"]
                print(f"  train {r['train_ex_s']:.1f} ex/s, inference {r['infer_ex_s']:.1f} ex/s, "
                      f"peak RSS {r['peak_rss_mb']:.0f} MiB, first step {r['first_step_s']:.1f} s")
        if not any(r.get("status") == "ok" for r in res["configs"].values()):
            res["status"] = "failed"
        if args.zoo:
            res["zoo"] = run_zoo(args, name)
        res["isa"] = dispatched_isa(args, name)
        print(f"{name}: {res['isa']}", flush=True)
        if args.profile:
            print(f"{name}: forward time per stage ...", flush=True)
            res["stages"] = run_worker(args, name, "stages")
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
    rep["load_after"] = B.loadavg()

    # the roofline: the best matmul rate measured in this run, any library (the stricter ceiling)
    cands = [(v["gflops"], v["library"]) for when in ("before", "after")
             for v in roof[when].values() if isinstance(v, dict) and v.get("gflops")]
    peak, lib = max(cands) if cands else (None, None)
    rep["roofline"] = dict(roof, peak_gflops=peak, peak_library=lib,
                           roofline_ex_s=peak * 1e9 / fl["train_flops"] if peak else None)
    for r in backends.values():
        if r["status"] == "ok":
            B.summarize_backend(r, fl["train_flops"], peak)
    rep["backends"] = backends
    rep["issue_book_figures"] = ISSUE_BOOK
    rep["targets"] = B.check_targets(backends, **card_targets())

    md = B.tables(rep)
    B.write_report(out_dir, "bench", "Benchmark", rep, md)
    return rep


@guard
def main(argv=None):
    args = parse_args(argv)
    if args.inference:
        bench_inference.worker(args) if args.worker else bench_inference.run_inference(args)
    elif args.worker:
        worker_main(args)
    else:
        run_benchmark(args)
    return 0
