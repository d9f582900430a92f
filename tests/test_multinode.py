"""Several machines, simulated: two nodes on one machine, as each engine sees two hosts.

Node 0 is 127.0.0.1, node 1 is 127.0.0.2: both answered by the loopback interface, in a
network namespace of the test's own with only loopback up (``unshare -n``: nothing a
launcher resolves or connects to can leave the machine), where 127.0.0.2 is also given to
an interface label of its own, ``lo:n1``, so that engines which take an interface name
(gloo's ``GLOO_SOCKET_IFNAME``, ps-lite's ``DMLC_INTERFACE``) find node 1's address there.
Each node runs its own launcher (``backends/launch.py`` with ``--nnodes 2 --node-rank R``,
or torchrun), the master on node 0; MXNet's server is on node 1.

* 2 nodes x 1 worker give one process's weights for the same global batch, within the
  bounds of tests/test_distributed.py (the same float64 reference and check), for every
  engine; 2 nodes x 2 workers with ``GOOGLENET_LONG=1``;
* a lost node (node 1's launcher killed with SIGKILL: its workers die with it) ends node 0
  within a bounded time with one ``error:`` line; the last checkpoint is intact and
  ``--resume`` on one machine continues the run (PyTorch and Paddle in CI, the resume with
  PyTorch only; TensorFlow and MXNet, and every resume, with ``GOOGLENET_LONG=1``); during
  the run every socket is on 127.0.0.0/8;
* torchrun's elastic restart: a worker killed in the middle of an epoch is restarted by
  torchrun (``--max-restarts 1``, c10d rendezvous on 127.0.0.1) and the run continues
  from its last checkpoint with no user action.

Every process is bounded in time and ended by pid when the test ends.
"""
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from backends import launch
from backends.config import BACKENDS
from tests.datagen import make_dataset
from tests.test_distributed import LONG, ROOT, WORKER, _children, _cmdline, isolated, needs, single, within_reference

NODE = os.path.join(ROOT, "tests", "dist_node.py")
LIMIT = 240                                # seconds any one simulated run may take here
#: node 1's own interface: 127.0.0.2 under a label of lo (``ip addr add ... label lo:n1``)
SETUP = "ip link set lo up && (ip addr add 127.0.0.2/8 dev lo label lo:n1 || true)"
#: the measured bound from node 1's loss to node 0's launcher's exit (docs/distributed.md): a
#: lost peer is noticed at its next collective (PyTorch: connection reset, Paddle: gloo aborts
#: the survivor, TensorFlow: UnavailableError); MXNet's workers wait for the lost server until
#: the watchdog (--dist-timeout, 20 s here), plus the launcher's grace to stop the others
LOSS_TO_EXIT = {"pytorch": 30, "paddle": 30, "tensorflow": 45, "mxnet": 60}
LOST_IN_CI = ("pytorch", "paddle")


@pytest.fixture(scope="module")
def prefix():
    p = isolated()
    if p is None:
        pytest.skip("needs `unshare -n` (a network namespace) to simulate two hosts strictly on loopback")
    return p


