"""Framework-free pieces of the benchmark (``scripts/bench.py``): FLOP accounting, the
matrix-multiply roofline, timing statistics, the worker's batches and the report tables.

FLOP convention (stated once, used everywhere):

* forward multiply-adds (MACs) per example come from the oracle
  (:func:`common.net.oracle.analyze`): conv and dense layers only, main network; bias
  additions, activations, pooling and the loss are not counted;
* one multiply-add = 2 FLOPs, so forward FLOPs = 2 * MACs;
* one training example = forward + backward, and the backward pass costs about twice
  the forward (gradients with respect to the inputs and to the weights, one
  convolution each), so training FLOPs = 3 * forward FLOPs = 6 * MACs.  (The first
  conv layer needs no input gradient, so the true count is about 1 % lower; the
  convention ignores that, as is usual.)

For the book's net at 1x96x96: 276,066,304 MACs, 0.552 GFLOP forward, 1.656 GFLOP per
training example.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ..net import oracle

#: training FLOPs = TRAIN_FACTOR * forward FLOPs (forward + backward ~ 2x forward)
TRAIN_FACTOR = 3
FLOP_CONVENTION = ("forward FLOPs = 2 x oracle multiply-adds (conv and dense layers, main network); "
                   "training FLOPs = 3 x forward (backward ~ 2 x forward)")


# --------------------------------------------------------------------------- FLOPs
def flops(spec="d2l", input_size=None) -> Dict[str, int]:
    """Forward MACs, forward FLOPs and training FLOPs per example (see the module doc)."""
    macs = oracle.analyze(spec, input_size).macs
    return dict(forward_macs=macs, forward_flops=2 * macs, train_flops=TRAIN_FACTOR * 2 * macs)


# --------------------------------------------------------------------------- timing
def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def over_rounds(results: Sequence[dict]) -> dict:
    """One configuration's worker results from several rounds (fresh processes) as one: the
    first failure if any round failed, else the first result with the medians over the rounds
    of its throughputs, and each round's figures under ``rounds_train_ex_s`` /
    ``rounds_infer_ex_s``.  One round: that result unchanged."""
    if len(results) == 1:
        return results[0]
    failed = [r for r in results if r.get("status") != "ok"]
    if failed:
        return failed[0]
    out = dict(results[0])
    for key in ("train_ex_s", "infer_ex_s"):
        out[f"rounds_{key}"] = [r[key] for r in results]
        out[key] = median(out[f"rounds_{key}"])
    return out


def time_repeats(fn: Callable[[], object], steps: int, repeats: int, examples_per_call: int,
                 clock=time.perf_counter) -> List[float]:
    """``repeats`` timings of ``steps`` back-to-back calls of ``fn``, as examples/second
    each.  ``fn`` must synchronise (return host numbers), so wall time is compute time."""
    out = []
    for _ in range(repeats):
        t0 = clock()
        for _ in range(steps):
            fn()
        out.append(steps * examples_per_call / (clock() - t0))
    return out


def matmul_gflops(matmul: Callable, a, b, n: int, repeats: int = 7, warmup: int = 2) -> List[float]:
    """GFLOP/s of ``repeats`` timed ``matmul(a, b)`` of two n x n matrices (2 n^3 FLOPs)."""
    for _ in range(warmup):
        matmul(a, b)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        matmul(a, b)
        out.append(2.0 * n ** 3 / (time.perf_counter() - t0) / 1e9)
    return out


def numpy_matmul_peak(n: int = 2048, repeats: int = 7) -> Dict:
    """The float32 matrix-multiply rate of NumPy's BLAS here (median of ``repeats``)."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    runs = matmul_gflops(np.matmul, a, b, n, repeats)
    return dict(library="numpy " + np.__version__, n=n, gflops=median(runs), runs=runs)


