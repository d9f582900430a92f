"""Start N workers of one backend on this machine, each the way its framework expects, and
watch them: ``scripts/train.py --nproc-per-node N`` (the launchers the frameworks ship,
torchrun and ``paddle.distributed.launch``, work too; docs/distributed.md).

It imports no framework: it sets the environment each framework's engine reads, from the
backend's card (``backends/<framework>/card.py``, its ``launch``: torchrun's variables,
``TF_CONFIG``, ``paddle.distributed.launch``'s ``PADDLE_*`` or MXNet's ``DMLC_*`` with a
scheduler and a server beside the workers), and runs processes; the same module's
``distribute.init`` reads them.  Every address is 127.0.0.1 and every port is picked free
at run time.

Several machines (``--nnodes N --node-rank R --master-addr A``, torchrun's names): one
launcher per node.  Node 0's launcher listens at ``A:--master-port`` until every other node's
launcher has told it its address (``--node-addr``) and the ports it found free there
(:func:`rendezvous`); each then starts its own workers (global ranks ``R * nproc + local``)
with the whole run's addresses, as the framework's multi-node launch sets them.  A worker
lost on another node is noticed by the engine (docs/distributed.md, per framework); the
processes a launcher starts die with it (``PR_SET_PDEATHSIG``), as they would with their
machine.

The cores are split between the workers (``OMP_NUM_THREADS``).  Workers print to this
terminal (only rank 0 prints the run's progress; any worker's error shows).  The first process to fail
ends the run: the others are stopped (SIGTERM, then SIGKILL after a grace period), and the
message names the lost worker.  Nothing a worker checkpointed is touched.  Ctrl-C or SIGTERM
to the launcher stops the workers the same way, with up to :data:`STOP_GRACE` seconds to
write a checkpoint where they are (``common/train/interrupt.py``).
"""
from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import List, Optional

from .card import LOOPBACK, Cluster
from .config import CARDS
WORKER = "GOOGLENET_WORKER"          # set in every process the launcher starts
STOP_GRACE = 60.0                    # seconds the workers get to checkpoint when the run is stopped
PROXIES = ("http_proxy", "https_proxy", "all_proxy", "grpc_proxy", "HTTP_PROXY", "HTTPS_PROXY",
           "ALL_PROXY", "GRPC_PROXY")


MASTER_PORT = 29500                  # the rendezvous port of node 0's launcher (torchrun's default)


