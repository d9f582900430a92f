"""TensorBoard event files (``common/results/tensorboard.py``) and the offline first run.

The event files are read back with TensorBoard's own reader (``EventAccumulator``), not with
our code: per-epoch values must equal the run record's (``run.json``) on every backend, each
step must appear exactly once after ``--resume`` and after a crash, an MXNet process must
load neither TensorFlow nor torch for its logs, and a first run with no network and an empty
cache must train on the shipped Fashion-MNIST sample and say so.
"""
import gzip
import hashlib
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from common.inputs import data as D
from common.results import tensorboard as T
from common.train.loop import fit
from common.train.train_config import Recipe
from tests.datagen import module_dataset
from tests.test_training import SIZE, small_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = dict(progress=False, log=lambda *a: None)
# float32 (TensorBoard's simple_value) of a float64: within half an ulp, 2**-24 relative
F32 = dict(rel=2 ** -24, abs=0)


def accumulate(logdir):
    """TensorBoard's own reader over a run folder, keeping every event (no sampling)."""
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = ea.EventAccumulator(str(logdir), size_guidance={ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.TENSORS: 0})
    return acc.Reload()


@pytest.fixture(scope="module")
def loaders(tmp_path_factory):
    folder = module_dataset(tmp_path_factory, "tb", n_train=96, n_test=40)
    train, test = D.load_fashion_mnist(folder, SIZE, download_missing=False)
    return D.Loader(train, 32, shuffle=True, seed=0), D.Loader(test, 40)


def test_per_epoch_values_equal_the_run_record(bk, loaders, tmp_path):
    """Every backend: epoch/* at the step that ends each epoch = run.json's history; step/*
    once per step = run.json's steps (rounded there to 5 digits); the settings as text."""
    net = bk.build(small_spec(), seed=0)
    fit(bk, net, *loaders, Recipe(num_epochs=2, batch_size=32, lr=0.05, resize=SIZE), str(tmp_path),
        record=dict(backend=bk.NAME), log_histograms=2, **QUIET)
    rec = json.load(open(tmp_path / "run.json"))
    acc = accumulate(tmp_path)
    assert set(T.STEP_TAGS + T.EPOCH_TAGS) <= set(acc.Tags()["scalars"])
    for key, tag in T.EPOCH_KEYS.items():
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [3, 6]                       # 3 steps per epoch
        for e, h in zip(events, rec["history"]):
            assert e.value == pytest.approx(h[key], **F32), (tag, h["epoch"])
    losses = acc.Scalars("step/train_loss")
    assert [e.step for e in losses] == [1, 2, 3, 4, 5, 6]
    assert [round(e.value, 5) for e in losses] == pytest.approx([s[0] for s in rec["steps"]], abs=1e-5)
    assert [e.value for e in acc.Scalars("step/lr")] == pytest.approx([s[2] for s in rec["steps"]], rel=1e-6)
    hist = acc.Histograms("weights/head.dense1.weight")
    assert [h.step for h in hist] == [2, 4, 6]
    assert hist[-1].histogram_value.num == np.asarray(bk.get_weights(net)["head.dense1.weight"]).size
    text = acc.Tensors("settings/text_summary")[0].tensor_proto.string_val[0].decode()
    assert f"| backend | {bk.NAME} |" in text


def _steps(logdir, tag="step/train_loss"):
    return [e.step for e in accumulate(logdir).Scalars(tag)]


