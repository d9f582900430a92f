"""What every backend's ``Trainer`` shares: its signature, the meaning of its arguments and
the checks on them.  A backend's ``Trainer`` subclasses :class:`TrainerBase` and writes only
the framework calls (``setup``, ``train_step``, ``eval_step``, ``set_lr``, the optimiser's
state).  The update rules below are PyTorch's; the backends whose framework writes them
otherwise (Keras and MXNet put the learning rate inside the momentum buffer, MXNet and
Keras place Adam's epsilon differently) carry their own small optimiser with PyTorch's
rule, so that a schedule changes the learning rate the same way everywhere.
"""
from __future__ import annotations

import contextlib

import math
from typing import Optional

from ..net.spec import composite, iter_blocks, sequences
from . import finetune
from .train_config import AMP, check_optimizer

#: the low-precision float formats of ``amp``: (the frameworks' dtype name, significand bits
#: including the implicit one); float32's for comparison
AMP_FORMATS = {"bf16": ("bfloat16", 8), "fp16": ("float16", 11)}
FLOAT32_BITS = 24


class AmpError(ValueError):
    """Mixed precision asked for where the framework cannot do it, or an unknown ``amp``
    value; the message names the framework and the reason (the command lines print it as
    one ``error:`` line)."""


def parse_amp(amp) -> Optional[str]:
    """``None`` (float32) for ``None``, ``False``, ``''`` or ``'off'``; else ``'bf16'`` or
    ``'fp16'`` (``'bfloat16'`` and ``'float16'`` accepted); anything else is an
    :class:`AmpError`."""
    if amp is None or amp is False or (isinstance(amp, str) and amp.lower() in ("", "off", "none")):
        return None
    names = {k: k for k in AMP} | {fmt[0]: k for k, fmt in AMP_FORMATS.items()}
    if not isinstance(amp, str) or amp.lower() not in names:
        raise AmpError(f"amp must be None (float32), 'bf16' or 'fp16', not {amp!r}")
    return names[amp.lower()]


def amp_unavailable_message(framework: str, amp: str, reason: str) -> str:
    """The message of a framework that cannot train with ``amp`` here."""
    return (f"--amp {amp} ({AMP_FORMATS[amp][0]} mixed precision) is not available with {framework} "
            f"here: {reason}. Train without --amp (float32)"
            + ("" if amp == "bf16" else ", or use --amp bf16 on a backend that supports it")
            + " (see docs/performance.md, 'Mixed precision').")


#: the reason every backend gives for ``amp='fp16'`` without a GPU
FP16_NEEDS_GPU = ("float16 mixed precision needs a GPU (with dynamic loss scaling); on a CPU "
                  "the frameworks have no fast float16 kernels, so they do not offer it")


def unit_roundoff(amp: Optional[str]) -> float:
    """The relative rounding error of one rounding to nearest: ``2 ** -p`` for ``p``
    significand bits (bf16: 2^-8 = 3.9e-3; fp16: 2^-11; float32: 2^-24)."""
    return 2.0 ** -(AMP_FORMATS[amp][1] if amp else FLOAT32_BITS)


def _depth(layer) -> int:
    """Conv / dense layers on the longest path through a layer (a composite: its longest sequence)."""
    if layer.kind in ("conv", "dense"):
        return 1
    if composite(layer) is None:
        return 0
    return max(sum(_depth(sub) for _, sub in seq) for seq in sequences(layer))


def weighted_depth(spec) -> int:
    """The number of conv / dense layers on the longest path through the table (an
    Inception block counts its longest branch): 22 for every GoogLeNet preset, as the
    paper says."""
    return sum(_depth(layer) for _, _, layer in iter_blocks(spec))