# --------------------------------------------------------------------------- data
def batches(batch_size: int, input_size: int, count: int = 4, in_channels: int = 1,
            num_classes: int = 10, seed: int = 0):
    """``count`` generated batches (uniform [0, 1) float32 NCHW images, random labels),
    cycled by the benchmark so that no step sees the batch of the step before."""
    rng = np.random.default_rng(seed)
    return [(rng.random((batch_size, in_channels, input_size, input_size), dtype=np.float32),
             rng.integers(0, num_classes, batch_size).astype(np.int64)) for _ in range(count)]


def peak_rss_mb() -> Optional[float]:
    """This process's peak resident memory in MiB (``ru_maxrss``; None where unknown)."""
    try:
        import resource
        import sys
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / (1024 * 1024) if sys.platform == "darwin" else kb / 1024
    except (ImportError, OSError):
        return None


# --------------------------------------------------------------------------- derived numbers
def derive(result: Dict, train_flops: int, peak_gflops: float) -> Dict:
    """Add achieved GFLOP/s and the fraction of the matmul roofline to one configuration's
    result (``train_ex_s`` examples/s of training)."""
    r = dict(result)
    if r.get("train_ex_s"):
        r["train_gflops"] = r["train_ex_s"] * train_flops / 1e9
        r["roofline_fraction"] = r["train_gflops"] / peak_gflops if peak_gflops else None
    return r


def ratio(a, b):
    return a / b if a and b else None


# --------------------------------------------------------------------------- tables
def fmt(x, digits=1, pct=False, suffix=""):
    if x is None:
        return "—"
    if pct:
        return f"{100 * x:.0f} %"
    return f"{x:,.{digits}f}{suffix}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]],
                   align: Optional[str] = None) -> str:
    """A GitHub markdown table; ``align`` is one letter per column, ``l`` or ``r``."""
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the report
CONFIGS = ("book", "eager", "fast")
#: the issue's targets (2-core CPU, batch 32, 96x96)
TARGET_RATIO, TARGET_ROOFLINE, TARGET_BEST_ROOFLINE = 1.5, 0.5, 0.6
#: ours at least as fast as the framework's own zoo model of the same net (training and inference)
TARGET_ZOO = 1.0


def machine_info():
    from ..runtime import cpu_summary
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    return dict(cpu=cpu, cpus=os.cpu_count(), platform=platform.platform(),
                python=platform.python_version(), cpu_flags=cpu_summary())


def loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def summarize_backend(res, flops, peak):
    """Derived numbers of one backend: GFLOP/s, roofline fraction, ratios."""
    cfg = {c: derive(r, flops, peak) if r.get("status") == "ok" else r
           for c, r in res["configs"].items()}
    res["configs"] = cfg
    g = lambda c, k: cfg.get(c, {}).get(k)                         # noqa: E731
    res.update(ratio_train=ratio(g("fast", "train_ex_s"), g("book", "train_ex_s")),
               ratio_infer=ratio(g("fast", "infer_ex_s"), g("book", "infer_ex_s")),
               fast_gain_train=ratio(g("fast", "train_ex_s"), g("eager", "train_ex_s")),
               fast_gain_infer=ratio(g("fast", "infer_ex_s"), g("eager", "infer_ex_s")),
               memory_ratio=ratio(g("fast", "peak_rss_mb"), g("book", "peak_rss_mb")),
               bf16_gain_train=ratio(g("bf16", "train_ex_s"), g("fast", "train_ex_s")),
               bf16_gain_infer=ratio(g("bf16", "infer_ex_s"), g("fast", "infer_ex_s")))
    for pair in (res.get("zoo") or {}).values():
        z, o = pair.get("zoo", {}), pair.get("ours", {})
        pair.update(ratio_train=ratio(o.get("train_ex_s"), z.get("train_ex_s")),
                    ratio_infer=ratio(o.get("infer_ex_s"), z.get("infer_ex_s")))
    res["opt_in"] = {c: dict(ratio_train=ratio(g(c, "train_ex_s"), g("book", "train_ex_s")),
                             gain_train=ratio(g(c, "train_ex_s"), g("eager", "train_ex_s")),
                             ratio_infer=ratio(g(c, "infer_ex_s"), g("book", "infer_ex_s")),
                             gain_infer=ratio(g(c, "infer_ex_s"), g("eager", "infer_ex_s")))
                     for c in cfg if c not in CONFIGS}
    return res


