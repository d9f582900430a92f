"""MXNet: data-parallel training on the parameter server, ``kvstore('dist_sync')`` (ps-lite).

A run is a scheduler, a server and N workers, each a process started with the ``DMLC_*``
variables (``scripts/train.py --nproc-per-node N`` starts them all on 127.0.0.1; by hand:
docs/distributed.md).  Each worker backpropagates the **sum** of its per-example losses and
pushes its gradients; the server sums the pushes of every worker for each key and every
worker pulls that sum (``gluon.Trainer.allreduce_grads``), then updates its own copy of the
weights with the project's optimiser, dividing by the global batch (``update_on_kvstore``
off: no optimiser is pickled to the server, and its state stays on the workers).  The ranks
are the scheduler's (``kv.rank``), not the start order.

ps-lite never turns a lost peer into an error: the others wait for it forever.  So each
worker runs a watchdog that ends it (``os._exit(1)``, with an ``error:`` line) when one call
on the engine (joining, the Trainer's broadcast, a training step, a sum, the end of the run)
lasts longer than ``timeout`` seconds (``--dist-timeout``, 600).  Only those calls count: a
worker's own evaluation and checkpointing are never cut short, though a worker waiting for
another's (the others wait in the next step while rank 0 writes the checkpoint) counts that
wait.  A worker that fails leaves at once instead of waiting at the kvstore's exit barrier
for workers that will not come; our launcher then stops the others.  Started by hand, the
scheduler and the server of a failed run do not end by themselves.
"""
import atexit
import contextlib
import os
import sys
import threading
import time

import mxnet as mx
import numpy as np
from mxnet.base import _LIB, check_call

from common.train.distributed import SINGLE, World

#: the same public names in every backend (backends.DISTRIBUTE_API)
__all__ = ["launched", "init", "wrap"]

#: all_sum's kvstore keys (plus the length summed): int keys like the Trainer's
#: (0 .. parameters - 1; ps-lite refuses mixed key types), far above them
SUM_KEY = 1 << 30

_engine = None                # this process's engine: one kvstore per process (ps-lite)


def launched() -> bool:
    """Whether this process is one of several workers (the variables of a ps-lite worker)."""
    return os.environ.get("DMLC_ROLE") == "worker" and int(os.environ.get("DMLC_NUM_WORKER", "1")) > 1


class Watchdog:
    """Ends this worker when one wait on the engine lasts longer than ``timeout`` seconds."""

    def __init__(self, timeout: float):
        self.timeout, self.rank, self.since, self.what, self.depth = float(timeout), "?", None, "", 0
        threading.Thread(target=self._watch, daemon=True, name="kvstore watchdog").start()

    @contextlib.contextmanager
    def waiting(self, what: str):
        """Armed inside: the engine call (and the computation around it) in ``what``."""
        if self.depth == 0:
            self.since, self.what = time.monotonic(), what
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if self.depth == 0:
                self.since = None

    def _watch(self):
        while True:
            time.sleep(min(1.0, self.timeout / 10))
            since = self.since
            if since is not None and time.monotonic() - since > self.timeout:
                print(f"error: MXNet worker {self.rank}: no answer from the other workers for "
                      f"{self.timeout:.0f} s during {self.what} (a worker, the server or the "
                      f"scheduler is lost; --dist-timeout); ending this worker", file=sys.stderr, flush=True)
                os._exit(1)


