"""Data-parallel training on each framework's own engine: two CPU workers on 127.0.0.1.

For each installed backend:

* three SGD steps with momentum on two workers give, after every step, the float64
  reference's weights for the same global batch within their derived bounds, like the
  single process (tests/numerics.py: the summation order differs, so not bit-exact),
  identical on both workers, with the world size read from the framework; the check would
  fail if the gradients were summed instead of averaged (shown once, below);
* ``scripts/train.py --nproc-per-node 2`` writes the same run folder as one process, with
  ``world_size``, ``engine`` and per-worker throughput in the record, and it resumes with
  another number of workers;
* a killed worker ends the run, within a bounded time, with one ``error:`` line naming
  it and the command to resume; nothing already checkpointed is lost.

Every process talks to 127.0.0.1 only (backends/launch.py), is bounded in time and is
stopped by its process group when the test ends.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from backends import launch
from backends.config import BACKENDS, FRAMEWORK_MODULE
from tests.datagen import make_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LONG = os.environ.get("GOOGLENET_LONG", "") not in ("", "0")
WORKER = os.path.join(ROOT, "tests", "dist_worker.py")
LIMIT = 300                               # seconds any one distributed run may take here


def needs(name):
    pytest.importorskip(FRAMEWORK_MODULE[name])


_single, _reference = {}, []


def reference():
    """The float64 steps of tests/dist_worker.py, with their bounds (tests/numerics.py)."""
    if not _reference:
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        import dist_worker as D
        from common.net import weights as W
        from tests.numerics import Steps
        spec = D.small_spec()
        _reference.append(Steps(spec, W.xavier_init(spec, 3), [D.batch(s) for s in range(D.STEPS)],
                                [0.1] * D.STEPS, momentum=0.9))
    return _reference[0]


def within_reference(saved, what):
    """Every weight after every step within its bound of the float64 reference."""
    from tests.numerics import check
    for step, (weights, bounds) in enumerate(reference().history):
        for k in weights:
            check(saved[f"{step}/{k}"], weights[k], bounds[k], f"{what}, step {step + 1}: {k}")


def single(name, tmp):
    if name not in _single:
        out = os.path.join(tmp, f"single-{name}")
        subprocess.run([sys.executable, WORKER, name, out, "single"], cwd=ROOT, check=True, timeout=LIMIT,
                       capture_output=True)
        _single[name] = dict(np.load(os.path.join(out, "rank0.npz")))
    return _single[name]


@pytest.mark.parametrize("name", BACKENDS)
def test_two_workers_equal_one_process(name, tmp_path, tmp_path_factory):
    needs(name)
    out = str(tmp_path / "dist")
    procs = launch.plan(name, [sys.executable, WORKER, name, out], 2, launch.workdir(str(tmp_path)))
    launch.run(procs, timeout=LIMIT, cwd=ROOT)
    info = [json.load(open(os.path.join(out, f"rank{r}.json"))) for r in (0, 1)]
    assert sorted(i["rank"] for i in info) == [0, 1] and all(i["size"] == 2 for i in info)
    assert info[0]["engine"] == info[1]["engine"] != "single process"
    w0, w1 = (dict(np.load(os.path.join(out, f"rank{r}.npz"))) for r in (0, 1))
    ref = single(name, str(tmp_path_factory.getbasetemp()))
    assert w0.keys() == ref.keys()
    for k in ref:
        np.testing.assert_array_equal(w0[k], w1[k], err_msg=f"workers differ: {k}")
    within_reference(w0, f"{name}, two workers")
    within_reference(ref, f"{name}, one process")


def test_the_check_would_see_summed_gradients():
    """Summing the two workers' gradients instead of averaging them doubles the first update:
    for plain SGD's first step that is twice the learning rate.  Every first-step weight
    tensor would then lie outside its bound of the reference, most by far."""
    needs("pytorch")
    weights, bounds = reference().history[0]
    init = _initial("pytorch")
    far = []
    for k in weights:
        summed = init[k] + 2 * (weights[k] - init[k])              # momentum's first step is plain SGD
        excess = np.abs(summed - weights[k]) / np.maximum(bounds[k], 1e-300)
        assert excess.max() > 1, k                                  # every tensor would fail the check
        far.append(np.median(excess))
    assert np.median(far) > 10


def _initial(name):
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import dist_worker
    from backends import get_backend
    bk = get_backend(name)
    return bk.get_weights(bk.build(dist_worker.small_spec(), seed=3))


# --------------------------------------------------------------------------- through train.py
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist-data")
    return make_dataset(str(tmp / "fm"), n_train=96, n_test=40), str(tmp / "cache")


def train(args, cache, timeout=LIMIT):
    env = dict(os.environ, GOOGLENET_CACHE=cache)
    return subprocess.run([sys.executable, "scripts/train.py", "--no-progress", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


COMMON = ["--resize", "16", "--batch-size", "24", "--lr", "0.05", "--momentum", "0.9"]


#: CI time (#29-#31 added tests): the end-to-end runs and the killed worker run in CI for PyTorch
#: and Paddle; TensorFlow's and MXNet's engines are exercised in CI by the two-worker check above
#: and by tests/test_multinode.py (2 nodes x 1 worker), their end-to-end runs under GOOGLENET_LONG=1
CI_END_TO_END = ("pytorch", "paddle")


def _ci_or_long(name):
    if not LONG and name not in CI_END_TO_END:
        pytest.skip(f"GOOGLENET_LONG=1: the end-to-end distributed runs of {name} (CI runs "
                    f"{', '.join(CI_END_TO_END)}; its engine is checked by the two-worker and two-node checks)")


@pytest.mark.parametrize("name", BACKENDS)
def test_train_py_with_two_workers_and_resume_with_one(name, data, tmp_path):
    needs(name)
    _ci_or_long(name)
    folder, cache = data
    run = str(tmp_path / "run")
    out = train(["--backend", name, "--data-dir", folder, *COMMON, "--epochs", "1", "--nproc-per-node", "2",
                 "--run-dir", run], cache)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rec = json.load(open(os.path.join(run, "run.json")))
    assert rec["world_size"] == 2 and rec["engine"] and rec["engine"] != "single process"
    assert rec["test_acc"] is not None and rec["train_examples"] == 96 and len(rec["worker_examples_per_sec"]) == 2
    assert out.stdout.count("epoch 1:") == 1                      # rank 0 alone prints
    out = train(["--resume", run, "--epochs", "2"], cache)       # one process now
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rec = json.load(open(os.path.join(run, "run.json")))
    assert rec["epochs_done"] == 2 and rec["world_size"] == 1 and "after epoch 1" in out.stdout


#: the family's new members (#26) on two workers, each at the smallest input every backend
#: builds it at (MXNet's ceil-mode pools need torchvision's GoogLeNet at 31 or more; the
#: Inception v3 aux head needs 299, so it is left out there)
MEMBER_OPTIONS = {
    "tv_googlenet": ["--resize", "32"],
    "paddle_googlenet": ["--resize", "61", "--no-aux"],
    "tv_inception_v3": ["--resize", "75", "--no-aux"],
    "keras_inception_v3": ["--resize", "75"],
    "paddle_inception_v3": ["--resize", "75"],
    "gluon_inception_v3": ["--resize", "75"],
}
#: CI trains torchvision's GoogLeNet (batch norm, ceil-mode pools, both aux heads with their
#: adaptive pools and dropout) with PyTorch; GOOGLENET_LONG=1 every member on every backend
MEMBER_RUNS = [(m, b) for m in MEMBER_OPTIONS for b in BACKENDS]
CI_MEMBER_RUNS = {("tv_googlenet", "pytorch")}


@pytest.mark.parametrize("member, name", MEMBER_RUNS, ids=[f"{m}-{b}" for m, b in MEMBER_RUNS])
def test_a_new_member_trains_on_two_workers(member, name, data, tmp_path):
    """``scripts/train.py --preset <member> --nproc-per-node 2``: one epoch on the engine,
    the run record of the member with both workers' throughput, finite weights."""
    if not LONG and (member, name) not in CI_MEMBER_RUNS:
        pytest.skip("GOOGLENET_LONG=1: every new member on every backend")
    needs(name)
    folder, cache = data
    run = str(tmp_path / "run")
    out = train(["--backend", name, "--preset", member, *MEMBER_OPTIONS[member], "--data-dir", folder,
                 "--batch-size", "24", "--lr", "0.01", "--momentum", "0.9", "--epochs", "1", "--nproc-per-node",
                 "2", "--run-dir", run], cache)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rec = json.load(open(os.path.join(run, "run.json")))
    assert rec["model"]["preset"] == member and rec["world_size"] == 2 and rec["engine"] != "single process"
    assert rec["train_examples"] == 96 and len(rec["worker_examples_per_sec"]) == 2
    assert rec["test_acc"] is not None and np.isfinite(rec["train_loss"])
    weights = np.load(os.path.join(run, "checkpoint", "weights.npz"))
    assert all(np.isfinite(weights[k]).all() for k in weights.files)


