"""The side-by-side comparison: report from run records, --from-runs, and a real two-backend run."""
import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from common.results import report as R
from common.net import weights as W
from common.net.spec import get_spec
from tests.datagen import make_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_record(backend, test_acc, train_loss=0.5, epochs=2, **extra):
    """A run record shaped like common.train.loop.fit's."""
    history = [dict(epoch=i + 1, train_loss=train_loss + 0.3 * (epochs - 1 - i), train_acc=0.7 + 0.05 * i,
                    test_loss=0.6, test_acc=test_acc - 0.02 * (epochs - 1 - i), compute_time=2.0,
                    train_time=2.5, examples=64) for i in range(epochs)]
    rec = dict(backend=backend, framework_version="9.9", device="cpu", model=dict(preset="d2l"),
               params=5_977_530, macs_per_example=30_683_136, data_dir="/data", limit=None,
               train_examples=64, test_examples=32, command="scripts/train.py --init-from /w.npz",
               train_loss=history[-1]["train_loss"], train_acc=history[-1]["train_acc"],
               test_acc=test_acc, examples_per_sec_compute=123.456, examples_per_sec_end_to_end=98.765,
               train_time=5.0, recipe=dict(num_epochs=epochs, batch_size=32, lr=0.1, momentum=0.0,
                                           weight_decay=0.0, optimizer="sgd", resize=32, seed=0,
                                           aux_weight=0.3),
               epochs_done=epochs, complete=True, history=history, wall_time_this_call=6.0)
    rec.update(extra)
    return rec


def write_run(folder, record=None, process=None, mtime=None):
    os.makedirs(folder, exist_ok=True)
    if record is not None:
        R.write_json(os.path.join(folder, R.RUN), record)
        if mtime is not None:
            os.utime(os.path.join(folder, R.RUN), (mtime, mtime))
    if process is not None:
        R.write_json(os.path.join(folder, R.PROCESS), process)
    return str(folder)


def table_rows(report_md):
    """The report's results table (its first table) as {backend: {heading: cell}}."""
    text = open(report_md).read().splitlines()
    first = next(i for i, l in enumerate(text) if l.startswith("| "))
    lines = list(itertools.takewhile(lambda l: l.startswith("| "), text[first:]))
    split = lambda l: [c.strip() for c in l.strip("|").split("|")]
    head = split(lines[0])
    return {r[0]: dict(zip(head, r)) for r in map(split, lines[2:])}


def assert_row_matches(row, rec):
    assert row["parameters"] == f"{rec['params']:,}"
    assert row["mult-adds / example"] == f"{rec['macs_per_example']:,}"
    assert row["train loss"] == f"{rec['train_loss']:.4f}"
    assert row["train acc"] == f"{rec['train_acc']:.4f}"
    assert row["test acc"] == f"{rec['test_acc']:.4f}"
    assert row["examples/s compute"] == f"{rec['examples_per_sec_compute']:.1f}"
    assert row["examples/s end-to-end"] == f"{rec['examples_per_sec_end_to_end']:.1f}"
    assert row["framework"] == rec["framework_version"] and row["device"] == rec["device"]


def test_report_from_synthetic_records(tmp_path):
    ok = dict(returncode=0, wall_time=12.34, peak_rss_mib=456.78, init_from="/w.npz")
    recs = {"pytorch": fake_record("pytorch", 0.8125), "mxnet": fake_record("mxnet", 0.75)}
    entries = [R.load_run(write_run(tmp_path / b, r, dict(ok, backend=b))) for b, r in recs.items()]
    entries.append(R.load_run(write_run(tmp_path / "tensorflow", process=dict(
        backend="tensorflow", returncode=1, wall_time=3.0, peak_rss_mib=100.0,
        stderr_tail="Traceback ...\nRuntimeError: out of luck\n"))))
    entries.append(R.entry("paddle", R.NOT_INSTALLED, detail="pip install paddlepaddle"))
    combined = R.combine(entries, command="test")
    path = R.write_report(combined, str(tmp_path / "report"))

    rows = table_rows(path)
    for b, rec in recs.items():
        assert_row_matches(rows[b], rec)
        assert rows[b]["peak memory (MiB)"] == "456.8" and rows[b]["wall time (s)"] == "12.3"
        assert rows[b]["status"] == "ok"
    assert rows["tensorflow"]["status"] == "failed (exit 1)" and rows["tensorflow"]["test acc"] == "—"
    assert rows["paddle"]["status"] == "not installed"
    text = open(path).read()
    assert "6.25 points, pytorch (0.8125) vs mxnet (0.7500)" in text
    assert "RuntimeError: out of luck" in text and "pip install paddlepaddle" in text
    assert "Why they differ" in text and "summation order" in text
    assert combined["succeeded"] == ["pytorch", "mxnet"] and combined["differences"] == []
    for name in ("curves.png", "throughput.png", "combined.json"):
        assert os.path.getsize(tmp_path / "report" / name) > 0
    saved = json.load(open(tmp_path / "report" / "combined.json"))
    assert saved["largest_gap"]["pair"] == ["pytorch", "mxnet"]
    assert saved["backends"][0]["record"]["test_acc"] == 0.8125


