"""PyTorch: data-parallel training on ``torch.distributed`` (gloo on the CPU, NCCL on GPUs)
with ``DistributedDataParallel``, which averages the gradients over the workers during
``backward``.  Started by ``scripts/train.py --nproc-per-node N`` or by ``torchrun``
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``)."""
import os
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from common.train.distributed import SINGLE, World

from .card import RESTARTS, STORE


#: the same public names in every backend (backends.DISTRIBUTE_API)
__all__ = ["launched", "init", "wrap"]


def launched() -> bool:
    """Whether this process is one of several workers (the variables torchrun sets)."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(timeout: float = 600.0) -> World:
    """Join the process group (a file store when our launcher gives one, else ``env://``);
    a single process when not launched as a worker.  ``timeout`` bounds every collective
    and the rendezvous, so a hung worker ends the run."""
    if not launched():
        return SINGLE
    gpu = torch.cuda.is_available()
    backend = "nccl" if gpu else "gloo"
    store = os.environ.get(STORE)
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        dist.init_process_group(backend, store=_attempt_store(size, timeout), rank=rank, world_size=size,
                                timeout=timedelta(seconds=timeout))
    else:
        dist.init_process_group(backend, init_method=f"file://{store}" if store else "env://",
                                rank=rank, world_size=size, timeout=timedelta(seconds=timeout))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if gpu:
        torch.cuda.set_device(local)
    device = torch.device(f"cuda:{local}") if gpu else torch.device("cpu")

    def all_sum(values):
        t = torch.from_numpy(np.asarray(values, np.float64)).to(device)
        dist.all_reduce(t)
        return t.cpu().numpy()

    def shutdown():
        # every rank done with its collectives before any tears the group down: a gloo peer that
        # closes while another still talks to it can abort that process at exit (seen once in CI:
        # "terminate called without an active exception", SIGABRT)
        dist.barrier()
        dist.destroy_process_group()

    return World(rank=dist.get_rank(), size=dist.get_world_size(), engine=f"torch.distributed/{backend}",
                 local_rank=local, all_sum=all_sum, barrier=dist.barrier, shutdown=shutdown)


def _attempt_store(size, timeout):
    """torchrun's store (its agent's, at ``MASTER_ADDR:MASTER_PORT``) under a prefix of its own for
    each restart of the worker group.  torch 2.13's ``env://`` uses the agent's store as it is
    ("a new TCPStore for every retry", its comment says, but the address stays the same), so
    after a restart (``--max-restarts``) gloo reads the addresses the killed workers had
    published and fails: "Connection refused" (measured here)."""
    client = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), size, is_master=False,
                           timeout=timedelta(seconds=timeout))
    return dist.PrefixStore(f"googlenet/restart_{os.environ.get(RESTARTS, '0')}", client)


def wrap(net, world):
    """The network as the engine trains it: ``DistributedDataParallel`` (rank 0's buffers,
    the batch-norm statistics, are broadcast at each forward)."""
    from torch.nn.parallel import DistributedDataParallel
    ids = [torch.cuda.current_device()] if torch.cuda.is_available() else None
    return DistributedDataParallel(net, device_ids=ids)
