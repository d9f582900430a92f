"""Bad inputs that used to slip through scripts/train.py, each now answered properly.

* ``--data-dir`` / ``--run-dir`` / ``--resume`` naming a file: one ``error:`` line, not a
  ``FileExistsError`` traceback;
* two runs in one run folder: the second is refused, naming the holder's pid and host; a
  holder that died (SIGKILL) leaves no stuck lock;
* SIGTERM: the run stops at the next step, writes a checkpoint of the epoch in progress
  and says how to resume (exit code 143); the resumed run ends on the very weights of an
  uninterrupted one (bit-exact: PyTorch on the CPU is deterministic here), dropout and
  augmentation included, with a run record without duplicated or missing epochs;
* ``--checkpoint-every N``: a run killed outright (SIGKILL) resumes from the last
  checkpoint inside an epoch, exactly; the loop does the same on every backend;
* an input too small for the auxiliary heads only: the message says so and names --no-aux.

Every process started here is bounded in time and killed by its pid (its process group)
when the test ends.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from common.train import checkpoint
from common.inputs import data as D
from common.net import oracle, spec as S
from common.train.interrupt import Interrupted, StopRequest
from common.train.runlock import FolderInUse, RunLock
from tests.datagen import make_dataset, module_dataset
from tests.test_cli import only_error_line, train      # train.py in this process (PyTorch)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMIT = 180                    # seconds any one process may take
#: one short run of the fast recipe (batch norm, dropout 0.4, shifts and flips, Nesterov,
#: warm-up then cosine): 10 steps per epoch
RUN = ["--backend", "pytorch", "--recipe", "fast", "--resize", "32", "--batch-size", "16",
       "--limit", "160", "--epochs", "2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    pytest.importorskip("torch")
    return module_dataset(tmp_path_factory, "bad-inputs", n_train=160, n_test=32)



class Processes:
    """Processes started by a test, each in its own session, all killed (SIGKILL to the
    process group of each pid) when the test ends."""

    def __init__(self):
        self.started = []

    def start(self, argv, **kwargs):
        p = subprocess.Popen(argv, cwd=ROOT, start_new_session=True, text=True, **kwargs)
        self.started.append(p)
        return p

    def kill_all(self):
        for p in self.started:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            p.wait(timeout=30)


@pytest.fixture
def procs():
    ps = Processes()
    yield ps
    ps.kill_all()


def wait_for(condition, what, timeout=LIMIT, p=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        if p is not None and p.poll() is not None:
            raise AssertionError(f"the process ended (code {p.returncode}) before {what}")
        time.sleep(0.02)
    raise AssertionError(f"no {what} within {timeout} s")


def step_of(run):
    """(epochs finished, steps into the next) of a run's last checkpoint, or None."""
    return checkpoint._order(os.path.join(run, "checkpoint"))