def check_targets(backends, settings_gain=(), memory=None):
    """The issue's targets, per backend and overall: met / missed (None where unmeasured).

    The backends' own targets come from their cards (``cli.bench.card_targets``):
    ``settings_gain`` maps a backend to the least gain of our fast path over the same with
    the framework's shipped settings (config ``shipped``); ``memory`` is
    ``dict(backend, against, limit)``: peak training memory (max RSS, fast path) of that
    backend at most ``limit`` x the other's."""
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
    def get(name, config, key):
        return ((backends.get(name) or {}).get("configs", {}).get(config) or {}).get(key)

    for name, goal in dict(settings_gain).items():
        g = ratio(get(name, "fast", "train_ex_s"), get(name, "shipped", "train_ex_s"))
        out.setdefault("settings_gain", {})[name] = dict(gain=g, target=goal,
                                                         met=None if g is None else g >= goal)
    for name, r in backends.items():
        for zname, pair in (r.get("zoo") or {}).items():
            t, i = pair.get("ratio_train"), pair.get("ratio_infer")
            out.setdefault("zoo", {})[f"{name}/{zname}"] = dict(
                ratio_train=t, ratio_infer=i, target=TARGET_ZOO,
                met=None if t is None or i is None else t >= TARGET_ZOO and i >= TARGET_ZOO)
    if memory:
        m = memory
        r = ratio(get(m["backend"], "fast", "peak_rss_mb"), get(m["against"], "fast", "peak_rss_mb"))
        out["memory"] = dict(m, ratio=r, met=None if r is None else r <= m["limit"])
    return out


