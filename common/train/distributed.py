"""What a data-parallel run means, written once for every backend.

A backend's ``distribute.init()`` connects the process to its framework's own engine and
returns a :class:`World`: this worker's rank, the number of workers, the engine's name and
the framework calls the loop needs (a sum over workers, a barrier).  Everything else is
decided here, identically for MXNet, PyTorch, TensorFlow and Paddle:

* ``--batch-size`` is the **global** batch.  Worker ``r`` of ``N`` takes the ``r``-th of
  ``N`` contiguous, nearly equal slices of each global batch (``numpy.array_split``), so
  the examples, their order and their augmentation are those of the single-process run;
* the loss a worker optimises is scaled so that what the engine combines is the gradient
  of the mean loss over the global batch, whatever the slices' sizes (see
  :func:`loss_scale`);
* initial weights are identical on every worker (the recipe's initialisation is drawn from
  the seed; engines that broadcast rank 0's weights change nothing);
* the training loss and accuracy, and the evaluation, are summed over the workers (each
  worker evaluates its slices of the test set), so the numbers are the single process's;
* only rank 0 writes the run record, the curves and the checkpoints.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np


@dataclass
class World:
    """This process's place in a data-parallel run (``size`` 1: a single process)."""
    rank: int = 0
    size: int = 1
    engine: str = "single process"
    local_rank: int = 0
    all_sum: Optional[Callable] = None            # np.ndarray -> its sum over the workers
    barrier: Optional[Callable] = None
    shutdown: Optional[Callable] = None
    scope: Callable = field(default=contextlib.nullcontext)

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """Whether this worker writes the run's files (rank 0)."""
        return self.rank == 0

    def rows(self, n: int) -> slice:
        """This worker's contiguous slice of a global batch of ``n`` rows."""
        return shard_rows(n, self.rank, self.size)

    def sum(self, values) -> np.ndarray:
        """``values`` (numbers) summed over every worker, as float64."""
        values = np.asarray(values, dtype=np.float64)
        return values if not self.distributed else np.asarray(self.all_sum(values), dtype=np.float64)

    def gather(self, value: float) -> list:
        """One number from every worker, in rank order."""
        slots = np.zeros(self.size)
        slots[self.rank] = value
        return self.sum(slots).tolist()

    def close(self):
        if self.shutdown is not None:
            self.shutdown()


SINGLE = World()


def shard_rows(n: int, rank: int, size: int) -> slice:
    """Rows of worker ``rank`` of ``size`` in a batch of ``n`` rows: ``numpy.array_split``'s
    contiguous split (the first ``n % size`` workers get one row more)."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def loss_scale(local: int, global_batch: int, size: int) -> float:
    """The factor on a worker's mean loss (over its ``local`` rows) for engines that
    **average** gradients over workers (PyTorch DDP, Paddle DataParallel): with it, the
    average is the gradient of the mean loss over the global batch, also when the slices
    differ in size (a last, partial batch).  Engines that **sum** (TensorFlow's
    ``compute_average_loss``, MXNet's kvstore) divide by the global batch themselves."""
    return local * size / global_batch
