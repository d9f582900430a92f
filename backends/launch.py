"""Start N workers of one backend on this machine, each the way its framework expects, and
watch them: ``scripts/train.py --nproc-per-node N`` (the launchers the frameworks ship,
torchrun and ``paddle.distributed.launch``, work too; docs/distributed.md).

It imports no framework: it sets the environment each framework's engine reads, from the
backend's card (``backends/<framework>/card.py``, its ``launch``: torchrun's variables,
``TF_CONFIG``, ``paddle.distributed.launch``'s ``PADDLE_*`` or MXNet's ``DMLC_*`` with a
scheduler and a server beside the workers), and runs processes; the same module's
``distribute.init`` reads them.  Every address is 127.0.0.1 and every port is picked free
at run time.

The cores are split between the workers (``OMP_NUM_THREADS``).  Workers print to this
terminal (only rank 0 prints the run's progress; any worker's error shows).  The first process to fail
ends the run: the others are stopped (SIGTERM, then SIGKILL after a grace period), and the
message names the lost worker.  Nothing a worker checkpointed is touched.  Ctrl-C or SIGTERM
to the launcher stops the workers the same way, with up to :data:`STOP_GRACE` seconds to
write a checkpoint where they are (``common/train/interrupt.py``).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import List, Optional

from .card import LOOPBACK
from .config import CARDS
WORKER = "GOOGLENET_WORKER"          # set in every process the launcher starts
STOP_GRACE = 60.0                    # seconds the workers get to checkpoint when the run is stopped
PROXIES = ("http_proxy", "https_proxy", "all_proxy", "grpc_proxy", "HTTP_PROXY", "HTTPS_PROXY",
           "ALL_PROXY", "GRPC_PROXY")


def free_ports(n: int) -> List[int]:
    """``n`` distinct ports free on 127.0.0.1 now (bound together, then released)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(n)]
        for s in socks:
            s.bind((LOOPBACK, 0))
        return [s.getsockname()[1] for s in socks]


@dataclass
class Process:
    """One process of a run: a worker (``index``) or a helper role (MXNet's scheduler, server)."""
    name: str
    argv: List[str]
    env: dict
    index: Optional[int] = None          # workers: 0 .. N-1 in launch order
    log: Optional[str] = None            # None: this terminal
    popen: Optional[subprocess.Popen] = field(default=None, repr=False)


def base_env(nproc: int) -> dict:
    """What every process gets: loopback only, no proxies, the cores split between workers."""
    env = {k: v for k, v in os.environ.items() if k not in PROXIES}
    threads = max(1, (os.cpu_count() or 1) // nproc)
    env.update({WORKER: "1", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
                "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", str(threads)),
                "GOOGLENET_THREADS": env.get("OMP_NUM_THREADS", str(threads))})
    return env


def plan(backend: str, argv: List[str], nproc: int, workdir: str, python: str = sys.executable) -> List[Process]:
    """The processes of a run of ``argv`` (a worker's command line) with ``nproc`` workers."""
    base = base_env(nproc)
    card = CARDS[backend]
    run = card.launch(nproc, free_ports(card.launch_ports(nproc)), workdir)
    helpers = [Process(role, [python, "-c", f"import {card.module}"], dict(base, **env),
                       log=os.path.join(workdir, f"{role}.log")) for role, env in run.helpers]
    workers = [Process(f"worker {r}", list(argv), dict(base, **env), index=r) for r, env in enumerate(run.workers)]
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


class LaunchError(RuntimeError):
    """A worker (or a helper process) of a distributed run failed; the others were stopped."""


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
                                       start_new_session=True)
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