def amp_loss_rtol(amp: Optional[str], spec) -> float:
    """The relative tolerance of a loss computed with ``amp`` against the same step in float32.

    Each conv / dense layer under mixed precision rounds its input and its weights to the
    low-precision format (relative error at most ``u``, :func:`unit_roundoff`, uniform
    over ``[-u, u]``: standard deviation ``u / sqrt(3)``) and, where the framework keeps it
    so, its output: about three roundings per layer, accumulated in float32.  Independent
    rounding errors add in quadrature, so after ``D`` layers (:func:`weighted_depth`) the
    logits carry a relative error of about ``sqrt(3 D) * u / sqrt(3) = sqrt(D) * u``; the
    cross-entropy's gradient with respect to the logits has an L1 norm of at most 2, so
    for logits of order one the loss moves by about as much, relatively.  That is the
    tolerance: ``sqrt(22) * 2**-8 = 1.83e-2`` for bf16 and GoogLeNet.  The loss, a mean
    over examples and classes, averages part of the logits' error away: measured
    differences over three gentle SGD steps are 2e-5 to 3.6e-3 (tests/test_amp.py,
    docs/performance.md).  It bounds rounding, not chaos: steps large enough to make the
    runs part (lr 0.01 there) can leave it after a few updates.
    Two backends' bf16 losses then agree within twice it (each is within it of its
    float32 loss, and the float32 losses agree within 1e-4, tests/test_equivalence.py)."""
    return math.sqrt(weighted_depth(spec)) * unit_roundoff(amp)


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
            (:func:`common.train.train_config.step_loss`).
        label_smoothing: the training loss's targets are ``(1 - e) * one_hot + e / classes``
            (PyTorch's ``CrossEntropyLoss(label_smoothing=e)``); evaluation reports the
            plain cross-entropy.
        clip_norm: if set, the gradients (of the mean loss, all parameters together) are
            scaled down to this global L2 norm before the update
            (``torch.nn.utils.clip_grad_norm_``).
        fast: the backend's fast path (a static graph, a memory layout) where it wins and
            changes no numbers beyond float32 rounding; ``False`` is the plain eager path.
            What it does in each backend: its ``Trainer`` docstring and docs/performance.md.
        world: a :class:`common.train.distributed.World` from the backend's ``distribute.init()``
            for data-parallel training on the framework's own engine (``None``: one
            process).  ``train_step`` then takes this worker's rows of a global batch of
            ``global_batch`` rows, and the engine combines the gradients of the mean loss over
            the whole global batch.
        amp: mixed precision, opt-in: ``None`` / ``False`` (the default) trains in float32;
            ``'bf16'`` runs ``train_step`` and ``eval_step`` in bfloat16 mixed precision (the
            weights, the optimiser and the loss stay float32), ``'fp16'`` in float16 with
            dynamic loss scaling (GPU only), each through the framework's own API
            (``torch.autocast``, ``tf.keras.mixed_precision``, ``paddle.amp``).  Where the
            framework cannot do it here the constructor raises :class:`AmpError` naming the
            framework and the reason (:meth:`check_amp` tells before a network exists); see
            docs/performance.md, "Mixed precision".  The network outside the Trainer
            (``forward``, ``stage_outputs``, export) computes in float32.
        freeze: fine-tuning (:mod:`common.train.finetune`, docs/finetune.md): ``'none'`` (the
            default), ``'body'`` (every stage but the last) or ``'upto:STAGE'``.  The frozen
            stages' parameters are left out of the optimiser (no update, no weight decay) and
            their batch norms run in inference mode in ``train_step`` too: they normalise
            with their running statistics and do not update them (the pitfall of keras#9214
            avoided).  The backend's part is :meth:`apply_finetune`, called before ``setup``.
        body_lr_factor: the learning rate of the body's trained parameters is this times the
            head's (the schedule's value); the head is the last stage and the aux heads.
    """

    def __init__(self, net, *, lr=0.1, momentum=0.0, weight_decay=0.0, optimizer="sgd",
                 aux_weight=0.3, fast=True, nesterov=False, label_smoothing=0.0, clip_norm=None,
                 world=None, amp=None, freeze="none", body_lr_factor=1.0):
        self.amp = self.check_amp(amp)
        #: the frameworks' name of the low-precision dtype (``'bfloat16'``, ``'float16'``), or None
        self.amp_dtype = AMP_FORMATS[self.amp][0] if self.amp else None
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
        self.freeze, self.body_lr_factor = finetune.normalize_freeze(freeze), float(body_lr_factor)
        finetune.check_trainable(net.spec, self.freeze, self.body_lr_factor)
        #: canonical tensor name -> 'frozen' / 'body' / 'head'; the frozen stages' conv / dense layers
        self.roles = finetune.roles(net.spec, self.freeze, getattr(net, "input_size", None))
        self.frozen_layers = finetune.frozen_layers(net.spec, self.freeze)
        if self.frozen_layers or self.body_lr_factor != 1:
            self.apply_finetune()
        with self.world.scope() if self.world else contextlib.nullcontext():   # the engine's variables
            self.setup()

    @classmethod
    def check_amp(cls, amp) -> Optional[str]:
        """``amp`` normalised (:func:`parse_amp`), or :class:`AmpError` if the framework cannot
        train with it on this machine; needs no network (the command line asks first)."""
        amp = parse_amp(amp)
        if amp:
            reason = cls.amp_unavailable(amp)
            if reason:
                raise AmpError(amp_unavailable_message(cls.FRAMEWORK, amp, reason))
        return amp

    #: the framework's name in messages
    FRAMEWORK = "this framework"

    @classmethod
    def amp_unavailable(cls, amp: str) -> Optional[str]:
        """Why the framework cannot train with ``amp`` (``'bf16'`` / ``'fp16'``) on this
        machine, or ``None`` if it can (the backend's part: it asks its framework)."""
        return f"{cls.__name__} does not implement mixed precision"

    def setup(self):
        """Create the framework's optimiser, loss and compiled steps (the backend's part)."""
        raise NotImplementedError

    def apply_finetune(self):
        """Freeze the parameters of ``self.frozen_layers`` (and keep their batch norms in
        inference mode in training steps), and scale the learning rate of the tensors whose
        role (``self.roles``) is ``'body'`` by ``self.body_lr_factor`` (the backend's part;
        ``setup`` runs after it)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement fine-tuning")

    def set_lr(self, lr):
        """Use learning rate ``lr`` from the next step on (the schedule's value, computed in
        :mod:`common.train.schedules`)."""
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