def test_resume_continues_the_curves_once(loaders, tmp_path):
    """A run stopped after epoch 1 and resumed; then one that crashed 2 steps past its last
    checkpoint (those steps' events written, a torn record at the end) and resumed: every
    step and every epoch exactly once, with the resumed run's values."""
    from tests.conftest import backend_or_skip
    bk = backend_or_skip("pytorch")
    recipe = Recipe(num_epochs=2, batch_size=32, lr=0.05, resize=SIZE)
    fit(bk, bk.build(small_spec(), seed=0), *loaders, recipe, str(tmp_path / "a"), stop_after=1, **QUIET)
    fit(bk, bk.build(small_spec(), seed=0), *loaders, recipe, str(tmp_path / "a"), resume=True, **QUIET)
    assert len(T.event_files(str(tmp_path / "a"))) == 2
    assert _steps(tmp_path / "a") == [1, 2, 3, 4, 5, 6]
    assert _steps(tmp_path / "a", "epoch/test_acc") == [3, 6]

    run = str(tmp_path / "b")
    net = bk.build(small_spec(), seed=0)
    real = bk.Trainer.train_step

    class Crash(Exception):
        pass

    calls = []

    def crashing(self, *a, **k):
        calls.append(1)
        if len(calls) == 6:                                  # checkpoint after step 4; steps 5 logged
            raise Crash
        return real(self, *a, **k)

    bk.Trainer.train_step = crashing
    try:
        with pytest.raises(Crash):
            fit(bk, net, *loaders, recipe, run, checkpoint_every=4, **QUIET)
    finally:
        bk.Trainer.train_step = real
    assert _steps(run) == [1, 2, 3, 4, 5]                    # step 5 is past the checkpoint
    with open(T.event_files(run)[-1], "ab") as f:            # a record torn by the crash
        f.write(struct.pack("<Q", 100) + b"\0\0")
    rec = fit(bk, bk.build(small_spec(), seed=0), *loaders, recipe, run, resume=True, **QUIET)
    acc = accumulate(run)
    assert [e.step for e in acc.Scalars("step/train_loss")] == [1, 2, 3, 4, 5, 6]
    assert [round(e.value, 5) for e in acc.Scalars("step/train_loss")] == pytest.approx(
        [s[0] for s in rec["steps"]], abs=1e-5)
    assert [e.step for e in acc.Scalars("epoch/test_acc")] == [3, 6]
    assert [e.value for e in acc.Scalars("epoch/test_acc")] == pytest.approx(
        [h["test_acc"] for h in rec["history"]], **F32)
    assert len(acc.Tensors("settings/text_summary")) == 1


def test_no_tensorboard_writes_no_events(loaders, tmp_path):
    from tests.conftest import backend_or_skip
    bk = backend_or_skip("pytorch")
    fit(bk, bk.build(small_spec(), seed=0), *loaders, Recipe(num_epochs=1, batch_size=32, resize=SIZE),
        str(tmp_path), tensorboard=False, **QUIET)
    assert T.event_files(str(tmp_path)) == [] and os.path.exists(tmp_path / "run.json")


def _offline_env(tmp_path, **extra):
    """No network (the download goes to a closed port on 127.0.0.1), an empty home and cache."""
    env = {k: v for k, v in os.environ.items() if k not in (D.ENV_DATA, D.ENV_CACHE)}
    env.update(HOME=str(tmp_path / "home"), GOOGLENET_MIRRORS="http://127.0.0.1:9/", **extra)
    os.makedirs(env["HOME"])
    return env


