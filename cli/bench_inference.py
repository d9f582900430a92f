"""``scripts/bench.py --inference``: batch-1 latency and batch-N throughput of every serving
runtime against the eager model, per framework, in one run.

The driver exports one model with every backend's exporter (``scripts/export.py --all
OUT --backend B``, one process per backend), then times each runtime in its own worker
process (``scripts/bench.py --inference --worker BACKEND --config eager|FORMAT``), so
that no two frameworks share a process and each worker's peak memory is its own:

* ``eager``: our model, ``bk.forward`` (PyTorch ``no_grad``, TensorFlow eager Keras call,
  Paddle dynamic mode, MXNet not hybridized);
* each serving format of the backend in its runtime (``torch.export``, TorchScript,
  SavedModel, TFLite, Paddle Inference, MXNet ``SymbolBlock``), and the backend's ONNX
  file in ONNX Runtime.

Batch-1 latency: ``--warmup`` untimed calls, then ``--latency-calls`` calls timed one by
one (p50, p99).  Throughput: one batch of ``--batch-size`` examples, ``--repeats`` timed
calls, median.  Each call takes a NumPy batch and returns NumPy logits.  The arithmetic
and the table are in :mod:`common.results.bench`; results in docs/performance.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

from common.results import bench as B
from common.serve import export as X
from common.net import weights as W
from common.net.spec import get_spec
from backends.config import FORMATS, FRAMEWORK_MODULE, canonical, is_installed

from .bench_workers import MARK, _emit
from .errors import UserError
from .main import command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def add_args(p):
    g = p.add_argument_group("inference latency (--inference; docs/performance.md)")
    g.add_argument("--inference", action="store_true",
                   help="measure batch-1 latency and batch throughput of every serving runtime against eager")
    g.add_argument("--source", help="a trained run to export and time (default: the book's net with its "
                                    "initial weights at --input-size)")
    g.add_argument("--latency-calls", type=int, default=200, help="timed batch-1 calls (200)")
    g.add_argument("--throughput-batch", type=int, default=64, help="batch of the throughput figure (64)")
    g.add_argument("--int8", action="store_true",
                   help="also export and time the int8 ONNX model (export.py --int8; needs --source RUN, whose "
                        "training images calibrate it), beside the float32 ONNX model")
    g.add_argument("--artifact", help=argparse.SUPPRESS)
    return p


def quick(args):
    """``--quick``'s inference settings (a smoke test)."""
    args.latency_calls, args.throughput_batch = 5, 8


def settings(args):
    return dict(input_size=args.input_size, latency_calls=args.latency_calls, warmup=args.warmup,
                batch_size=args.throughput_batch, repeats=args.repeats)


# --------------------------------------------------------------------------- workers
def worker(args):
    """One runtime in this process: load it, time it, print one JSON line."""
    import numpy as np
    s = settings(args)
    backend, config = canonical(args.worker), args.config
    try:
        t0 = time.perf_counter()
        if config == "eager":
            from .export import load_net, locate_run
            from .options import get_backend
            bk = get_backend(backend)
            _, ckpt, run, _ = locate_run(args.source)
            net = load_net(bk, run, ckpt)
            predict, loader = (lambda batch: bk.forward(net, batch)), f"{backend} eager"
            c, size = net.spec.in_channels, net.input_size
        else:
            meta = X.read_meta(args.artifact)
            if config in X.ONNX_FORMATS:
                predict, loader = X.onnx_predictor(args.artifact), "ONNX Runtime"
            else:
                from .options import get_backend
                predict, loader = get_backend(backend).export.predictor(args.artifact, config), FORMATS[config].runtime
            c, size = meta["input"]["shape"][1], meta["input"]["shape"][2]
        load_s = time.perf_counter() - t0
        rng = np.random.default_rng(0)
        one = rng.random((1, c, size, size), dtype=np.float32)
        many = rng.random((s["batch_size"], c, size, size), dtype=np.float32)
        res = dict(status="ok", backend=backend, runtime=config, loader=loader, load_s=load_s,
                   latency=B.latency(lambda: predict(one), s["latency_calls"], s["warmup"]),
                   throughput=B.throughput(lambda: predict(many), s["batch_size"], s["repeats"]),
                   peak_rss_mb=B.peak_rss_mb())
    except Exception as e:                                         # reported, not raised
        res = dict(status="failed", error=f"{type(e).__name__}: {e}")
    _emit(res)