def free_ports(n: int, host: str = LOOPBACK) -> List[int]:
    """``n`` distinct ports free on ``host`` (an address of this machine) now (bound together,
    then released)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(n)]
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]


class LaunchError(RuntimeError):
    """A worker (or a helper process) of a distributed run failed, the others were stopped; or
    the nodes of a run could not agree."""


# ------------------------------------------------------------------------------ several nodes
@dataclass(frozen=True)
class Nodes:
    """The several-machine options of a run (torchrun's names): ``nnodes`` nodes, this one
    ``node_rank``; node 0's launcher waits at ``master_addr:master_port`` (``master_addr`` is
    node 0's address) for the others, up to ``timeout`` seconds; ``node_addr`` is this node's
    address (default: the master's on node 0, elsewhere the one this machine reaches the
    master from)."""
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = LOOPBACK
    master_port: int = MASTER_PORT
    node_addr: Optional[str] = None
    timeout: float = 600.0

    def address(self) -> str:
        if self.node_addr:
            return self.node_addr
        if self.node_rank == 0:
            return self.master_addr
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:     # a UDP connect sends nothing
            s.connect((self.master_addr, self.master_port))
            return s.getsockname()[0]


def addresses() -> List[tuple]:
    """This machine's IPv4 addresses, ``[(interface, address)]``, an address's label as its
    interface (``lo:n1``: what gloo and ps-lite match an interface name against), from the
    kernel (``SIOCGIFCONF``)."""
    import array
    import fcntl
    size = 40                                         # struct ifreq on 64-bit Linux
    buf = array.array("B", bytes(size * 256))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        got = fcntl.ioctl(s.fileno(), 0x8912, struct.pack("iL", len(buf), buf.buffer_info()[0]))
    data = buf.tobytes()[:struct.unpack("iL", got)[0]]
    return [(data[i:i + 16].split(b"\0", 1)[0].decode(), socket.inet_ntoa(data[i + 20:i + 24]))
            for i in range(0, len(data), size)]


def interface_of(addr: str) -> str:
    """The network interface of this machine that holds ``addr`` (its label, for an address
    added with one); an address of 127.0.0.0/8 that no interface holds: the loopback
    interface's (it answers the whole range)."""
    try:
        loopback = ipaddress.ip_address(addr).is_loopback
    except ValueError:
        raise LaunchError(f"{addr} is not an IPv4 address: give each node's address as one "
                          f"(--node-addr, --master-addr)") from None
    held = addresses()
    for want in (addr, LOOPBACK) if loopback else (addr,):
        for name, a in held:
            if a == want:
                return name
    raise LaunchError(f"no network interface of this machine has the address {addr} (--node-addr)")


def _send(conn, message: dict):
    conn.sendall((json.dumps(message) + "\n").encode())


def _receive(conn) -> dict:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("the other launcher closed the connection")
        data += chunk
    return json.loads(data)


def _gather(nodes: Nodes, mine: dict) -> dict:
    """Node 0: every node's entry, then the whole run's to each (or the reason it cannot run)."""
    entries, conns = {0: mine}, []
    deadline = time.monotonic() + nodes.timeout
    try:
        with socket.create_server((nodes.master_addr, nodes.master_port)) as server:
            while len(entries) < nodes.nnodes:
                server.settimeout(max(0.1, deadline - time.monotonic()))
                try:
                    conn, _ = server.accept()
                except socket.timeout:
                    missing = sorted(set(range(nodes.nnodes)) - set(entries))
                    raise LaunchError(f"node(s) {missing} did not join within {nodes.timeout:.0f} s "
                                      f"(--dist-timeout) at {nodes.master_addr}:{nodes.master_port}") from None
                conns.append(conn)
                conn.settimeout(30)
                entry = _receive(conn)
                problem = _mismatch(entry, mine, entries)
                if problem:
                    raise LaunchError(problem)
                entries[entry["node"]] = entry
            run = dict(hosts=[entries[n]["host"] for n in range(nodes.nnodes)],
                       ports=[entries[n]["ports"] for n in range(nodes.nnodes)])
            for conn in conns:
                _send(conn, run)
            return run
    except LaunchError as e:
        for conn in conns:
            try:
                _send(conn, {"error": str(e)})
            except OSError:
                pass
        raise
    except OSError as e:
        raise LaunchError(f"node 0 cannot wait for the others at {nodes.master_addr}:{nodes.master_port} "
                          f"({e}; --master-addr is node 0's own address, --master-port a free port)") from None
    finally:
        for conn in conns:
            conn.close()


def _mismatch(entry: dict, mine: dict, entries: dict) -> Optional[str]:
    """Why another node's launcher cannot join this run, or None."""
    for key, what in (("backend", "backend"), ("nnodes", "--nnodes"), ("nproc", "--nproc-per-node")):
        if entry.get(key) != mine[key]:
            return (f"node {entry.get('node')} was started with {what} {entry.get(key)}, node 0 with "
                    f"{mine[key]}: every node's launcher takes the same options")
    if not 0 < entry.get("node", -1) < mine["nnodes"] or entry["node"] in entries:
        return (f"two launchers claim node {entry.get('node')}: give each node its own --node-rank "
                f"from 0 to {mine['nnodes'] - 1}")
    return None


def _join(nodes: Nodes, mine: dict) -> dict:
    """Any other node: tell node 0 this node's entry (trying until it listens), get the run's."""
    deadline = time.monotonic() + nodes.timeout
    while True:
        try:
            with socket.create_connection((nodes.master_addr, nodes.master_port), timeout=10) as conn:
                _send(conn, mine)
                conn.settimeout(max(1.0, deadline - time.monotonic()))
                run = _receive(conn)
                break
        except OSError as e:               # refused (node 0 not listening yet), reset, timed out
            if time.monotonic() > deadline:
                raise LaunchError(f"node 0's launcher did not answer at {nodes.master_addr}:{nodes.master_port} "
                                  f"within {nodes.timeout:.0f} s ({e}; --dist-timeout)") from None
            time.sleep(0.5)
    if "error" in run:
        raise LaunchError(f"node 0 refused this node: {run['error']}")
    return run


def rendezvous(backend: str, nproc: int, nports: int, workdir: str, nodes: Optional[Nodes] = None) -> Cluster:
    """Where every process of the run is.  One node: 127.0.0.1 and ``nports`` ports free there.
    Several: this node's address and ``nports`` ports free at it, exchanged with every other
    node's launcher through node 0's (one JSON line each way)."""
    if nodes is None or nodes.nnodes == 1:
        return Cluster(nproc, (LOOPBACK,), (tuple(free_ports(nports)),), workdir)
    if not 0 <= nodes.node_rank < nodes.nnodes:
        raise LaunchError(f"--node-rank must be from 0 to {nodes.nnodes - 1} with --nnodes {nodes.nnodes}, "
                          f"not {nodes.node_rank}")
    addr = nodes.address()
    iface = interface_of(addr)
    if nodes.node_rank == 0 and addr != nodes.master_addr:
        raise LaunchError(f"node 0 is the master: its address is --master-addr {nodes.master_addr}, "
                          f"not --node-addr {addr}")
    mine = dict(node=nodes.node_rank, host=addr, ports=free_ports(nports, addr), backend=backend, nproc=nproc,
                nnodes=nodes.nnodes)
    run = _gather(nodes, mine) if nodes.node_rank == 0 else _join(nodes, mine)
    return Cluster(nproc, tuple(run["hosts"]), tuple(tuple(p) for p in run["ports"]), workdir,
                   node=nodes.node_rank, iface=iface)


@dataclass
class Process:
    """One process of a run: a worker (``index``) or a helper role (MXNet's scheduler, server)."""
    name: str
    argv: List[str]
    env: dict
    index: Optional[int] = None          # workers: 0 .. N-1 in launch order
    log: Optional[str] = None            # None: this terminal
    popen: Optional[subprocess.Popen] = field(default=None, repr=False)


def base_env(nproc: int, hosts=(LOOPBACK,)) -> dict:
    """What every process gets: no proxies (the run's addresses reached directly), the cores
    split between this node's workers."""
    env = {k: v for k, v in os.environ.items() if k not in PROXIES}
    threads = max(1, (os.cpu_count() or 1) // nproc)
    direct = ",".join(dict.fromkeys([LOOPBACK, "localhost", *hosts]))
    env.update({WORKER: "1", "NO_PROXY": direct, "no_proxy": direct,
                "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", str(threads)),
                "GOOGLENET_THREADS": env.get("OMP_NUM_THREADS", str(threads))})
    return env


def plan(backend: str, argv: List[str], nproc: int, workdir: str, python: str = sys.executable,
         nodes: Optional[Nodes] = None) -> List[Process]:
    """This node's processes of a run of ``argv`` (a worker's command line) with ``nproc``
    workers per node (``nodes``: several machines, after the rendezvous with the others)."""
    card = CARDS[backend]
    cluster = rendezvous(backend, nproc, card.launch_ports(nproc), workdir, nodes)
    base = base_env(nproc, cluster.hosts)
    run = card.launch(cluster)
    where = f" on node {cluster.node}" if cluster.nnodes > 1 else ""
    helpers = [Process(role, [python, "-c", f"import {card.module}"], dict(base, **env),
                       log=os.path.join(workdir, f"{role}.log")) for role, env in run.helpers]
    workers = [Process(f"worker {cluster.rank(r)}{where}", list(argv), dict(base, **env), index=r)
               for r, env in enumerate(run.workers)]
    return _logs(helpers + workers, workdir)


def _logs(procs, workdir):
    """Workers write to this terminal (only rank 0 prints the run's lines; any worker's error
    shows); helper roles to ``workdir``."""
    return procs


def _describe(rc: int) -> str:
    if rc < 0:
        try:
            return f"was killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"was killed by signal {-rc}"
    return f"exited with code {rc}"


def culprit(failed):
    """The process to blame among those found ended in one look, ``[(process, returncode)]``:
    one killed from outside (SIGKILL, SIGTERM, ...) before one that aborted (SIGABRT: the
    engines abort a worker whose peer vanished) or exited with an error, which are usually
    the consequence; otherwise the first."""
    outside = [(p, rc) for p, rc in failed if rc < 0 and -rc != signal.SIGABRT]
    return (outside or failed)[0]


def _stop(procs, grace: float):
    """SIGTERM to every process still running (a worker then checkpoints at its next step and
    exits), SIGKILL to those left after ``grace`` seconds, or at once if asked again (Ctrl-C)."""
    alive = [p for p in procs if p.popen is not None and p.popen.poll() is None]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in alive:
            try:
                os.killpg(p.popen.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace
        try:
            while time.monotonic() < deadline and any(p.popen.poll() is None for p in alive):
                time.sleep(0.1)
        except KeyboardInterrupt:        # a second Ctrl-C / SIGTERM: no more waiting
            pass
        alive = [p for p in alive if p.popen.poll() is None]
        if not alive:
            return
    for p in procs:
        if p.popen is not None:
            p.popen.wait()


def _die_with_launcher():
    """In a started process, before it runs: SIGKILL when the launcher dies (``prctl``
    ``PR_SET_PDEATHSIG``), as a machine's processes end with it; a launcher already gone too."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)      # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:
        os._exit(1)


# Over the complexity limit on purpose: watches every process in one loop, so that each way out (a
# failure, a signal, the time limit) stops them all.
def run(procs: List[Process], *, timeout: Optional[float] = None, grace: float = 10.0, poll: float = 0.2,  # noqa: C901
        cwd: Optional[str] = None) -> None:
    """Start ``procs``, each in its own session, and wait.  Returns when every worker has
    exited with 0 (helper roles are then given ``grace`` seconds to finish); raises
    :class:`LaunchError` naming the first process that failed, after stopping the others."""
    files = []
    try:
        for p in procs:
            out = None
            if p.log:
                os.makedirs(os.path.dirname(p.log), exist_ok=True)
                out = open(p.log, "w")
                files.append(out)
            p.popen = subprocess.Popen(p.argv, env=p.env, cwd=cwd, stdout=out,
                                       stderr=subprocess.STDOUT if out else None,
                                       start_new_session=True, preexec_fn=_die_with_launcher)
        start = time.monotonic()
        workers = [p for p in procs if p.index is not None]
        ended = {}                     # helper roles that exited with 0 while workers ran: when
        while True:
            failed = []
            for p in procs:
                rc = p.popen.poll()
                early = rc == 0 and p.index is None and any(w.popen.poll() is None for w in workers)
                if early:   # MXNet's scheduler and server end as the workers free their kvstore,
                    # while those processes are still exiting: a failure only if they do not follow
                    early = time.monotonic() - ended.setdefault(p.name, time.monotonic()) > grace
                if rc is not None and (rc != 0 or early):
                    failed.append((p, rc))
            if failed:
                p, rc = culprit(failed)
                _stop(procs, grace)
                where = f"; its output: {p.log}" if p.log else ""
                raise LaunchError(f"{p.name} (pid {p.popen.pid}) {_describe(rc)}; the other processes "
                                  f"were stopped{where}")
            if all(w.popen.poll() == 0 for w in workers):
                deadline = time.monotonic() + grace
                while time.monotonic() < deadline and any(p.popen.poll() is None for p in procs):
                    time.sleep(poll)
                _stop(procs, grace)
                return
            if timeout is not None and time.monotonic() - start > timeout:
                _stop(procs, grace)
                raise LaunchError(f"the run did not finish within {timeout:.0f} s; every process was stopped")
            time.sleep(poll)
    except KeyboardInterrupt:            # Ctrl-C, or SIGTERM (cli/train.py): the workers get the time
        _stop(procs, max(grace, STOP_GRACE))   # of a step and a checkpoint before SIGKILL
        raise
    finally:
        for f in files:
            f.close()


def workdir(run_dir: str) -> str:
    """Where a run's launcher keeps its workers' logs and its rendezvous files (an absolute
    path: a relative ``file://`` store would name a host, and workers may start elsewhere)."""
    path = os.path.abspath(os.path.join(run_dir, "workers"))
    os.makedirs(path, exist_ok=True)
    store = os.path.join(path, "torch-store")
    if os.path.exists(store):          # a file store must not exist when the run starts
        os.remove(store)
    return path