def test_mxnet_logs_without_tensorflow_or_torch(tmp_path):
    """An MXNet training process writes its event files and never imports TensorFlow (nor
    torch, which tensorboardX would import if it could); also the offline first run: no data
    folder, the download fails, so it trains on the shipped sample and says so."""
    pytest.importorskip("mxnet")
    run = str(tmp_path / "run")
    code = ("import json, sys; sys.path.insert(0, '.'); from cli.train import main\n"
            f"rc = main(['--backend', 'mxnet', '--no-progress', '--epochs', '1', '--limit', '64', '--resize', "
            f"'32', '--batch-size', '32', '--run-dir', {run!r}])\n"
            "print(json.dumps([rc, sorted(m for m in ('tensorflow', 'torch', 'tensorboard') "
            "if m in sys.modules)]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env=_offline_env(tmp_path, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr[-3000:]
    rc, loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert rc == 0 and loaded == []
    notice = [line for line in out.stdout.splitlines() if line.startswith("note: Fashion-MNIST")]
    assert len(notice) == 1 and D.SAMPLE_DIR in notice[0] and "--no-sample" in notice[0]
    rec = json.load(open(os.path.join(run, "run.json")))
    assert rec["complete"] and rec["dataset"]["sample"] is True and rec["data_dir"] == D.SAMPLE_DIR
    assert rec["test_examples"] == 200 and rec["dataset"]["class_counts"]["test"] == [20] * 10
    assert [e.step for e in accumulate(run).Scalars("epoch/test_acc")] == [2]
    assert accumulate(run).Scalars("epoch/test_acc")[0].value == pytest.approx(rec["test_acc"], **F32)


def test_no_sample_restores_the_error(tmp_path, monkeypatch, capsys):
    from cli.train import main
    for k, v in _offline_env(tmp_path).items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv(D.ENV_DATA, raising=False)
    assert main(["--no-sample", "--epochs", "1", "--run-dir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: Fashion-MNIST is not in") and "t10k-labels-idx1-ubyte.gz" in err
    assert not os.path.exists(tmp_path / "run")


def test_the_sample_is_what_it_says():
    """1,000 + 200 real pictures, balanced, its checksums in the code, SHA256SUMS and the files
    agreeing, the licence beside them, under 1 MB; and a damaged copy is refused."""
    sums = dict(line.split()[::-1] for line in open(os.path.join(D.SAMPLE_DIR, "SHA256SUMS")))
    assert sums == D.SAMPLE_SHA256
    for name, digest in sums.items():
        assert hashlib.sha256(open(os.path.join(D.SAMPLE_DIR, name), "rb").read()).hexdigest() == digest
    train, test = D.load_fashion_mnist(D.SAMPLE_DIR, 28, use_cache=False)
    assert np.bincount(train.labels).tolist() == [100] * 10 and np.bincount(test.labels).tolist() == [20] * 10
    assert train.images.std() > 50            # pictures, not blanks
    size = sum(os.path.getsize(os.path.join(D.SAMPLE_DIR, f)) for f in os.listdir(D.SAMPLE_DIR))
    assert size < 2 ** 20
    assert "Zalando SE" in open(os.path.join(D.SAMPLE_DIR, "LICENSE")).read()
    with gzip.open(os.path.join(D.SAMPLE_DIR, "train-labels-idx1-ubyte.gz")) as f:
        assert f.read()[:8] == bytes([0, 0, 8, 1, 0, 0, 0x03, 0xE8])          # IDX, 1,000 labels


def test_a_damaged_sample_is_refused(tmp_path, monkeypatch):
    import shutil
    copy = tmp_path / "sample"
    shutil.copytree(D.SAMPLE_DIR, copy)
    with open(copy / "t10k-labels-idx1-ubyte.gz", "ab") as f:
        f.write(b"x")
    monkeypatch.setattr(D, "SAMPLE_DIR", str(copy))
    with pytest.raises(D.DataError, match="SHA-256 .* the shipped sample is damaged"):
        D.load_fashion_mnist(str(copy), 28, use_cache=False)


def test_the_wheel_config_ships_the_sample():
    """setuptools' package data names every file of the sample folder."""
    import fnmatch
    try:
        import tomllib
    except ImportError:
        tomllib = pytest.importorskip("tomli")
    conf = tomllib.load(open(os.path.join(ROOT, "pyproject.toml"), "rb"))
    patterns = conf["tool"]["setuptools"]["package-data"]["common.inputs"]
    for f in os.listdir(D.SAMPLE_DIR):
        assert any(fnmatch.fnmatch(f"sample/{f}", p) for p in patterns), f
    assert any(d.startswith("tensorboardX==") for d in conf["project"]["dependencies"])


# --------------------------------------------------------------------------- the report's figures
def test_ema_is_tensorboards_debiased_smoothing():
    """By hand: w = 0.5 over 1, 2, 3: (0.5, 1.25, 2.125) / (0.5, 0.75, 0.875); a constant stays
    itself (the debiasing); weight 0 is the raw series."""
    from common.results import plots
    assert plots.ema([1, 2, 3], 0.5) == pytest.approx([1, 1.25 / 0.75, 2.125 / 0.875])
    assert plots.ema([0.7] * 50, 0.9) == pytest.approx([0.7] * 50)
    assert plots.ema([3, 1, 4], 0) == [3, 1, 4]


def test_noise_band_matches_simulated_smoothed_noise():
    """White noise of sigma 0.1 plus a slow drift: the band is two standard deviations of the
    EMA of the noise, which a simulation measures independently (sigma sqrt((1-w)/(1+w)))."""
    from common.results import plots
    rng = np.random.default_rng(0)
    w, n = 0.9, 20000
    noise = [rng.normal(0, 0.1, n) for _ in range(3)]
    band = plots.noise_band([x + np.linspace(0, 0.5, n) for x in noise], w)
    measured = np.std(np.concatenate([plots.ema(x, w)[100:] for x in noise]))
    assert band == pytest.approx(2 * measured, rel=0.05)        # 60,000 samples: ~1% sampling error


def test_step_figure_has_no_self_difference(tmp_path, monkeypatch):
    from common.results import plots
    drawn = {}
    monkeypatch.setattr(plots, "_save", lambda plt, fig, path, title="": drawn.setdefault("fig", fig))
    noise = np.random.default_rng(0).normal(0, 0.02, (4, 400))
    runs = {b: [[2.3 - 0.001 * k + 0.01 * i + noise[i, k], 0.1, 0.1] for k in range(400)]
            for i, b in enumerate(("mxnet", "paddle", "pytorch", "tensorflow"))}
    plots.step_curves(runs, str(tmp_path / "s.png"))
    left, right = drawn["fig"].axes
    assert [t.get_text() for t in left.get_legend().get_texts()] == list(runs)
    labels = [t.get_text() for t in right.get_legend().get_texts()]
    assert [t for t in labels if " - " in t] == ["paddle - mxnet", "pytorch - mxnet", "tensorflow - mxnet"]
    assert sum(t.startswith("step noise") for t in labels) == 1 and len(labels) == 4
    paddle = [line for line in right.get_lines() if line.get_label() == "paddle - mxnet"][0]
    # the smoothed gap, 0.01: the EMA (w 0.925) of the differences' noise (sigma 0.028) has std 0.0055
    # and a time constant of ~13 steps, so the mean of 200 smoothed steps has std ~0.002
    assert np.mean(paddle.get_ydata()[200:]) == pytest.approx(0.01, abs=0.005)


# --------------------------------------------------------------------------- one TensorBoard for a report
def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(logdir, timeout=120):
    """A real ``tensorboard`` process on 127.0.0.1 over ``logdir``: (process, base address),
    returned once its HTTP API answers."""
    import time
    import urllib.request
    port = free_port()
    cmd = [sys.executable, "-c", "from tensorboard.main import run_main; run_main()", "--logdir", str(logdir),
           "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(base + "/data/runs", timeout=2).read()
            return proc, base
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"tensorboard did not answer on {base}: {proc.communicate()[1][-2000:]}")


def get_json(url, retries=40):
    """The JSON of a TensorBoard API address, once it lists something (it loads in the background)."""
    import time
    import urllib.request
    for _ in range(retries):
        data = json.loads(urllib.request.urlopen(url, timeout=10).read())
        if data:
            return data
        time.sleep(0.5)
    return data


def test_one_tensorboard_overlays_a_reports_runs(tmp_path):
    """A comparison report's folder (runs/<backend>/ with event files, as compare.py leaves it)
    loads in one real ``tensorboard`` process: its HTTP API lists the four runs, each with the
    scalar tags, and serves the values written.  (``tensorboard`` 2.15 imports pkg_resources,
    which setuptools 81 removed: pyproject.toml keeps setuptools < 81.)"""
    pytest.importorskip("tensorboard")
    pytest.importorskip("pkg_resources")
    backends = ("mxnet", "paddle", "pytorch", "tensorflow")
    for i, b in enumerate(backends):
        log = T.EventLog(str(tmp_path / "runs" / b))
        log.settings(dict(backend=b, recipe=dict(lr=0.1)))
        for step in range(1, 11):
            log.step(step, 2.3 - 0.1 * step + 0.01 * i, 0.1, 100.0)
        log.epoch(10, dict(train_loss=1.3, train_acc=0.5, test_loss=1.4, test_acc=0.4 + 0.01 * i))
        log.close()
    proc, base = serve(tmp_path)
    try:
        runs = get_json(base + "/data/runs")
        assert sorted(runs) == [f"runs/{b}" for b in backends]
        tags = get_json(base + "/data/plugin/scalars/tags")
        assert all(set(T.STEP_TAGS + T.EPOCH_TAGS) <= set(tags.get(f"runs/{b}", {})) for b in backends), tags
        for i, b in enumerate(backends):
            rows = get_json(f"{base}/data/plugin/scalars/scalars?run=runs/{b}&tag=epoch/test_acc")
            assert [(r[1], r[2]) for r in rows] == [(10, pytest.approx(0.4 + 0.01 * i, **F32))]
    finally:
        proc.kill()
        proc.wait(timeout=30)