@pytest.mark.parametrize("name", BACKENDS)
def test_a_killed_worker_ends_the_run(name, data, tmp_path):
    """SIGKILL one worker after the first checkpoint: the launcher stops the others within a
    bounded time and says which worker was lost and how to resume; the checkpoint stays."""
    needs(name)
    _ci_or_long(name)
    folder, cache = data
    run = str(tmp_path / "run")
    env = dict(os.environ, GOOGLENET_CACHE=cache)
    p = subprocess.Popen([sys.executable, "scripts/train.py", "--no-progress", "--backend", name, "--data-dir",
                          folder, *COMMON, "--epochs", "500", "--nproc-per-node", "2", "--run-dir", run],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        deadline = time.time() + LIMIT
        while not os.path.exists(os.path.join(run, "checkpoint")) and time.time() < deadline and p.poll() is None:
            time.sleep(0.5)
        assert p.poll() is None, p.communicate()
        victims = [c for c in _children(p.pid) if "scripts/train.py" in _cmdline(c)]
        assert len(victims) == 2, victims
        os.kill(victims[-1], signal.SIGKILL)
        t0 = time.time()
        _, err = p.communicate(timeout=120)
        assert time.time() - t0 < 90
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert p.returncode == 1
    lines = [l for l in err.strip().splitlines() if l.startswith("error: ")]
    assert lines and "was killed by SIGKILL" in lines[-1] and f"--resume {run}" in lines[-1], err[-3000:]
    assert os.path.exists(os.path.join(run, "checkpoint", "weights.npz"))
    assert not [c for c in _children(p.pid)]                      # nothing left running


def _children(pid):
    """Every descendant of ``pid`` (from /proc)."""
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                if ppid == parent:
                    out.append(int(entry))
                    todo.append(int(entry))
    return out


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline") as f:
            return f.read().replace("\0", " ")
    except OSError:
        return ""


def isolated():
    """A command prefix that runs in a network namespace of its own with only loopback up
    (nothing can leave the machine, whatever a launcher resolves), or None where the
    machine does not allow it."""
    import shutil
    if not shutil.which("unshare") or not shutil.which("ip"):
        return None
    probe = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, timeout=30)
    return ["unshare", "-n", "sh", "-c"] if probe.returncode == 0 else None


