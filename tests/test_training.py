"""The training loop on every backend: it learns, it resumes exactly, it stops on NaN."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from common.inputs import data as D
from common.net.spec import Conv, Dense, Flatten, GlobalAvgPool, Inception, MaxPool, Spec, stage
from common.train.loop import NonFiniteLoss, find_checkpoint, fit
from common.train.train_config import Recipe
from tests.datagen import make_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32


def small_spec():
    """A user-written table with every kind of the book's layers (conv, max pool, Inception,
    global pool, dense), small enough to learn in a few dozen steps on every backend."""
    return Spec("smoke", 1, SIZE, (
        stage("s1", Conv(16, 3, 1, 1), MaxPool(3, 2, 1)),
        stage("s2", Inception(8, (8, 16), (4, 8), 8), MaxPool(3, 2, 1)),
        stage("head", GlobalAvgPool(), Flatten(), Dense(10))))


@pytest.fixture(scope="module")
def loaders(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fm")
    os.environ[D.ENV_CACHE] = str(tmp / "cache")
    folder = make_dataset(str(tmp / "data"), n_train=320, n_test=100)
    train, test = D.load_fashion_mnist(folder, SIZE, download_missing=False)
    return D.Loader(train, 32, shuffle=True, seed=0), D.Loader(test, 50)


def test_learns_well_above_chance(bk, loaders, tmp_path):
    net = bk.build(small_spec(), seed=0)
    recipe = Recipe(num_epochs=6, batch_size=32, lr=0.1, momentum=0.9, resize=SIZE)
    rec = fit(bk, net, *loaders, recipe, str(tmp_path), progress=False, log=lambda *a: None)
    assert rec["test_acc"] >= 0.4, rec["history"]          # chance is 0.1 (100 test examples)
    assert rec["history"][-1]["train_loss"] < rec["history"][0]["train_loss"]
    saved = json.load(open(tmp_path / "run.json"))
    assert saved["test_acc"] == rec["test_acc"] and len(saved["history"]) == 6
    assert saved["examples_per_sec_compute"] >= saved["examples_per_sec_end_to_end"] > 0
    assert os.path.exists(tmp_path / "curves.png")


def test_resume_gives_the_same_numbers(bk, loaders, tmp_path):
    recipe = Recipe(num_epochs=2, batch_size=32, lr=0.05, momentum=0.9, resize=SIZE, seed=1)
    quiet = dict(progress=False, log=lambda *a: None)
    straight = bk.build(small_spec(), seed=1)
    a = fit(bk, straight, *loaders, recipe, str(tmp_path / "a"), **quiet)

    first = bk.build(small_spec(), seed=1)
    fit(bk, first, *loaders, recipe, str(tmp_path / "b"), stop_after=1, **quiet)
    assert json.load(open(tmp_path / "b" / "run.json"))["complete"] is False
    resumed = bk.build(small_spec(), seed=7)                  # other weights: the checkpoint wins
    b = fit(bk, resumed, *loaders, recipe, str(tmp_path / "b"), resume=True, **quiet)
    for k in ("train_loss", "train_acc", "test_acc"):
        assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), k
    wa, wb = bk.get_weights(straight), bk.get_weights(resumed)
    for k in wa:
        np.testing.assert_allclose(wa[k], wb[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(bk, loaders, tmp_path):
    net = bk.build(small_spec(), seed=0)
    quiet = dict(progress=False, log=lambda *a: None)
    fit(bk, net, *loaders, Recipe(num_epochs=1, batch_size=32, lr=0.01, resize=SIZE), str(tmp_path), **quiet)
    good = open(os.path.join(find_checkpoint(str(tmp_path)), "weights.npz"), "rb").read()

    class Poisoned(D.Loader):            # the second batch of every epoch holds a NaN pixel
        def epoch(self, epoch=0):
            for i, (X, y) in enumerate(super().epoch(epoch)):
                if i == 1:
                    X = X.copy()
                    X[0, 0, 0, 0] = np.nan
                yield X, y

    train = Poisoned(loaders[0].split, 32, shuffle=True)
    with pytest.raises(NonFiniteLoss, match="epoch 2, step 2.*last good checkpoint is"):
        fit(bk, net, train, loaders[1], Recipe(num_epochs=2, batch_size=32, lr=0.01, resize=SIZE),
            str(tmp_path), resume=True, **quiet)
    assert open(os.path.join(find_checkpoint(str(tmp_path)), "weights.npz"), "rb").read() == good


def test_mxnet_fused_sgd_is_the_sgd_rule():
    """MXNet's momentum-free SGD runs as the fused ``sgd_update``: ``w - lr * rescale * g``
    against a float64 reference.  The float32 result goes through at most three roundings
    (lr*rescale or rescale*g, the product with the other, the subtraction), each within half an
    ulp of its intermediate, so |W - ref| <= 2 eps32 (|w| + |lr rescale g|) bounds it; and the
    update must move the weights (a no-op would fail the bound's complement below)."""
    pytest.importorskip("mxnet")
    from backends import get_backend
    get_backend("mxnet")                                       # numpy semantics on
    import mxnet as mx
    from backends.mxnet.training import TorchSGD
    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 3, 7, 7)).astype(np.float32)
    g = (rng.normal(size=w.shape) * 37).astype(np.float32)
    eps = float(np.finfo(np.float32).eps)
    for lr, rescale in ((0.1, 1 / 32), (0.05, 1 / 7), (0.0123, 1.0)):
        W = mx.np.array(w)
        TorchSGD(learning_rate=lr, rescale_grad=rescale).update(0, W, mx.np.array(g), None)
        step = lr * rescale * g.astype(np.float64)
        ref = w.astype(np.float64) - step
        err = np.abs(W.asnumpy().astype(np.float64) - ref)
        assert (err <= 2 * eps * (np.abs(w) + np.abs(step))).all(), err.max()
        assert np.abs(W.asnumpy() - w).max() > 0.5 * np.abs(step).max()


