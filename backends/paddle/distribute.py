"""Paddle: data-parallel training on ``paddle.distributed`` (gloo on the CPU, NCCL on GPUs)
with ``paddle.DataParallel``, which averages the gradients over the workers during
``backward``.  Started by ``scripts/train.py --nproc-per-node N`` or by
``python -m paddle.distributed.launch --nproc_per_node N --host 127.0.0.1`` (both set
``PADDLE_TRAINER_ID``, ``PADDLE_TRAINERS_NUM``, ``PADDLE_CURRENT_ENDPOINT`` and
``PADDLE_MASTER``, the rendezvous; on the CPU ``PADDLE_DISTRI_BACKEND=gloo``).

Faults: Paddle's gloo has no timeout setting.  A worker lost in a collective makes the others
abort at once (a C++ exception on gloo's thread: SIGABRT, nothing Python can catch), a hung
one after gloo's fixed 30 s; and so would a worker that merely waits 30 s for the others, as
after an epoch while rank 0 writes the checkpoint.  So where the workers drift apart they
first meet at a :class:`Meeting` on the rendezvous's store, which waits as long as the run's
``--dist-timeout``; gloo's 30 s then only bound the skew within a training step.  The launcher
stops the run when a worker dies; the last checkpoint stays.
"""
import faulthandler
import os
import time

import numpy as np
import paddle
import paddle.distributed as dist

from common.train.distributed import SINGLE, World

from .core import device


#: the same public names in every backend (backends.DISTRIBUTE_API)
__all__ = ["launched", "init", "wrap"]


def launched() -> bool:
    """Whether this process is one of several workers (the variables both launchers set)."""
    return "PADDLE_TRAINER_ID" in os.environ and int(os.environ.get("PADDLE_TRAINERS_NUM", "1")) > 1


def init(timeout: float = 600.0) -> World:
    """Join the workers (``paddle.distributed.init_parallel_env``); a single process when not
    launched as a worker.  ``timeout`` bounds the rendezvous (Paddle's own waits 900 s for a
    missing worker: past it this worker prints where it waited and exits with code 1) and
    every :class:`Meeting`; gloo's collectives are bounded by its fixed 30 s."""
    if not launched():
        return SINGLE
    local = int(os.environ.get("PADDLE_LOCAL_RANK", os.environ.get("PADDLE_RANK_IN_NODE", "0")))
    if device() != "cpu":                 # not verified here (a CPU-only build)
        os.environ.setdefault("FLAGS_selected_gpus", str(local))   # init_parallel_env's device
        os.environ["PADDLE_DISTRI_BACKEND"] = "nccl"
    os.environ.setdefault("PADDLE_DISTRI_BACKEND", "gloo")   # unset, Paddle takes a legacy path
    # Paddle's rendezvous holds the GIL while it waits, so no Python thread or signal handler
    # can end it: faulthandler's watchdog is C, it prints where the worker waited and exits.
    faulthandler.dump_traceback_later(timeout, exit=True)
    try:
        dist.init_parallel_env()
    finally:
        faulthandler.cancel_dump_traceback_later()
    meeting = Meeting(dist.get_world_size(), timeout)

    def all_sum(values):
        t = paddle.to_tensor(np.asarray(values, np.float64))
        meeting.before_sum()
        dist.all_reduce(t)
        return t.numpy()

    return World(rank=dist.get_rank(), size=dist.get_world_size(),
                 engine=f"paddle.distributed/{os.environ['PADDLE_DISTRI_BACKEND']}", local_rank=local,
                 all_sum=all_sum, barrier=meeting, shutdown=dist.destroy_process_group)


class Meeting:
    """A barrier on the rendezvous's TCP store that waits up to ``timeout`` seconds, then raises
    ``TimeoutError`` (gloo's own aborts the process after 30 s).  Each store request takes
    40-44 ms here (measured; the signature of Nagle's algorithm meeting delayed ACKs), so the
    workers meet only where they drift apart: at the end of an epoch, where the loop sums
    several times in a row (evaluation, throughput) and rank 0 then writes the checkpoint.
    Hence a sum right after another sum, and the first training step after two or more, meet
    first; so does the first step.  Every worker makes the same calls in the same order, so
    they agree on where to meet, and one counter on the store serves every meeting: the
    ``k``-th is complete when ``k * size`` arrivals are counted."""

    KEY = "googlenet/meetings"

    def __init__(self, size, timeout):
        self.store = paddle.base.core.create_or_get_global_tcp_store()
        self.size, self.timeout, self.held, self.sums = size, timeout, 0, 2

    def __call__(self):
        self.held += 1
        target, start, pause = self.held * self.size, time.monotonic(), 1e-3
        arrived = self.store.add(self.KEY, 1)
        while arrived < target:
            if time.monotonic() - start > self.timeout:
                raise TimeoutError(f"the other workers did not arrive within {self.timeout:.0f} s "
                                   f"({arrived - target + self.size} of {self.size} here)")
            time.sleep(pause)
            pause = min(2 * pause, 0.05)
            arrived = self.store.add(self.KEY, 0)

    def before_sum(self):
        if self.sums >= 1:
            self()
        self.sums += 1

    def before_step(self):
        if self.sums >= 2:
            self()
        self.sums = 0


class DataParallel(paddle.DataParallel):
    """``paddle.DataParallel`` (rank 0's parameters and batch-norm statistics broadcast when it
    is made; gradients averaged during ``backward``) that meets the other workers first where
    they may have drifted apart (:meth:`Meeting.before_step`) and broadcasts rank 0's
    batch-norm statistics at every forward, as PyTorch's DDP does, so that every worker holds
    the statistics that rank 0 checkpoints (each updated with its own rows' last batch)."""

    def __init__(self, net, meeting):
        super().__init__(net)
        self._meeting = meeting
        self._statistics = [p for p in net.parameters() if p.stop_gradient] + list(net.buffers())

    def forward(self, *inputs, **kwargs):
        self._meeting.before_step()
        if self._statistics:
            with paddle.no_grad():
                flat = paddle.concat([t.reshape([-1]) for t in self._statistics])
                dist.broadcast(flat, src=0)
                for t, v in zip(self._statistics, paddle.split(flat, [int(t.size) for t in self._statistics])):
                    paddle.assign(v.reshape(t.shape), t)
        return super().forward(*inputs, **kwargs)


def wrap(net, world):
    """The network as the engine trains it: :class:`DataParallel`, made when every worker is
    there (it broadcasts rank 0's weights)."""
    world.barrier()
    return DataParallel(net, world.barrier)
