"""scripts/bench.py: a smoke run (``--quick``) writes the report with every field; the FLOP
accounting is the oracle's.  No timing is asserted (the machine may be busy)."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from cli.bench import card_targets
from common.results import bench as B
from common.net import oracle

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_flops_convention():
    f = B.flops("d2l", 96)
    assert f["forward_macs"] == oracle.analyze("d2l", 96).macs == 276_066_304
    assert f["forward_flops"] == 2 * f["forward_macs"]
    assert f["train_flops"] == 6 * f["forward_macs"] == 1_656_397_824      # ~1.66 GFLOP


def test_derived_numbers_and_table():
    r = B.derive(dict(train_ex_s=50.0), train_flops=2_000_000_000, peak_gflops=200.0)
    assert r["train_gflops"] == pytest.approx(100.0) and r["roofline_fraction"] == pytest.approx(0.5)
    assert B.ratio(3.0, 2.0) == 1.5 and B.ratio(None, 2.0) is None
    table = B.markdown_table(["a", "b"], [["x", "1"]])
    assert table.splitlines() == ["| a | b |", "| --- | ---: |", "| x | 1 |"]


def test_quick_run_pytorch(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "bench"
    # CI time: the zoo configurations (torchvision's classes beside ours) with GOOGLENET_LONG=1
    long = os.environ.get("GOOGLENET_LONG", "") not in ("", "0")
    p = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench.py"), "--quick",
                        "--backends", "pytorch", "--out", str(out)] + ([] if long else ["--no-zoo"]),
                       capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rep = json.loads((out / "bench.json").read_text())
    assert (out / "bench.md").read_text().count("| pytorch") >= 2

    s = rep["settings"]
    assert rep["flops"]["train_flops"] == 6 * oracle.analyze("d2l", s["input_size"]).macs
    assert rep["flops"]["forward_macs"] == oracle.analyze("d2l", s["input_size"]).macs
    for key in ("command", "time", "machine", "load_before", "load_after", "roofline", "targets",
                "pipeline"):
        assert key in rep, key
    assert rep["roofline"]["peak_gflops"] > 0
    assert rep["roofline"]["roofline_ex_s"] == pytest.approx(
        rep["roofline"]["peak_gflops"] * 1e9 / rep["flops"]["train_flops"])

    bk = rep["backends"]["pytorch"]
    assert bk["status"] == "ok"
    assert set(bk["configs"]) >= {"book", "eager", "fast", "bf16"}          # bf16: opt-in, on by default
    assert bk["bf16_gain_train"] > 0 and bk["bf16_gain_train"] == pytest.approx(
        bk["configs"]["bf16"]["train_ex_s"] / bk["configs"]["fast"]["train_ex_s"])
    from common.runtime import cpu_summary
    assert rep["machine"]["cpu_flags"] == cpu_summary() and cpu_summary() in (out / "bench.md").read_text()
    assert bk["isa"].startswith("oneDNN v") and ": Intel" in bk["isa"]     # what oneDNN dispatched, read back
    for name, c in bk["configs"].items():
        assert c["status"] == "ok", (name, c.get("error"), c.get("traceback"))
        for key in ("train_ex_s", "train_runs", "infer_ex_s", "peak_rss_mb", "train_gflops",
                    "roofline_fraction", "first_step_s", "framework_version"):
            assert key in c, (name, key)
        assert len(c["train_runs"]) == s["repeats"] and c["train_ex_s"] > 0
        assert c["train_gflops"] == pytest.approx(c["train_ex_s"] * rep["flops"]["train_flops"] / 1e9)
    for key in ("ratio_train", "ratio_infer", "fast_gain_train", "fast_gain_infer"):
        assert bk[key] > 0, key
    assert bk["ratio_train"] == pytest.approx(bk["configs"]["fast"]["train_ex_s"]
                                              / bk["configs"]["book"]["train_ex_s"])
    assert rep["pipeline"]["status"] == "ok", rep["pipeline"]
    assert rep["pipeline"]["end_to_end_ex_s"] > 0 and "within_10pct" in rep["pipeline"]
    assert "pytorch" in rep["targets"] and "best_roofline_met" in rep["targets"]


def test_missing_backend_is_skipped(tmp_path, monkeypatch):
    """A backend whose framework is not installed is reported as skipped, not an error."""
    from cli import bench as script
    monkeypatch.setattr(script, "is_installed", lambda name: False)
    monkeypatch.setattr(script, "run_worker", lambda *a, **k: dict(status="failed", error="offline"))
    rep = script.run_benchmark(script.parse_args(["--quick", "--backends", "paddle", "--pipeline-backend",
                                                  "none", "--out", str(tmp_path)]))
    assert rep["backends"]["paddle"]["status"] == "skipped"
    assert json.loads((tmp_path / "bench.json").read_text())["backends"]["paddle"]["status"] == "skipped"


def test_zoo_rounds_report_the_median_of_fresh_processes():
    runs = [dict(status="ok", what="zoo", train_ex_s=t, infer_ex_s=i)
            for t, i in ((3.7, 13.1), (3.5, 12.2), (3.6, 12.9))]
    r = B.over_rounds(runs)
    assert r["train_ex_s"] == 3.6 and r["infer_ex_s"] == 12.9 and r["what"] == "zoo"
    assert r["rounds_train_ex_s"] == [3.7, 3.5, 3.6] and r["rounds_infer_ex_s"] == [13.1, 12.2, 12.9]
    assert B.over_rounds(runs[:1]) is runs[0]                              # one round: unchanged
    bad = dict(status="failed", error="x")
    assert B.over_rounds(runs + [bad]) is bad                             # a failed round is not hidden


def test_latency_and_throughput_arithmetic():
    ticks = iter(range(100))
    clock = lambda: next(ticks) / 1000.0                   # noqa: E731  (every call takes 1 ms)
    lat = B.latency(lambda: None, calls=10, warmup=2, clock=clock)
    assert lat["p50_ms"] == pytest.approx(1.0) and lat["p99_ms"] == pytest.approx(1.0) and lat["calls"] == 10
    assert B.percentile([1, 2, 3, 4, 100], 50) == 3 and B.percentile(range(101), 99) == pytest.approx(99)
    thr = B.throughput(lambda: None, batch_size=64, repeats=3)
    assert thr["ex_s"] > 0 and len(thr["runs"]) == 3


def test_inference_quick_run(tmp_path):
    """scripts/bench.py --inference --quick: eager and every serving runtime of one backend,
    each in its own process, in the report (MXNet: the quickest to export)."""
    modules = {"mxnet": "mxnet", "pytorch": "torch"}
    name = next((b for b in ("mxnet", "pytorch") if importlib.util.find_spec(modules[b])),
                None)
    if name is None:
        pytest.skip("needs mxnet or torch")
    out = tmp_path / "bench"
    p = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench.py"), "--inference", "--quick",
                        "--backends", name, "--out", str(out)], capture_output=True, text=True, timeout=1800,
                       cwd=ROOT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rep = json.loads((out / "bench-inference.json").read_text())
    runtimes = rep["backends"][name]["runtimes"]
    expected = {"eager", *{"mxnet": ("mxnet",), "pytorch": ("torch-export", "torchscript")}[name]}
    if importlib.util.find_spec("onnx") and importlib.util.find_spec("onnxruntime"):
        expected.add("onnx")
    assert set(runtimes) == expected, runtimes
    for r in runtimes.values():
        assert r["status"] == "ok", r
        assert r["latency"]["calls"] == 5 and 0 < r["latency"]["p50_ms"] <= r["latency"]["p99_ms"]
        assert r["throughput"]["batch_size"] == 8 and r["throughput"]["ex_s"] > 0
    md = (out / "bench-inference.md").read_text()
    assert md.count(f"| {name} |") == len(expected) and "b1 p50 ms" in md


def test_targets_settings_gain_and_memory():
    """The issue's two extra targets: Paddle's fast path over the same with the framework's
    shipped settings, and MXNet's peak training memory against PyTorch's."""
    ok = lambda **c: dict(status="ok", ratio_train=1.0, configs=c)           # noqa: E731
    backends = dict(paddle=ok(fast=dict(train_ex_s=36.0, peak_rss_mb=700.0),
                              shipped=dict(train_ex_s=18.0)),
                    mxnet=ok(fast=dict(train_ex_s=50.0, peak_rss_mb=1200.0)),
                    pytorch=ok(fast=dict(train_ex_s=60.0, peak_rss_mb=1000.0)))
    t = B.check_targets(backends, **card_targets())
    assert t["settings_gain"]["paddle"] == dict(gain=2.0, target=1.8, met=True)
    assert t["memory"]["ratio"] == pytest.approx(1.2) and t["memory"]["met"] is True
    backends["paddle"]["configs"]["shipped"]["train_ex_s"] = 24.0          # 1.5x: missed
    backends["mxnet"]["configs"]["fast"]["peak_rss_mb"] = 1600.0            # 1.6x: missed
    t = B.check_targets(backends, **card_targets())
    assert t["settings_gain"]["paddle"]["met"] is False and t["memory"]["met"] is False
    del backends["paddle"]["configs"]["shipped"]
    assert B.check_targets(backends, **card_targets())["settings_gain"]["paddle"]["met"] is None   # not measured


def test_shipped_config_runs_without_our_framework_settings():
    """``shipped`` is our fast path with GOOGLENET_FRAMEWORK_DEFAULTS=0: the worker's backend
    set none of common.runtime's variables; ``fast`` set exactly those for this machine."""
    pytest.importorskip("paddle")
    from cli import bench as script
    from backends.config import CARDS
    from common.runtime import card_env
    args = script.parse_args(["--quick"])
    fast, shipped = (script.run_worker(args, "paddle", c) for c in ("fast", "shipped"))
    assert fast["status"] == "ok" and shipped["status"] == "ok", (fast, shipped)
    assert shipped["settings"]["env"] == {}
    assert fast["settings"]["env"] == {k: v for k, v in card_env(CARDS["paddle"]).items()
                                       if k not in os.environ}


def test_the_book_configuration_runs_without_our_backend():
    """The ``book`` configuration loads the book's code (``backends/<framework>/book.py``) on
    its own: no backend's ``core`` (which sets up the framework) is imported beside it."""
    pytest.importorskip("torch")
    code = ("import sys; from cli.bench_workers import _book; ref, version = _book('pytorch', False); "
            "print(ref.__name__, callable(ref.book_net), callable(ref.to_canonical)); "
            "print(sorted(m for m in sys.modules if m.startswith('backends.') and m.endswith('.core')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines()[-2:] == ["backends.pytorch.book True True", "[]"]