# Over the complexity limit on purpose: one table row per backend and configuration, with the
# cases of missing numbers.
def tables(rep):  # noqa: C901
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
        t = lambda k, key="train_ex_s", c=c: c.get(k, {}).get(key)
        rows.append([name, r.get("framework_version", ""), fmt(t("book")), fmt(t("eager")),
                     fmt(t("fast")), fmt(r["ratio_train"], 2, suffix="x"),
                     fmt(r["fast_gain_train"], 2, suffix="x"), fmt(t("fast", "train_gflops"), 0),
                     fmt(t("fast", "roofline_fraction"), pct=True),
                     fmt(t("book", "roofline_fraction"), pct=True)])
        inf_rows.append([name, fmt(t("book", "infer_ex_s")), fmt(t("eager", "infer_ex_s")),
                         fmt(t("fast", "infer_ex_s")), fmt(r["ratio_infer"], 2, suffix="x"),
                         fmt(t("book", "peak_rss_mb"), 0), fmt(t("eager", "peak_rss_mb"), 0),
                         fmt(t("fast", "peak_rss_mb"), 0), fmt(t("book", "first_step_s"), 1),
                         fmt(t("fast", "first_step_s"), 1)])
    out = [f"Batch {s['batch_size']}, {s['input_size']}x{s['input_size']}, median of {s['repeats']} x "
           f"{s['steps']} steps after {s['warmup']} warm-up; {rep['machine']['cpus']} CPUs "
           f"({rep['machine'].get('cpu_flags') or rep['machine']['cpu']}), load average before {rep['load_before']}, "
           f"after {rep['load_after']}.",
           "",
           "oneDNN as dispatched (`ONEDNN_VERBOSE=1` / `DNNL_VERBOSE=1`, one forward of ours): " + "; ".join(
               f"{n}: {r['isa']}" for n, r in rep["backends"].items() if r.get("isa")) + ".",
           "",
           f"FLOPs per training example: {f['train_flops'] / 1e9:.3f} GFLOP "
           f"({f['forward_macs']:,} forward MACs; {FLOP_CONVENTION}). " + (
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
           markdown_table(["backend", "version", "book", "ours eager", "ours fast", "ours/book",
                             "fast/eager", "GFLOP/s", "of roofline", "book of roofline"], rows),
           "",
           "Inference (examples/s), peak memory (max RSS of the process, MiB), first step (s):",
           "",
           markdown_table(["backend", "book", "ours eager", "ours fast", "ours/book", "RSS book",
                             "RSS eager", "RSS fast", "1st step book", "1st step fast"], inf_rows)]
    opt_rows = []
    for name, r in rep["backends"].items():
        for c, o in (r.get("opt_in") or {}).items():
            rc = r["configs"][c]
            if rc.get("status") != "ok":
                why = rc.get("reason") or rc.get("error") or ""
                opt_rows.append([f"{name} `{c}`", f"{rc.get('status', '')}: {why[:100]}"] + [""] * 6)
                continue
            opt_rows.append([f"{name} `{c}`", fmt(rc["train_ex_s"]), fmt(o["ratio_train"], 2, suffix="x"),
                             fmt(o["gain_train"], 2, suffix="x"), fmt(rc.get("roofline_fraction"), pct=True),
                             fmt(rc["infer_ex_s"]), fmt(o["gain_infer"], 2, suffix="x"),
                             fmt(rc["peak_rss_mb"], 0)])
    if opt_rows:
        out += ["", "Extra configurations (`book-env`: the book's code with our settings; `shipped`: ours with the "
                      "framework's shipped settings; `bf16`: ours, fast, `--amp bf16`; training and inference "
                      "examples/s):", "",
                markdown_table(["backend, path", "train", "/book", "/eager", "of roofline", "inference",
                                  "/eager", "RSS"], opt_rows)]
    out += zoo_table(rep)
    out += stage_table(rep)
    p = rep.get("pipeline")
    if p and p.get("status") == "ok":
        out += ["", f"Data pipeline ({p['backend']}, common.train.loop.fit + Loader, {p['examples']} generated "
                    f"examples, second epoch): compute-only {p['compute_ex_s']:.1f}, end-to-end "
                    f"{p['end_to_end_ex_s']:.1f} examples/s ({100 * p['end_to_end_over_compute']:.0f} %; "
                    f"within 10 %: {'yes' if p['within_10pct'] else 'NO'})."]
    t = rep["targets"]
    lines = []
    for name, v in t.items():
        if isinstance(v, dict) and "ratio_met" in v:
            lines.append(f"- {name}: ours/book {fmt(v['ratio'], 2, suffix='x')} "
                         f"({_met(v['ratio_met'])} >= {TARGET_RATIO}x), "
                         f"{fmt(v['roofline_fraction'], pct=True)} of roofline "
                         f"({_met(v['roofline_met'])} >= {TARGET_ROOFLINE:.0%})")
    lines.append(f"- best: {fmt(t['best_roofline_fraction'], pct=True)} of roofline "
                 f"({_met(t['best_roofline_met'])} >= {TARGET_BEST_ROOFLINE:.0%})")
    for name, v in (t.get("settings_gain") or {}).items():
        lines.append(f"- {name}: ours fast / ours with the framework's shipped settings "
                     f"{fmt(v['gain'], 2, suffix='x')} ({_met(v['met'])} >= {v['target']}x)")
    for name, r in rep["backends"].items():
        if (r.get("configs") or {}).get("bf16", {}).get("status") == "ok":
            lines.append(f"- {name}: bf16 / float32 (fast path) training {fmt(r['bf16_gain_train'], 2, suffix='x')}, "
                         f"inference {fmt(r['bf16_gain_infer'], 2, suffix='x')} (goal >= 1.5x training where the "
                         f"CPU has bf16 arithmetic)")
    for key, v in (t.get("zoo") or {}).items():
        lines.append(f"- {key}: ours/zoo training {fmt(v['ratio_train'], 2, suffix='x')}, inference "
                     f"{fmt(v['ratio_infer'], 2, suffix='x')} ({_met(v['met'])} >= {v['target']}x both)")
    m = t.get("memory")
    if m:
        lines.append(f"- peak training memory, {m['backend']} / {m['against']} (fast paths): "
                     f"{fmt(m['ratio'], 2, suffix='x')} ({_met(m['met'])} <= {m['limit']}x)")
    out += ["", "Targets:", ""] + lines
    return "\n".join(out) + "\n"


def zoo_table(rep) -> List[str]:
    """Each framework's own zoo model against ours of the same preset, same size and batch."""
    rows = []
    for name, r in rep["backends"].items():
        for zname, pair in (r.get("zoo") or {}).items():
            z, o = pair.get("zoo", {}), pair.get("ours", {})
            bad = [f"{k}: {x.get('status')}: {(x.get('reason') or x.get('error') or '')[:90]}"
                   for k, x in (("zoo", z), ("ours", o)) if x.get("status") != "ok"]
            rounds = f", median of {pair['rounds']} rounds" if pair.get("rounds", 1) > 1 else ""
            rows.append([name, f"{zname} / `{pair['preset']}`", f"{pair['input_size']}, {pair['batch_size']}{rounds}",
                         fmt(z.get("train_ex_s"), 2), fmt(o.get("train_ex_s"), 2),
                         fmt(pair.get("ratio_train"), 2, suffix="x"), fmt(z.get("infer_ex_s"), 2),
                         fmt(o.get("infer_ex_s"), 2), fmt(pair.get("ratio_infer"), 2, suffix="x"),
                         "; ".join(bad) or z.get("what", "")])
    if not rows:
        return []
    return ["", "The frameworks' own zoo models against ours (the preset that reproduces each; same input "
                "size, batch and precision, float32; examples/s):", "",
            markdown_table(["backend", "zoo model / our preset", "size, batch", "zoo train", "ours train",
                            "ours/zoo", "zoo infer", "ours infer", "ours/zoo", "zoo model as run"], rows,
                           "llrrrrrrrl")]


def stage_table(rep) -> List[str]:
    """Where each backend's forward time goes, stage by stage, with the GFLOP/s reached."""
    names = [n for n, r in rep["backends"].items() if (r.get("stages") or {}).get("status") == "ok"]
    if not names:
        return []
    stages = list(rep["backends"][names[0]]["stages"]["stages"])
    rows = []
    for st in stages:
        cells = [st]
        for n in names:
            s = rep["backends"][n]["stages"]["stages"].get(st, {})
            cells.append(f"{fmt(s.get('ms'), 1)} ms, {fmt(s.get('gflops'), 0)}")
        rows.append(cells)
    peak = rep.get("roofline", {}).get("peak_gflops")
    return ["", f"Forward time per stage (ours, fast path, evaluation mode, batch {rep['settings']['batch_size']}): "
                f"milliseconds and GFLOP/s reached (matrix-multiply peak of this run: {fmt(peak, 0)} GFLOP/s):", "",
            markdown_table(["stage"] + names, rows)]


def _met(v):
    return "—" if v is None else ("met" if v else "MISSED")




# --------------------------------------------------------------------------- inference latency
def percentile(xs: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``xs``, linear interpolation (NumPy's default)."""
    return float(np.percentile(np.asarray(xs, np.float64), q))


def latency(fn: Callable[[], object], calls: int, warmup: int = 3, clock=time.perf_counter) -> Dict:
    """Per-call latency of ``fn`` (which must synchronise, e.g. return NumPy): ``warmup``
    untimed calls, then ``calls`` timed one by one; p50, p99 and mean in milliseconds."""
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(calls):
        t0 = clock()
        fn()
        runs.append(1000.0 * (clock() - t0))
    return dict(p50_ms=percentile(runs, 50), p99_ms=percentile(runs, 99), mean_ms=float(np.mean(runs)),
                calls=calls, runs_ms=runs)


def throughput(fn: Callable[[], object], batch_size: int, repeats: int, warmup: int = 1) -> Dict:
    """Examples/s of ``fn`` on one batch: ``warmup`` untimed calls, then the median of
    ``repeats`` timed calls."""
    for _ in range(warmup):
        fn()
    runs = time_repeats(fn, 1, repeats, batch_size)
    return dict(ex_s=median(runs), runs=runs, batch_size=batch_size)


def inference_tables(rep) -> str:
    """The markdown report of ``scripts/bench.py --inference``: per framework, eager and each
    serving runtime, batch-1 latency and batch-N throughput, and the ratio to eager."""
    s = rep["settings"]
    rows = []
    for name, r in rep["backends"].items():
        if r.get("status") == "skipped":
            rows.append([name, f"skipped: {r.get('reason', '')}"] + [""] * 7)
            continue
        eager = r.get("runtimes", {}).get("eager", {})
        for runtime, x in r.get("runtimes", {}).items():
            if x.get("status") != "ok":
                rows.append([name, runtime, f"failed: {x.get('error', '')[:80]}"] + [""] * 6)
                continue
            rows.append([name, runtime if runtime == "eager" else f"{runtime} ({x.get('loader', '')})",
                         fmt(x["latency"]["p50_ms"], 2), fmt(x["latency"]["p99_ms"], 2),
                         fmt(ratio(eager.get("latency", {}).get("p50_ms"), x["latency"]["p50_ms"]), 2, suffix="x"),
                         fmt(x["throughput"]["ex_s"]),
                         fmt(ratio(x["throughput"]["ex_s"], eager.get("throughput", {}).get("ex_s")), 2, suffix="x"),
                         fmt(x.get("load_s"), 1), fmt(x.get("peak_rss_mb"), 0)])
    head = (f"Batch-1 latency over {s['latency_calls']} calls after {s['warmup']} warm-up; batch "
            f"{s['batch_size']} throughput, median of {s['repeats']}; {s['input_size']}x{s['input_size']} "
            f"input; {rep['machine']['cpus']} CPUs ({rep['machine'].get('cpu_flags') or rep['machine']['cpu']}), "
            f"load average before "
            f"{rep['load_before']}, after {rep['load_after']}.")
    table = markdown_table(["framework", "runtime", "b1 p50 ms", "b1 p99 ms", "p50 speed-up vs eager",
                            f"b{s['batch_size']} ex/s", "vs eager", "load s", "RSS MiB"], rows, "llrrrrrrr")
    return head + "\n\n" + table + "\n" + int8_lines(rep)


def int8_lines(rep) -> str:
    """int8 against float32 ONNX, per framework's exporter (``--inference --int8``)."""
    lines = []
    for name, r in rep["backends"].items():
        rt = r.get("runtimes", {})
        f, q = rt.get("onnx", {}), rt.get("onnx-int8", {})
        if f.get("status") == "ok" and q.get("status") == "ok":
            lines.append(f"- {name}'s exporter: int8 batch-1 p50 {fmt(q['latency']['p50_ms'], 2)} ms against "
                         f"float32 {fmt(f['latency']['p50_ms'], 2)} ms: "
                         f"**{fmt(ratio(f['latency']['p50_ms'], q['latency']['p50_ms']), 2, suffix='x')}**; batch "
                         f"{q['throughput']['batch_size']} {fmt(q['throughput']['ex_s'])} against "
                         f"{fmt(f['throughput']['ex_s'])} ex/s: "
                         f"{fmt(ratio(q['throughput']['ex_s'], f['throughput']['ex_s']), 2, suffix='x')}")
    return ("\nint8 ONNX against float32 ONNX (ONNX Runtime, same exporter):\n\n" + "\n".join(lines) + "\n"
            if lines else "")


def write_report(out_dir, stem, title, rep, md) -> str:
    """Write ``<stem>.json`` (``rep``) and ``<stem>.md`` (``md`` under a title line) into
    ``out_dir``, print the tables and where they went; return the Markdown file's path."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{stem}.json"), "w") as f:
        json.dump(rep, f, indent=2)
    with open(os.path.join(out_dir, f"{stem}.md"), "w") as f:
        f.write(f"# {title}, {rep['time']}\n\n`{rep['command']}`\n\n" + md)
    print()
    print(md)
    print(f"wrote {os.path.join(out_dir, stem + '.json')} and {stem}.md")
    return os.path.join(out_dir, f"{stem}.md")