class _Engine:
    """The kvstore, the watchdog and the state of the exit."""

    def __init__(self, timeout):
        self.dog = Watchdog(timeout)
        with self.dog.waiting("joining the scheduler"):
            self.kv = mx.kv.create("dist_sync")             # waits until every process registered
        self.dog.rank = self.kv.rank
        self.keys, self.trainers, self.closed, self.failed = set(), 0, False, False
        self.world = World(rank=self.kv.rank, size=self.kv.num_workers, engine=f"kvstore {self.kv.type}",
                           all_sum=self.all_sum, barrier=self.barrier, shutdown=self.shutdown)
        atexit.register(self.at_exit)            # after MXNet's MXNotifyShutdown: runs before it

    def all_sum(self, values):
        """``values`` summed over the workers, in float64.  The server sums the pushes of one key
        from every worker (it has no updater) and every worker pulls the sum; but the dist
        kvstore carries float32 (a float64 push comes back rounded, measured), so each worker
        sends its numbers exactly, as three float32 parts, in its own slots (zeros elsewhere:
        adding zeros is exact), and every worker adds the workers' numbers in rank order."""
        values = np.asarray(values, dtype=np.float64)
        n, size = values.size, self.world.size
        key = SUM_KEY + n
        slots = np.zeros((size, 3, n), np.float32)
        slots[self.world.rank] = _parts(values.ravel())
        with self.dog.waiting("a sum over the workers"):
            if key not in self.keys:             # collective: rank 0 initialises, then a barrier
                self.kv.init(key, mx.nd.zeros(slots.size))
                self.keys.add(key)
            buf = mx.nd.array(slots.ravel())
            self.kv.pushpull(key, buf, out=buf)
            got = buf.asnumpy().reshape(slots.shape).astype(np.float64)
        total = np.zeros(n)
        for parts in got:
            total += parts[0] + parts[1] + parts[2]
        return total.reshape(values.shape)

    def barrier(self):
        """Every worker waits for the others: a sum of nothing (``kv._barrier`` is private)."""
        self.all_sum(np.zeros(1))

    def shutdown(self):
        """The end of the run: the kvstore is freed now, under the watchdog (its C++ destructor
        waits for every worker, rank 0 then stops the server, and ps-lite ends; left to the
        interpreter's exit it is not run, and the process aborts).  Called while an exception
        propagates (this worker failed), it waits for nobody: the process will leave at once
        (:meth:`at_exit`).  The kvstore cannot be used afterwards."""
        if self.closed:
            return
        self.closed = True
        if sys.exc_info()[0] is not None:
            self.failed = True
            return
        with self.dog.waiting("the end of the run"):
            mx.nd.waitall()
            handle, self.kv.handle = self.kv.handle, None      # KVStore.__del__ then frees nothing
            check_call(_LIB.MXKVStoreFree(handle))

    def at_exit(self):
        """A failed worker (an exception, here or uncaught) leaves now: the kvstore's exit
        barrier would wait for the others forever.  Otherwise :meth:`shutdown`, if the
        program did not call it."""
        if self.failed or getattr(sys, "last_value", None) is not None:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
        self.shutdown()


def _parts(x):
    """float64 ``x`` as three float32 arrays whose float64 sum is ``x`` (NaN and infinities in
    the first)."""
    with np.errstate(invalid="ignore", over="ignore"):
        hi = x.astype(np.float32)
        rest = np.where(np.isfinite(x) & np.isfinite(hi), x - hi, 0.0)
        mid = rest.astype(np.float32)
        return np.stack([hi, mid, (rest - mid).astype(np.float32)])


def init(timeout: float = 600.0) -> World:
    """Join the parameter server (``kvstore('dist_sync')``) when this process is one of
    several workers, else a single process.  ``timeout``: the watchdog's limit on one wait."""
    global _engine
    if not launched():
        return SINGLE
    if _engine is None:
        _engine = _Engine(timeout)
    return _engine.world


def kvstore():
    """The kvstore for this process's ``gluon.Trainer``: one Trainer per process (a second
    would initialise the Trainer's keys again, which the server takes for a push and waits)."""
    if _engine is None:
        raise RuntimeError("a distributed MXNet Trainer needs backends.mxnet.distribute.init() first")
    if _engine.trainers:
        raise RuntimeError("one distributed MXNet Trainer per process (the kvstore's keys are its own)")
    _engine.trainers += 1
    return _engine.kv


def waiting(what: str):
    """The watchdog, armed for ``what`` (nothing in a single process)."""
    return _engine.dog.waiting(what) if _engine is not None else contextlib.nullcontext()


def wrap(net, world):
    """The network as the Trainer runs it in a data-parallel run: unchanged here (the
    engine combines the gradients in the Trainer's step)."""
    return net