def _train_cli(*args, env=None):
    return subprocess.run([sys.executable, "scripts/train.py", "--no-progress", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=env)


def test_cli_rejects_too_small_input_before_training(tmp_path):
    out = _train_cli("--preset", "paper", "--resize", "40", "--data-dir", str(tmp_path))
    assert out.returncode != 0 and "smallest input it accepts is 65x65" in out.stderr


def test_cli_offline_without_data_names_the_files(tmp_path):
    env = dict(os.environ, GOOGLENET_DATA=str(tmp_path / "nothing"))
    out = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, '.');"
                          "import common.inputs.data as D; D.MIRRORS = ('http://127.0.0.1:9/',);"
                          "from cli.train import main; sys.exit(main(['--epochs', '1']))"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode != 0
    assert "train-images-idx3-ubyte.gz" in out.stderr and "t10k-labels-idx1-ubyte.gz" in out.stderr


def test_cli_train_resume_and_evaluate(tmp_path):
    pytest.importorskip("torch")
    data = make_dataset(str(tmp_path / "data"), n_train=64, n_test=32)
    env = dict(os.environ, GOOGLENET_CACHE=str(tmp_path / "cache"), GOOGLENET_BACKEND="pytorch")
    run = str(tmp_path / "run")
    common = ["--data-dir", data, "--resize", "32", "--batch-size", "32", "--run-dir", run]
    out = _train_cli(*common, "--epochs", "1", env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "test acc" in out.stdout and "examples/sec on cpu" in out.stdout
    out = _train_cli("--resume", run, "--epochs", "2", env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    rec = json.load(open(os.path.join(run, "run.json")))
    assert rec["epochs_done"] == 2 and rec["complete"] and rec["params"] == 5_977_530
    ev = subprocess.run([sys.executable, "scripts/evaluate.py", os.path.join(run, "checkpoint")],
                        cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert f"test acc {rec['test_acc']:.4f}" in ev.stdout


def test_cli_interrupted_run_resumes(tmp_path):
    """Ctrl-C in the middle of a run, then --resume: it finishes from the last checkpoint."""
    import signal
    import time
    pytest.importorskip("torch")
    data = make_dataset(str(tmp_path / "data"), n_train=256, n_test=32)
    env = dict(os.environ, GOOGLENET_CACHE=str(tmp_path / "cache"), GOOGLENET_BACKEND="pytorch")
    run = str(tmp_path / "run")
    p = subprocess.Popen([sys.executable, "scripts/train.py", "--no-progress", "--data-dir", data,
                          "--resize", "32", "--batch-size", "32", "--epochs", "1000",
                          "--run-dir", run],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while find_checkpoint(run) is None and time.time() < deadline and p.poll() is None:
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode != 0 and f"--resume {run}" in err
    done = json.load(open(os.path.join(run, "run.json")))["epochs_done"]
    assert 1 <= done < 1000
    out = _train_cli("--resume", run, "--epochs", str(done + 1), env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"after epoch {done}" in out.stdout + out.stderr
    assert json.load(open(os.path.join(run, "run.json")))["epochs_done"] == done + 1
