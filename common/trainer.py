"""What every backend's ``Trainer`` shares: its signature, the meaning of its arguments and
the checks on them.  A backend's ``Trainer`` subclasses :class:`TrainerBase` and writes only
the framework calls (``setup``, ``train_step``, ``eval_step``, ``set_lr``, the optimiser's
state).  The update rules below are PyTorch's; the backends whose framework writes them
otherwise (Keras and MXNet put the learning rate inside the momentum buffer, MXNet and
Keras place Adam's epsilon differently) carry their own small optimiser with PyTorch's
rule, so that a schedule changes the learning rate the same way everywhere.
"""
from __future__ import annotations

from .train_config import check_optimizer


class TrainerBase:
    """One optimiser and loss for ``net``: ``train_step`` / ``eval_step`` on device batches.

    Args:
        net: a network from the backend's ``build``.
        lr: the learning rate (the book: 0.1); a schedule changes it with :meth:`set_lr`.
        momentum, nesterov: SGD momentum (the book: 0) in PyTorch's form,
            ``buf = momentum * buf + grad; param -= lr * buf`` (Nesterov:
            ``param -= lr * (grad + momentum * buf)``).
        weight_decay: for ``'sgd'`` and ``'adam'`` the coupled L2 term
            ``grad += weight_decay * param``; for ``'adamw'`` decoupled,
            ``param -= lr * weight_decay * param`` before the Adam step.
        optimizer: ``'sgd'`` (the book's), ``'adam'`` or ``'adamw'`` (betas 0.9, 0.999,
            epsilon 1e-8 added to the bias-corrected ``sqrt(v_hat)``, as PyTorch).
        aux_weight: weight of each auxiliary loss when the net has aux heads (the paper's
            0.3): the step optimises main loss + ``aux_weight`` x each aux loss
            (:func:`common.train_config.step_loss`).
        label_smoothing: the training loss's targets are ``(1 - e) * one_hot + e / classes``
            (PyTorch's ``CrossEntropyLoss(label_smoothing=e)``); evaluation reports the
            plain cross-entropy.
        clip_norm: if set, the gradients (of the mean loss, all parameters together) are
            scaled down to this global L2 norm before the update
            (``torch.nn.utils.clip_grad_norm_``).
        fast: the backend's fast path (a static graph, a memory layout) where it wins and
            changes no numbers beyond float32 rounding; ``False`` is the plain eager path.
            What it does in each backend: its ``Trainer`` docstring and docs/performance.md.
        world: a :class:`common.distributed.World` from the backend's ``distribute.init()``
            for data-parallel training on the framework's own engine (``None``: one
            process).  ``train_step`` then takes this worker's rows of a global batch of
            ``global_batch`` rows, and the engine combines the gradients of the mean loss over
            the whole global batch.
    """

    def __init__(self, net, *, lr=0.1, momentum=0.0, weight_decay=0.0, optimizer="sgd",
                 aux_weight=0.3, fast=True, nesterov=False, label_smoothing=0.0, clip_norm=None,
                 world=None):
        self.net, self.aux_weight, self.fast = net, aux_weight, fast
        self.world = world if world is not None and world.distributed else None
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.optimizer, self.nesterov = check_optimizer(optimizer), bool(nesterov)
        self.label_smoothing = float(label_smoothing or 0.0)
        self.clip_norm = float(clip_norm) if clip_norm else None
        if self.nesterov and (self.optimizer != "sgd" or not self.momentum):
            raise ValueError("Nesterov momentum needs optimizer='sgd' and a momentum > 0")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), not {label_smoothing}")
        self.setup()

    def setup(self):
        """Create the framework's optimiser, loss and compiled steps (the backend's part)."""
        raise NotImplementedError

    def set_lr(self, lr):
        """Use learning rate ``lr`` from the next step on (the schedule's value, computed in
        :mod:`common.schedules`)."""
        raise NotImplementedError

    def train_step(self, X, y, global_batch=None):
        """One optimiser step on device tensors (from ``to_tensor``); returns (summed loss over
        the batch, number of correct predictions) as Python numbers.  In a distributed run
        ``X``, ``y`` are this worker's rows of a global batch of ``global_batch`` rows and the
        numbers are this worker's."""
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