def test_largest_gap_is_the_widest_pair():
    accs = dict(pytorch=0.80, mxnet=0.7950, tensorflow=0.8230, paddle=0.81)
    entries = [R.entry(b, R.OK, record=fake_record(b, a)) for b, a in accs.items()]
    entries.append(R.entry("broken", R.FAILED, record=fake_record("broken", 0.1)))  # not counted
    gap = R.largest_gap(entries)
    assert gap["pair"] == ["tensorflow", "mxnet"] and gap["points"] == pytest.approx(2.8)
    assert R.largest_gap(entries[:1]) is None


def test_differences_are_noted():
    entries = [R.entry("pytorch", R.OK, record=fake_record("pytorch", 0.8)),
               R.entry("mxnet", R.OK, record=fake_record("mxnet", 0.8, limit=32, command="train.py"))]
    diff = R.differences(entries)
    assert any(d.startswith("limit differs") for d in diff)
    assert any("initial weights" in d for d in diff)


def test_runs_without_a_weight_file_start_from_the_same_recipe_weights():
    """train.py without --init-from builds with xavier_init(recipe seed): the same arrays on
    every backend, so the report says so; another seed is another start, and is noted."""
    runs = [R.entry(b, R.OK, record=fake_record(b, 0.8, command="scripts/train.py"))
            for b in ("pytorch", "paddle")]
    assert R.differences(runs) == []
    text = R.markdown(R.combine(runs))
    assert ("initial weights: the recipe's Xavier-uniform initialisation, seed 0 "
            "(the same arrays on every backend)") in text
    assert "CPU and its instruction-set flags: not recorded" in text           # these records have no cpu
    runs[0]["record"]["cpu"] = runs[1]["record"]["cpu"] = "Some CPU; avx2 fma avx512f"
    assert "CPU and its instruction-set flags: Some CPU; avx2 fma avx512f\n" in R.markdown(R.combine(runs)) + "\n"
    other = fake_record("mxnet", 0.8, command="scripts/train.py")
    other["recipe"] = dict(other["recipe"], seed=1)
    diff = R.differences(runs + [R.entry("mxnet", R.OK, record=other)])
    assert any(d.startswith("initial weights differ") and "mxnet the recipe's Xavier-uniform "
               "initialisation, seed 1" in d for d in diff)
    assert "the same arrays" not in R.markdown(R.combine(runs + [R.entry("mxnet", R.OK, record=other)]))


