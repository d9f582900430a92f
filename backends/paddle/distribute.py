"""Paddle: data-parallel training on ``paddle.distributed`` (gloo on the CPU, NCCL on GPUs)
with ``paddle.DataParallel``, which averages the gradients over the workers during
``backward``.  Started by ``scripts/train.py --nproc-per-node N`` or by
``python -m paddle.distributed.launch --nproc_per_node N --host 127.0.0.1`` (both set
``PADDLE_TRAINER_ID``, ``PADDLE_TRAINERS_NUM``, ``PADDLE_CURRENT_ENDPOINT`` and
``PADDLE_MASTER``, the rendezvous; on the CPU ``PADDLE_DISTRI_BACKEND=gloo``).

Faults: Paddle's gloo has no timeout setting.  A lost worker makes the others abort at once
(a C++ exception on gloo's thread: SIGABRT, nothing Python can catch), a hung one after
gloo's fixed 30 s, and so does a worker that waits more than 30 s for the others in any
collective; the launcher then stops the run and the last checkpoint stays.
"""
import faulthandler
import os

import numpy as np
import paddle
import paddle.distributed as dist

from common.distributed import SINGLE, World


def launched() -> bool:
    """Whether this process is one of several workers (the variables both launchers set)."""
    return "PADDLE_TRAINER_ID" in os.environ and int(os.environ.get("PADDLE_TRAINERS_NUM", "1")) > 1


def _gpu() -> bool:
    return paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0


def init(timeout: float = 600.0) -> World:
    """Join the workers (``paddle.distributed.init_parallel_env``); a single process when not
    launched as a worker.  ``timeout`` bounds the rendezvous (Paddle's own waits 900 s for a
    missing worker): past it this worker prints where it waited and exits with code 1.  The
    collectives are bounded by gloo's fixed 30 s instead, which no setting changes."""
    if not launched():
        return SINGLE
    local = int(os.environ.get("PADDLE_LOCAL_RANK", os.environ.get("PADDLE_RANK_IN_NODE", "0")))
    if _gpu():                            # not verified here (a CPU-only build)
        os.environ.setdefault("FLAGS_selected_gpus", str(local))
        os.environ["PADDLE_DISTRI_BACKEND"] = "nccl"
        paddle.set_device(f"gpu:{local}")
    os.environ.setdefault("PADDLE_DISTRI_BACKEND", "gloo")   # unset, Paddle takes a legacy path
    # Paddle's rendezvous holds the GIL while it waits, so no Python thread or signal handler
    # can end it: faulthandler's watchdog is C, it prints where the worker waited and exits.
    faulthandler.dump_traceback_later(timeout, exit=True)
    try:
        dist.init_parallel_env()
    finally:
        faulthandler.cancel_dump_traceback_later()

    def all_sum(values):
        t = paddle.to_tensor(np.asarray(values, np.float64))
        dist.all_reduce(t)
        return t.numpy()

    return World(rank=dist.get_rank(), size=dist.get_world_size(),
                 engine=f"paddle.distributed/{os.environ['PADDLE_DISTRI_BACKEND']}", local_rank=local,
                 all_sum=all_sum, barrier=dist.barrier, shutdown=dist.destroy_process_group)


class DataParallel(paddle.DataParallel):
    """``paddle.DataParallel`` (rank 0's parameters and batch-norm statistics broadcast when it
    is made; gradients averaged during ``backward``) that also broadcasts rank 0's batch-norm
    statistics at every forward, as PyTorch's DDP does, so every worker holds the statistics
    that rank 0 checkpoints (each updated with its own rows' last batch)."""

    def __init__(self, net):
        super().__init__(net)
        self._statistics = [p for p in net.parameters() if p.stop_gradient] + list(net.buffers())

    def forward(self, *inputs, **kwargs):
        if self._statistics:
            with paddle.no_grad():
                flat = paddle.concat([t.reshape([-1]) for t in self._statistics])
                dist.broadcast(flat, src=0)
                for t, v in zip(self._statistics, paddle.split(flat, [int(t.size) for t in self._statistics])):
                    paddle.assign(v.reshape(t.shape), t)
        return super().forward(*inputs, **kwargs)


def wrap(net, world):
    """The network as the engine trains it: :class:`DataParallel`."""
    return DataParallel(net)