def cli(args, timeout=LIMIT):
    return subprocess.run([sys.executable, "scripts/train.py", "--no-progress", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------- 1. files, not folders
@pytest.mark.parametrize("dataset", ["fashion-mnist", "folder", "cifar10"])
def test_a_data_dir_that_is_a_file_is_one_error_line(dataset, tmp_path, capsys):
    code, out, err = train(["--dataset", dataset, "--data-dir", "/etc/hostname", "--epochs", "1",
                            "--run-dir", str(tmp_path / "run")], capsys)
    assert code == 1
    line = only_error_line(err)
    assert "/etc/hostname is a file, not a folder" in line and "--data-dir" in line
    assert not os.path.exists(tmp_path / "run")


def test_the_data_variable_naming_a_file_is_one_error_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(D.ENV_DATA, "/etc/hostname")
    code, out, err = train(["--epochs", "1", "--run-dir", str(tmp_path / "run")], capsys)
    assert code == 1 and f"${D.ENV_DATA}" in only_error_line(err)


@pytest.mark.parametrize("option", ["--run-dir", "--resume"])
def test_a_run_folder_that_is_a_file_is_one_error_line(option, data, tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("mine\n")
    code, out, err = train(["--data-dir", data, "--epochs", "1", option, str(path)], capsys)
    assert code == 1
    assert f"{option} {path} is a file, not a folder" in only_error_line(err)
    assert path.read_text() == "mine\n"                                   # untouched


# --------------------------------------------------------------------------- 2. one run per folder
HOLDER = ("import sys, time; sys.path.insert(0, '.'); from common.train.runlock import RunLock; "
          "RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(float(sys.argv[2]))")


def test_a_second_run_in_a_held_folder_is_refused_and_a_dead_holder_frees_it(data, tmp_path, capsys, procs):
    run = str(tmp_path / "run")
    small = ["--backend", "pytorch", "--data-dir", data, "--resize", "32", "--batch-size", "32",
             "--limit", "32", "--epochs", "1"]
    code, out, err = train([*small, "--run-dir", run], capsys)
    assert code == 0, err
    before = open(os.path.join(run, "run.json")).read()
    holder = procs.start([sys.executable, "-c", HOLDER, run, str(LIMIT)], stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == "held"
    for args in ([*small, "--run-dir", run], ["--resume", run, "--epochs", "2"]):
        code, out, err = train(args, capsys)
        assert code == 1
        line = only_error_line(err)
        assert f"in use by pid {holder.pid} on host {socket.gethostname()}" in line, line
        assert open(os.path.join(run, "run.json")).read() == before       # nothing touched
    os.kill(holder.pid, signal.SIGKILL)                                  # it crashes: the kernel frees the lock
    holder.wait(timeout=30)
    code, out, err = train(["--resume", run, "--epochs", "2"], capsys)
    assert code == 0, err
    assert json.load(open(os.path.join(run, "run.json")))["epochs_done"] == 2
    with RunLock(run):                                                   # and it let go when it ended
        pass


# --------------------------------------------------------------------------- 3, 4. SIGTERM, --checkpoint-every
@pytest.fixture(scope="module")
def straight(data, tmp_path_factory):
    """The uninterrupted run: (its run folder)."""
    run = str(tmp_path_factory.mktemp("straight") / "run")
    out = cli([*RUN, "--data-dir", data, "--run-dir", run])
    assert out.returncode == 0, out.stderr[-3000:]
    return run


def assert_same_run(run, straight):
    """The same final weights, bit for bit, and a run record with every epoch once."""
    a = np.load(os.path.join(straight, "checkpoint", "weights.npz"))
    b = np.load(os.path.join(run, "checkpoint", "weights.npz"))
    assert a.files == b.files
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    ra, rb = (json.load(open(os.path.join(r, "run.json"))) for r in (straight, run))
    assert [h["epoch"] for h in rb["history"]] == [1, 2] and rb["epochs_done"] == 2 and rb["complete"]
    assert rb["steps_into_epoch"] == 0 and len(rb["steps"]) == 20
    assert rb["steps"] == ra["steps"]
    for ha, hb in zip(ra["history"], rb["history"]):
        for k in ("train_loss", "train_acc", "test_loss", "test_acc", "examples"):
            assert ha[k] == hb[k], (k, ha[k], hb[k])


def test_sigterm_checkpoints_the_epoch_in_progress_and_resume_ends_on_the_same_weights(
        data, straight, tmp_path, procs):
    run = str(tmp_path / "run")
    p = procs.start([sys.executable, "scripts/train.py", *RUN, "--data-dir", data, "--run-dir", run],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(iter(p.stderr.readline, "")), daemon=True)
    reader.start()

    def steps_done():               # the progress bar's lines: "epoch 1/2:  30%|...| 3/10 [...]"
        done = [int(m.group(1)) for l in list(lines) if (m := re.search(r"epoch 1/2.*\| (\d+)/10", l))]
        return bool(done) and max(done) >= 3
    wait_for(steps_done, "three steps of epoch 1", p=p)
    with pytest.raises(FolderInUse, match=f"pid {p.pid} "):              # the run holds its folder
        RunLock(run).acquire()
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=LIMIT)
    reader.join(timeout=30)
    err = "".join(lines)
    assert p.returncode == 143, err[-3000:]
    assert "Traceback" not in err
    epoch, step = step_of(run)
    assert step > 0 and 3 <= 10 * epoch + step < 20                     # inside an epoch, after step 3
    stopped = [l for l in lines if l.startswith("stopped by SIGTERM")]
    assert len(stopped) == 1, err[-3000:]
    assert (f"at epoch {epoch + 1}, step {step}; checkpoint {os.path.join(run, 'checkpoint')} written; "
            f"continue with: python scripts/train.py --resume {run}") in stopped[0]
    rec = json.load(open(os.path.join(run, "run.json")))
    assert rec["epochs_done"] == epoch and rec["steps_into_epoch"] == step
    assert len(rec["steps"]) == 10 * epoch + step
    assert [h["epoch"] for h in rec["history"]] == list(range(1, epoch + 1))
    out = cli(["--resume", run])
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"after epoch {epoch} and {step} steps of epoch {epoch + 1}" in out.stdout
    assert_same_run(run, straight)


def test_checkpoint_every_lets_a_killed_run_resume_inside_the_epoch(data, straight, tmp_path, procs):
    """SIGKILL (nothing can be written on the way out) once a checkpoint inside an epoch
    exists: --resume continues from the last one, exactly."""
    run = str(tmp_path / "run")
    p = procs.start([sys.executable, "scripts/train.py", "--no-progress", *RUN, "--data-dir", data,
                     "--run-dir", run, "--checkpoint-every", "3"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: (step_of(run) or (0, 0))[1] > 0, "checkpoint inside an epoch", p=p)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    epoch, step = step_of(run)
    out = cli(["--resume", run])
    assert out.returncode == 0, out.stderr[-3000:]
    said = f"after epoch {epoch}" + (f" and {step} steps of epoch {epoch + 1}" if step else "")
    assert said in out.stdout
    assert_same_run(run, straight)
    assert json.load(open(os.path.join(run, "run.json")))["checkpoint_every"] == 3


def running_in(run):
    """Pids of the processes whose command line names ``run`` (from /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline") as f:
                if entry.isdigit() and run in f.read().replace("\0", " "):
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def test_sigterm_to_the_launcher_stops_every_worker_at_one_step_with_a_checkpoint(data, tmp_path, procs):
    """--nproc-per-node 2: SIGTERM to the launcher; the workers agree on a step, rank 0 writes
    the checkpoint, the launcher prints the command to resume (with --nproc-per-node), 143."""
    run = str(tmp_path / "run")
    p = procs.start([sys.executable, "scripts/train.py", "--no-progress", "--backend", "pytorch", "--data-dir",
                     data, "--resize", "16", "--batch-size", "16", "--epochs", "50", "--nproc-per-node", "2",
                     "--run-dir", run, "--checkpoint-every", "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: (step_of(run) or (0, 0))[1] > 0, "checkpoint inside an epoch", p=p)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=LIMIT)
    assert p.returncode == 143, err[-3000:]
    assert "Traceback" not in err and "error:" not in err
    assert (f"stopped by SIGTERM; the workers wrote a checkpoint where they stopped; continue with: "
            f"python scripts/train.py --resume {run} --nproc-per-node 2") in err
    epoch, step = step_of(run)
    where = f"epoch {epoch + 1}, step {step}" if step else f"the end of epoch {epoch}"
    assert f"stopped by SIGTERM at {where}; checkpoint" in err          # rank 0, once
    assert err.count("stopped by SIGTERM at") == 1
    assert not running_in(run)                                          # no worker left behind


def test_checkpoint_every_must_be_a_positive_number_of_steps(data, tmp_path, capsys):
    code, out, err = train(["--data-dir", data, "--checkpoint-every", "0", "--run-dir", str(tmp_path / "r")],
                           capsys)
    assert code == 1 and "--checkpoint-every must be at least 1" in only_error_line(err)


def tiny_spec(dropout):
    return S.Spec("tiny", 1, 16, (
        S.stage("s1", S.Conv(8, 3, 1, 1), S.MaxPool(3, 2, 1)),
        S.stage("s2", S.Inception(4, (4, 8), (2, 4), 4), S.GlobalAvgPool(), S.Flatten(),
                *([S.Dropout(0.3)] if dropout else []), S.Dense(10))))


class StopAt(D.Loader):
    """A training loader that asks the loop to stop (as SIGTERM would) once it hands out batch
    ``step`` (1-based) of epoch ``epoch`` (0-based)."""

    def __init__(self, *a, stop=None, at=None, **k):
        super().__init__(*a, **k)
        self.stop, self.at = stop, at

    def epoch(self, epoch=0, start=0):
        for k, batch in enumerate(super().epoch(epoch, start), start + 1):
            if self.stop is not None and (epoch, k) == self.at:
                self.stop.signum = signal.SIGTERM
            yield batch


def test_a_stop_inside_an_epoch_resumes_exactly_on_every_backend(bk, tmp_path):
    """The loop itself, on each backend: stopped after step 3 of epoch 2, resumed, it ends
    where an uninterrupted run ends (dropout too where the backend saves its generator)."""
    from common.train.loop import _set_rng_state, fit
    from common.train.train_config import Recipe
    folder = make_dataset(str(tmp_path / "data"), n_train=96, n_test=24)
    os.environ[D.ENV_CACHE] = str(tmp_path / "cache")
    train_split, test_split = D.load_fashion_mnist(folder, 16, download_missing=False)
    recipe = Recipe(num_epochs=3, batch_size=16, lr=0.05, momentum=0.9, nesterov=True, resize=16, seed=2,
                    schedule="cosine", warmup_epochs=1, crop_padding=2, flip=True)
    dropout = bk.rng_state() is not None           # the backend saves its generator: dropout too
    quiet = dict(progress=False, log=lambda *a: None)

    def loaders(**stop):
        return (StopAt(train_split, 16, shuffle=True, seed=2, augment=recipe.augment(), **stop),
                D.Loader(test_split, 24))
    straight = bk.build(tiny_spec(dropout), seed=2)
    a = fit(bk, straight, *loaders(), recipe, str(tmp_path / "a"), **quiet)
    stop = StopRequest()
    with pytest.raises(Interrupted) as e:
        fit(bk, bk.build(tiny_spec(dropout), seed=2), *loaders(stop=stop, at=(1, 3)), recipe,
            str(tmp_path / "b"), stop=stop, **quiet)
    assert e.value.exit_code == 143 and e.value.where == "epoch 2, step 3"
    assert step_of(str(tmp_path / "b")) == (1, 3)
    with pytest.raises(checkpoint.CheckpointError, match="give --epochs 2 or more"):
        fit(bk, bk.build(tiny_spec(dropout), seed=2), *loaders(), Recipe(**dict(recipe.to_dict(), num_epochs=1)),
            str(tmp_path / "b"), resume=True, **quiet)
    resumed = bk.build(tiny_spec(dropout), seed=7)                 # other weights: the checkpoint wins
    b = fit(bk, resumed, *loaders(), recipe, str(tmp_path / "b"), resume=True, **quiet)
    assert [h["epoch"] for h in b["history"]] == [1, 2, 3] and len(b["steps"]) == 18
    wa, wb = bk.get_weights(straight), bk.get_weights(resumed)
    for k in wa:
        if bk.NAME == "pytorch":
            np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)
        else:                        # as tests/test_training.py's resume after an epoch
            np.testing.assert_allclose(wa[k], wb[k], rtol=1e-5, atol=1e-6, err_msg=k)
    for k in ("train_loss", "train_acc", "test_acc"):
        assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), k
    if not dropout:                  # where it cannot, a resume inside an epoch says what that changes
        said = []
        _set_rng_state(bk, bk.build(tiny_spec(True), seed=2), None, 1, said.append)
        assert len(said) == 1 and "dropout of the rest of epoch 2" in said[0]


# --------------------------------------------------------------------------- 5. aux heads' limit
def test_an_input_too_small_for_the_aux_heads_only_says_so_and_names_no_aux(capsys):
    code, out, err = train(["--preset", "bn", "--resize", "64", "--epochs", "1"], capsys)
    assert code == 1
    line = only_error_line(err)
    assert "too small for the auxiliary heads" in line and "aux1" in line
    assert "smallest input it accepts is 65x65" in line and "--no-aux" in line and "1x1 and up" in line
    oracle.check_input(S.get_spec("bn", aux_logits=False, in_channels=1, num_classes=10), 64)   # fits


def test_an_input_too_small_for_the_main_path_says_so():
    spec = S.Spec("narrow", 1, 32, (S.stage("s", S.Conv(4, 5, 1, 0), S.GlobalAvgPool(), S.Flatten(),
                                            S.Dense(10)),))
    with pytest.raises(oracle.InputTooSmall, match="main path .* smallest input it accepts is 5x5"):
        oracle.check_input(spec, 4)