def test_torchrun_as_documented(data, tmp_path):
    """``torchrun`` (PyTorch's own launcher) starts scripts/train.py's workers, pinned to
    127.0.0.1 as docs/distributed.md says.  Run in a network namespace with only loopback:
    c10d's TCP store looks up its peer's name (a DNS query where no local name answers),
    which must not leave this machine."""
    needs("pytorch")
    prefix = isolated()
    if prefix is None:
        pytest.skip("needs `unshare -n` (a network namespace) to run torchrun strictly on loopback")
    folder, cache = data
    run = str(tmp_path / "run")
    port = launch.free_ports(1)[0]
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    cmd = (f"ip link set lo up && GOOGLENET_CACHE={cache} {torchrun} --nnodes 1 --nproc-per-node 2 "
           f"--rdzv-backend c10d --rdzv-endpoint 127.0.0.1:{port} --local-addr 127.0.0.1 --max-restarts 0 "
           f"scripts/train.py --no-progress --backend pytorch --data-dir {folder} {' '.join(COMMON)} "
           f"--epochs 1 --run-dir {run}")
    out = subprocess.run(prefix + [cmd], cwd=ROOT, capture_output=True, text=True, timeout=LIMIT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rec = json.load(open(os.path.join(run, "run.json")))
    assert rec["world_size"] == 2 and rec["engine"] == "torch.distributed/gloo" and rec["test_acc"] is not None


def test_the_launcher_blames_the_killed_worker_not_its_aborting_peer():
    """When one look finds several processes ended, the one killed from outside is named,
    not its peer that the engine aborted because of it (Paddle's gloo aborts the survivor)."""
    import signal
    from backends.launch import culprit
    killed, aborted, failed = "killed", "aborted", "failed"
    assert culprit([(aborted, -signal.SIGABRT), (killed, -signal.SIGKILL)])[0] == killed
    assert culprit([(failed, 1), (killed, -signal.SIGTERM)])[0] == killed
    assert culprit([(aborted, -signal.SIGABRT), (failed, 1)])[0] == aborted      # nothing from outside: the first
