"""What every backend's ``Trainer`` shares: its signature, the meaning of its arguments and
the checks on them.  A backend's ``Trainer`` subclasses :class:`TrainerBase` and writes only
the framework calls (``setup``, ``train_step``, ``eval_step``, the optimiser's state)."""
from __future__ import annotations

from .train_config import check_optimizer


class TrainerBase:
    """One optimiser and loss for ``net``: ``train_step`` / ``eval_step`` on device batches.

    Args:
        net: a network from the backend's ``build``.
        lr, momentum, weight_decay: SGD hyperparameters (the book: 0.1, 0, 0).  Weight
            decay is the coupled L2 term ``grad += weight_decay * param`` in every backend.
        optimizer: ``'sgd'`` (the book's) or ``'adam'`` (PyTorch's update, epsilon 1e-8).
        aux_weight: weight of each auxiliary loss when the net has aux heads (the paper's
            0.3): the step optimises main loss + ``aux_weight`` x each aux loss
            (:func:`common.train_config.step_loss`).
        fast: the backend's fast path (a static graph, a memory layout) where it wins and
            changes no numbers beyond float32 rounding; ``False`` is the plain eager path.
            What it does in each backend: its ``Trainer`` docstring and docs/performance.md.
    """

    def __init__(self, net, *, lr=0.1, momentum=0.0, weight_decay=0.0, optimizer="sgd",
                 aux_weight=0.3, fast=True):
        self.net, self.aux_weight, self.fast = net, aux_weight, fast
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.optimizer = check_optimizer(optimizer)
        self.setup()

    def setup(self):
        """Create the framework's optimiser, loss and compiled steps (the backend's part)."""
        raise NotImplementedError

    def train_step(self, X, y):
        """One optimiser step on device tensors (from ``to_tensor``); returns (summed loss over
        the batch, number of correct predictions) as Python numbers."""
        raise NotImplementedError

    def eval_step(self, X, y):
        """Evaluation mode, no gradients; returns (summed loss, correct predictions)."""
        raise NotImplementedError

    def save_optimizer(self, directory):
        """Write the optimiser's state into ``directory`` in the framework's own format."""
        raise NotImplementedError

    def load_optimizer(self, directory):
        """Read the optimiser's state written by :meth:`save_optimizer`."""
        raise NotImplementedError