def _compare(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "scripts/compare.py", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_from_runs_takes_the_newest_per_backend(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs / "pytorch-old", fake_record("pytorch", 0.5), mtime=1_000_000)
    write_run(runs / "pytorch-new", fake_record("pytorch", 0.75), mtime=2_000_000)
    write_run(runs / "deeper" / "mxnet", fake_record("mxnet", 0.6875))
    write_run(runs / "tf", fake_record("tensorflow", 0.1))                  # filtered out
    out = _compare("--from-runs", str(runs), "--backends", "pytorch,mx,paddle", "--out", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    report = str(tmp_path / "r" / "report.md")
    assert f"report {report}" in out.stdout and "| pytorch |" in out.stdout
    rows = table_rows(report)
    assert list(rows) == ["pytorch", "mxnet", "paddle"]
    assert_row_matches(rows["pytorch"], fake_record("pytorch", 0.75))
    assert rows["paddle"]["status"] == R.MISSING
    assert rows["pytorch"]["wall time (s)"] == "—"             # no process.json: not measured
    text = open(report).read()
    assert "pytorch: 2 run records" in text and "pytorch-new" in text
    assert "6.25 points, pytorch (0.7500) vs mxnet (0.6875)" in text

    nothing = _compare("--from-runs", str(tmp_path / "empty"), "--out", str(tmp_path / "r2"))
    assert nothing.returncode == 1


def test_compare_two_backends_end_to_end(tmp_path):
    for module in ("torch", "mxnet"):
        pytest.importorskip(module)
    data = make_dataset(str(tmp_path / "data"), n_train=64, n_test=32)
    env = dict(os.environ, GOOGLENET_CACHE=str(tmp_path / "cache"))
    out_dir = tmp_path / "report"
    out = _compare("--backends", "pytorch,mxnet", "--data-dir", data, "--resize", "32",
                   "--batch-size", "32", "--epochs", "1", "--out", str(out_dir), env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = table_rows(out_dir / "report.md")
    init = str(out_dir / "init-weights.npz")
    recs = {}
    for b in ("pytorch", "mxnet"):
        run = out_dir / "runs" / b
        recs[b] = rec = json.load(open(run / "run.json"))
        proc = json.load(open(run / "process.json"))
        assert proc["returncode"] == 0 and rows[b]["status"] == "ok", proc["stderr_tail"]
        assert_row_matches(rows[b], rec)
        assert rows[b]["peak memory (MiB)"] == f"{proc['peak_rss_mib']:.1f}" and proc["peak_rss_mib"] > 50
        assert proc["init_from"] == init and f"--init-from {init}" in rec["command"]
        assert rec["recipe"]["resize"] == 32 and rec["train_examples"] == 64
    spec = get_spec("d2l", in_channels=1, num_classes=10, input_size=32)
    weights, meta = W.load(init, with_meta=True)
    expected = W.xavier_init(spec, 0, 32)
    assert meta["seed"] == 0 and all(np.array_equal(weights[k], expected[k]) for k in expected)
    # Same start, same batches: after two SGD steps the losses agree to rounding.
    assert recs["pytorch"]["train_loss"] == pytest.approx(recs["mxnet"]["train_loss"], rel=1e-4)
    assert (out_dir / "curves.png").exists() and (out_dir / "combined.json").exists()
    # One TensorBoard log directory: the report's folder, the runs named by their folders
    # (read with TensorBoard's own multi-run loader, what one tensorboard process uses).
    assert f"tensorboard --logdir {out_dir} --host 127.0.0.1" in out.stdout
    assert f"tensorboard --logdir {out_dir}" in open(out_dir / "report.md").read()
    mux_module = pytest.importorskip("tensorboard.backend.event_processing.event_multiplexer")
    mux = mux_module.EventMultiplexer().AddRunsFromDirectory(str(out_dir)).Reload()
    assert sorted(mux.Runs()) == ["runs/mxnet", "runs/pytorch"]
    for b, rec in recs.items():          # float32 in the event file: within half an ulp
        assert [e.value for e in mux.Scalars(f"runs/{b}", "epoch/test_acc")] == pytest.approx(
            [rec["test_acc"]], rel=2 ** -24)


def test_seed_summary_and_the_noise_verdict():
    """Mean, std (n - 1) and range per backend; the verdict compares the largest gap between
    means with the largest range of one backend over the seeds."""
    def by_seed(accs):
        return {s: [R.entry(b, R.OK, record=fake_record(b, a[i])) for b, a in accs.items()]
                for i, s in enumerate((0, 1, 2))}
    noisy = R.seed_summary(by_seed(dict(pytorch=(0.80, 0.84, 0.82), mxnet=(0.81, 0.79, 0.83))))
    r = noisy["backends"]["pytorch"]
    assert r["mean"] == pytest.approx(0.82) and r["std"] == pytest.approx(0.02) and r["range"] == pytest.approx(0.04)
    assert noisy["largest_gap"]["pair"] == ["pytorch", "mxnet"]
    assert noisy["largest_gap"]["points"] == pytest.approx(1.0)
    assert noisy["spread"]["points"] == pytest.approx(4.0) and "smaller" in noisy["verdict"]
    real = R.seed_summary(by_seed(dict(pytorch=(0.80, 0.81, 0.80), mxnet=(0.70, 0.71, 0.705))))
    assert "LARGER" in real["verdict"]
    assert real["largest_gap"]["points"] == pytest.approx(100 * ((0.80 + 0.81 + 0.80) / 3 - 0.705))
    lines = R.seeds_markdown(real)
    assert any(l.startswith("| pytorch | 0.8000 | 0.8100 | 0.8000 | 0.8033 ± 0.0058") for l in lines)


def test_report_draws_per_step_curves(tmp_path):
    recs = {b: fake_record(b, 0.8, steps=[[2.3 - 0.01 * k - (0.001 if b == "mxnet" else 0), 0.1, 0.1]
                                           for k in range(30)]) for b in ("pytorch", "mxnet")}
    combined = R.combine([R.entry(b, R.OK, record=r) for b, r in recs.items()])
    path = R.write_report(combined, str(tmp_path))
    assert os.path.getsize(tmp_path / "steps.png") > 0 and "![per-step training loss](steps.png)" in open(path).read()


def test_compare_over_seeds_on_an_image_folder(tmp_path):
    """--seeds 2 on a generated image folder: every backend trains with both seeds, each seed
    with its own shared initial weights; the report has mean ± std and the verdict."""
    for module in ("torch", "mxnet"):
        pytest.importorskip(module)
    from tests.datagen import make_image_folder
    folder = make_image_folder(str(tmp_path / "pics"), n_classes=3, n_train=6, n_test=3)
    env = dict(os.environ, GOOGLENET_CACHE=str(tmp_path / "cache"))
    out_dir = tmp_path / "report"
    out = _compare("--backends", "pytorch,mxnet", "--dataset", "folder", "--data-dir", folder, "--resize", "32",
                   "--batch-size", "9", "--epochs", "1", "--seeds", "2", "--seed", "4", "--out", str(out_dir),
                   env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    saved = json.load(open(out_dir / "combined.json"))
    assert saved["seeds"]["seeds"] == [4, 5] and saved["seeds"]["verdict"]
    for seed in (4, 5):
        init, meta = W.load(str(out_dir / f"seed-{seed}" / "init-weights.npz"), with_meta=True)
        assert meta["seed"] == seed
        for b in ("pytorch", "mxnet"):
            rec = json.load(open(out_dir / f"seed-{seed}" / "runs" / b / "run.json"))
            assert rec["recipe"]["seed"] == seed and rec["model"]["num_classes"] == 3
            assert saved["seeds"]["backends"][b]["test_acc"][str(seed)] == rec["test_acc"]
    assert "## Over seeds" in open(out_dir / "report.md").read() and "mean ± std" in out.stdout


def test_per_epoch_table_and_time_to_target(tmp_path):
    recs = {"pytorch": fake_record("pytorch", 0.86, epochs=3), "mxnet": fake_record("mxnet", 0.84, epochs=3)}
    entries = [R.entry(b, R.OK, record=r) for b, r in recs.items()]
    combined = R.combine(entries, command="test")
    combined["target_acc"] = 0.85
    text = open(R.write_report(combined, str(tmp_path / "r"))).read()
    # pytorch's accuracies are 0.82, 0.84, 0.86: it first reaches 0.85 in epoch 3, after 3 x 2.5 s
    assert R.time_to(recs["pytorch"]["history"], 0.85) == dict(epoch=3, seconds=7.5)
    assert R.time_to(recs["mxnet"]["history"], 0.85) is None
    assert "| 2 | 0.8400 | 0.8200 |" in text
    assert "| first ≥ 0.85 | epoch 3, 8 s | not reached |" in text


def test_a_recipe_field_newer_than_a_record_is_its_default():
    """A run recorded before a recipe field existed (no ``amp``) trained with its default
    (float32): not a difference; a different value is."""
    from common.train.train_config import Recipe
    recipe = Recipe(num_epochs=2).to_dict()
    old = {k: v for k, v in recipe.items() if k != "amp"}
    rec = lambda b, r: dict(fake_record(b, 0.8), recipe=r)                 # noqa: E731
    same = [R.entry("pytorch", R.OK, record=rec("pytorch", old)),
            R.entry("mxnet", R.OK, record=rec("mxnet", recipe))]
    assert not any(d.startswith("recipe differs") for d in R.differences(same))
    other = [same[0], R.entry("mxnet", R.OK, record=rec("mxnet", dict(recipe, amp="bf16")))]
    assert any(d.startswith("recipe differs") for d in R.differences(other))