def _run(cmd, timeout):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    return p, None


def _worker(args, backend, config, source=None, artifact=None):
    cmd = command("bench") + ["--inference", "--worker", backend, "--config", config,
           "--latency-calls", str(args.latency_calls), "--warmup", str(args.warmup), "--repeats", str(args.repeats),
           "--throughput-batch", str(args.throughput_batch), "--input-size", str(args.input_size)]
    cmd += ["--source", source] if source else []
    cmd += ["--artifact", artifact] if artifact else []
    p, error = _run(cmd, args.timeout)
    if p is None:
        return dict(status="failed", error=error)
    lines = [l for l in p.stdout.splitlines() if l.startswith(MARK)]
    if not lines:
        err = [l for l in p.stderr.splitlines() if l.strip()]
        return dict(status="failed", error=err[-1] if err else f"exit code {p.returncode}")
    return json.loads(lines[-1][len(MARK):])


# --------------------------------------------------------------------------- the driver
def default_source(folder, input_size):
    """A run folder holding the book's net with the recipe's initial weights at ``input_size``."""
    model = dict(preset="d2l", in_channels=1, num_classes=10, input_size=input_size)
    return X.make_run(folder, W.xavier_init(get_spec("d2l"), 0, input_size), model)


def run_inference(args):
    """The whole inference benchmark; returns the report (also written to --out)."""
    s = settings(args)
    names = [canonical(n) for n in args.backends.split(",") if n.strip()]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = os.path.abspath(args.out or os.path.join("reports", f"bench-inference-{stamp}"))
    rep = dict(command=" ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable, ROOT),
                                                          "scripts/bench.py"] + sys.argv[1:]),
               time=datetime.datetime.now().isoformat(timespec="seconds"), machine=B.machine_info(),
               load_before=B.loadavg(), settings=s, backends={})
    print(f"load average {rep['load_before']} on {rep['machine']['cpus']} CPUs", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        source = args.source or default_source(os.path.join(tmp, "run"), s["input_size"])
        if args.source:
            from .export import locate_run
            _, _, run, _ = locate_run(args.source)           # a bad run is one error line, now
            s["input_size"] = int(run["model"]["input_size"])   # the run's size, for the report
        elif args.int8:
            raise UserError("--int8 needs --source RUN: the int8 model is calibrated on the run's training images")
        rep["source"] = os.path.abspath(args.source) if args.source else "the book's net, initial weights"
        exported = os.path.join(tmp, "exported")
        for name in names:
            if not is_installed(name):
                rep["backends"][name] = dict(status="skipped", reason=f"{FRAMEWORK_MODULE[name]} is not installed")
                print(f"{name}: skipped ({rep['backends'][name]['reason']})", flush=True)
                continue
            print(f"{name}: exporting ...", flush=True)
            p, error = _run(command("export") + [source, "--all", exported, "--backend", name, "--no-check"]
                            + (["--int8"] if args.int8 else []), args.timeout)
            artifacts = {}
            for line in (p.stdout.splitlines() if p else []):
                if line.startswith("EXPORT-RESULT "):
                    artifacts = {r["format"]: r["path"] for r in json.loads(line.split(" ", 1)[1])["results"]
                                 if "error" not in r}
            res = dict(status="ok", runtimes={}, export_error=error or (None if p.returncode == 0 else
                                                                         (p.stderr.strip().splitlines() or [""])[-1]))
            order = sorted(artifacts.items(), key=lambda kv: (kv[0] in X.ONNX_FORMATS, kv[0]))   # ONNX last
            for config, artifact in [("eager", None)] + order:
                r = _worker(args, name, config, source=source if config == "eager" else None, artifact=artifact)
                res["runtimes"][config] = r
                if r.get("status") == "ok":
                    print(f"  {config:13s} batch-1 p50 {r['latency']['p50_ms']:8.2f} ms, p99 "
                          f"{r['latency']['p99_ms']:8.2f} ms; batch {s['batch_size']} "
                          f"{r['throughput']['ex_s']:8.1f} ex/s", flush=True)
                else:
                    print(f"  {config}: FAILED: {r.get('error')}", flush=True)
            rep["backends"][name] = res
    rep["load_after"] = B.loadavg()
    md = B.inference_tables(rep)
    B.write_report(out_dir, "bench-inference", "Inference latency", rep, md)
    if not any(r.get("status") == "ok" for r in rep["backends"].values()):
        raise UserError("no backend could be measured (see above)")
    return rep