class TwoNodes:
    """The node commands, each started in the background by one shell in a fresh network
    namespace; their outputs, pids and exit codes in ``tmp``.  Ends everything it started."""

    def __init__(self, prefix, commands, tmp, env=None):
        self.tmp, self.n = str(tmp), len(commands)
        lines = [SETUP]
        for i, c in enumerate(commands):
            lines.append(f"{c} > {self.tmp}/node{i}.log 2>&1 & echo $! > {self.tmp}/node{i}.pid")
        lines += [f"wait $(cat {self.tmp}/node{i}.pid); echo $? > {self.tmp}/node{i}.rc" for i in range(self.n)]
        self.p = subprocess.Popen(prefix + ["\n".join(lines)], cwd=ROOT, env=dict(os.environ, **(env or {})),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                  start_new_session=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.p.poll() is None:
            for pid in reversed(_children(self.p.pid)):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            os.killpg(self.p.pid, signal.SIGKILL)
        self.p.wait()

    def pid(self, i):
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                return int(open(f"{self.tmp}/node{i}.pid").read())
            except (OSError, ValueError):
                time.sleep(0.05)
        raise AssertionError(f"node {i} did not start")

    def rc(self, i):
        try:
            return int(open(f"{self.tmp}/node{i}.rc").read())
        except (OSError, ValueError):
            return None

    def log(self, i):
        try:
            return open(f"{self.tmp}/node{i}.log").read()
        except OSError:
            return ""

    def wait(self, timeout=LIMIT):
        self.p.wait(timeout=timeout)
        return [self.rc(i) for i in range(self.n)]

    def sockets(self):
        """``ss -tanp`` inside the namespace: (the text, every address and port in it)."""
        out = subprocess.run(["nsenter", "-t", str(self.pid(0)), "-n", "ss", "-tanp"], capture_output=True,
                             text=True, timeout=30).stdout
        return out, re.findall(r"(\S+):(\d+|\*)\s", out)


def on_loopback(address):
    """Whether an address of ``ss`` is on 127.0.0.0/8 (IPv4-mapped too) or is a listener's
    wildcard (which, in the namespace, only the loopback interface can reach)."""
    a = address.strip("[]").removeprefix("::ffff:")
    if a in ("*", "0.0.0.0", "::"):
        return True
    return ipaddress.ip_address(a).is_loopback


def node_command(name, nproc, rank, port, out, work):
    addr = f"127.0.0.{rank + 1}"
    return (f"{sys.executable} {NODE} {name} {nproc} 2 {rank} 127.0.0.1 {port} {addr} {work}/node{rank} "
            f"{sys.executable} {WORKER} {name} {out}")


# ------------------------------------------------------------------------- equal to one process
RUNS = [(b, 1) for b in BACKENDS] + [(b, 2) for b in BACKENDS]


@pytest.mark.parametrize("name, nproc", RUNS, ids=[f"{b}-2x{n}" for b, n in RUNS])
def test_two_nodes_equal_one_process(name, nproc, prefix, tmp_path, tmp_path_factory):
    """Three SGD steps with momentum on 2 nodes x ``nproc`` workers: every worker holds the same
    weights, within the bounds of the float64 reference (as one process does), the ranks
    0 .. N-1 and the world size read from the framework."""
    if nproc > 1 and not LONG:
        pytest.skip("GOOGLENET_LONG=1: 2 nodes x 2 workers")
    needs(name)
    out, port = str(tmp_path / "dist"), launch.free_ports(1)[0]
    with TwoNodes(prefix, [node_command(name, nproc, r, port, out, tmp_path) for r in (0, 1)], tmp_path) as nodes:
        rcs = nodes.wait()
    assert rcs == [0, 0], (rcs, nodes.log(0)[-3000:], nodes.log(1)[-3000:])
    size = 2 * nproc
    info = [json.load(open(os.path.join(out, f"rank{r}.json"))) for r in range(size)]
    assert all(i["size"] == size and i["engine"] == info[0]["engine"] != "single process" for i in info)
    weights = [dict(np.load(os.path.join(out, f"rank{r}.npz"))) for r in range(size)]
    ref = single(name, str(tmp_path_factory.getbasetemp()))
    assert weights[0].keys() == ref.keys()
    for r in range(1, size):
        for k in ref:
            np.testing.assert_array_equal(weights[r][k], weights[0][k], err_msg=f"rank {r} differs: {k}")
    within_reference(weights[0], f"{name}, 2 nodes x {nproc}")


# ------------------------------------------------------------------------------ a lost node
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multinode-data")
    return make_dataset(str(tmp / "fm"), n_train=96, n_test=40), str(tmp / "cache")


COMMON = ["--no-progress", "--resize", "16", "--batch-size", "24", "--lr", "0.05", "--momentum", "0.9"]


def train_command(name, folder, run, rank, port, extra=()):
    args = ["--backend", name, "--data-dir", folder, *COMMON, "--nnodes", "2", "--node-rank", str(rank),
            "--master-addr", "127.0.0.1", "--master-port", str(port), "--node-addr", f"127.0.0.{rank + 1}",
            "--run-dir", run, *extra]
    return " ".join([sys.executable, "scripts/train.py", *args])


@pytest.mark.parametrize("name", BACKENDS)
def test_a_lost_node_ends_the_run(name, prefix, data, tmp_path):
    """SIGKILL node 1's launcher after the first checkpoint (its workers, and MXNet's server,
    die with it, as with their machine): node 0's launcher ends within the bound with one
    ``error:`` line; the checkpoint is intact and the run resumes on one machine."""
    if name not in LOST_IN_CI and not LONG:
        pytest.skip("GOOGLENET_LONG=1: a lost node with TensorFlow and MXNet")
    needs(name)
    folder, cache = data
    run, port = str(tmp_path / "run"), launch.free_ports(1)[0]
    extra = ["--epochs", "500", "--dist-timeout", "20"]
    commands = [train_command(name, folder, run, r, port, extra) for r in (0, 1)]
    with TwoNodes(prefix, commands, tmp_path, env={"GOOGLENET_CACHE": cache}) as nodes:
        deadline = time.time() + LIMIT
        while not os.path.exists(os.path.join(run, "checkpoint")) and time.time() < deadline \
                and nodes.rc(0) is None:
            time.sleep(0.2)
        assert nodes.rc(0) is None and nodes.rc(1) is None, (nodes.log(0)[-3000:], nodes.log(1)[-3000:])
        text, addresses = nodes.sockets()
        assert addresses and all(on_loopback(a) for a, _ in addresses), text
        print(f"\n{name}: ss -tanp in the namespace during the run\n{text}")
        os.kill(nodes.pid(1), signal.SIGKILL)
        t0 = time.time()
        while nodes.rc(0) is None and time.time() - t0 < LOSS_TO_EXIT[name] + 30:
            time.sleep(0.1)
        took = time.time() - t0
        nodes.wait(60)
    print(f"{name}: node 1 lost; node 0 ended {took:.1f} s later")
    assert nodes.rc(0) == 1 and took < LOSS_TO_EXIT[name], (took, nodes.log(0)[-3000:])
    errors = [line for line in nodes.log(0).splitlines() if line.startswith("error: ")]
    # the launcher's line, last; MXNet's worker says first why its watchdog ended it
    assert len(errors) == (2 if name == "mxnet" else 1) and f"--resume {run}" in errors[-1], nodes.log(0)[-3000:]
    assert not [c for c in _children(nodes.p.pid)]                 # nothing left running
    weights = np.load(os.path.join(run, "checkpoint", "weights.npz"))
    assert all(np.isfinite(weights[k]).all() for k in weights.files)
    if name != "pytorch" and not LONG:
        return                            # CI time: the resume on one machine once, with PyTorch
    done = json.load(open(os.path.join(run, "run.json")))["epochs_done"]
    out = subprocess.run([sys.executable, "scripts/train.py", "--no-progress", "--resume", run, "--epochs",
                          str(done + 1)], cwd=ROOT, env=dict(os.environ, GOOGLENET_CACHE=cache),
                         capture_output=True, text=True, timeout=LIMIT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"after epoch {done}" in out.stdout
    assert json.load(open(os.path.join(run, "run.json")))["epochs_done"] == done + 1


# ------------------------------------------------------------------------- torchrun's restart
def test_torchrun_restarts_a_killed_worker_and_the_run_continues(prefix, data, tmp_path):
    """torchrun ``--max-restarts 1`` with the c10d rendezvous on 127.0.0.1, two workers,
    3 epochs of 8 steps, a checkpoint every 4 steps: worker 1 killed (SIGKILL) in the middle of
    an epoch, torchrun restarts both and they continue from the last checkpoint, with no
    user action, to the end of the run.  How many steps were redone is printed (rank 0's
    progress lines before the kill, against the step it resumed at)."""
    needs("pytorch")
    folder, cache = data
    run, port = str(tmp_path / "run"), launch.free_ports(1)[0]
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    cmd = (f"{torchrun} --nnodes 1 --nproc-per-node 2 --rdzv-backend c10d --rdzv-endpoint 127.0.0.1:{port} "
           f"--local-addr 127.0.0.1 --max-restarts 1 scripts/train.py --backend pytorch --data-dir {folder} "
           f"--resize 16 --batch-size 12 --lr 0.05 --momentum 0.9 --epochs 3 --checkpoint-every 4 "
           f"--run-dir {run}")
    with TwoNodes(prefix, [cmd], tmp_path, env={"GOOGLENET_CACHE": cache}) as nodes:
        deadline = time.time() + LIMIT
        while not os.path.exists(os.path.join(run, "checkpoint")) and time.time() < deadline \
                and nodes.rc(0) is None:
            time.sleep(0.05)
        workers = [c for c in _children(nodes.pid(0)) if "scripts/train.py" in _cmdline(c)]
        assert len(workers) == 2, (workers, nodes.log(0)[-3000:])
        time.sleep(0.5)                               # into the steps after the checkpoint
        os.kill(workers[-1], signal.SIGKILL)
        rcs = nodes.wait()
    log = nodes.log(0)
    assert rcs == [0], log[-5000:]
    resumed = re.search(r"resumed from \S+ after epoch (\d+)(?: and (\d+) steps of epoch)?", log)
    assert resumed, log[-5000:]
    before = log[:resumed.start()]
    done = max(int(e) * 8 + int(s) for e, s in re.findall(r"epoch (\d+)/3:.*?\| (\d+)/8 ", before)) - 8
    at = int(resumed.group(1)) * 8 + int(resumed.group(2) or 0)
    print(f"\ntorchrun restart: killed after about {done} steps, resumed at step {at}: {done - at} redone")
    assert at >= 4 and at % 4 == 0 and 0 <= done - at <= 4      # at most the steps between checkpoints
    rec = json.load(open(os.path.join(run, "run.json")))
    assert rec["epochs_done"] == 3 and rec["world_size"] == 2 and rec["test_acc"] is not None
