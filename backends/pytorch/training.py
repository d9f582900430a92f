"""PyTorch: the framework calls of the training step (the rest is common.train.trainer)."""
import contextlib
import os

import torch
from torch import nn

from common.train.distributed import loss_scale
from common.train.train_config import step_loss
from common.train.trainer import FP16_NEEDS_GPU, TrainerBase

from . import distribute

from .model import api as model_api, safe_load


class Trainer(TrainerBase):
    """PyTorch's ``Trainer`` (arguments: :class:`common.train.trainer.TrainerBase`).

    ``fast=True`` (the default) trains in the channels-last memory format: the network's
    parameters are converted in place (``net.to(memory_format=torch.channels_last)``;
    ``forward`` on it then runs channels-last too) and every batch is passed
    channels-last, so oneDNN runs its convolutions without layout conversions: 1.3x faster
    training on a CPU, no start-up cost.  It computes the same function as eager NCHW
    (identical to 1e-16 in float64, ``tests/test_fast_paths.py``); in float32 it sums in
    another order, so its results differ in the last bits, as every framework's do (see
    docs/fidelity.md on ReLU ties).  ``fast=False`` is plain NCHW eager PyTorch;
    ``torch.compile`` was measured slower here, with about a minute of compilation.
    ``'channels_last'`` is accepted as a name for ``True``.  On a GPU ``fast=True`` turns on
    cuDNN's autotuning (``torch.backends.cudnn.benchmark``) and uses channels-last only with
    ``amp`` (measured on an H100: in float32 it trains at the same speed and infers 0.86x,
    in bf16 it trains 1.2-1.5x faster); float32 stays float32 (no TF32: :mod:`.core`).

    ``amp``: ``train_step`` and ``eval_step`` run the forward pass and the loss inside
    ``torch.autocast(device_type, dtype=torch.bfloat16 | torch.float16)`` (convolutions and
    matrix products in the low precision, the loss on float32 logits), the backward pass
    outside it, as PyTorch's AMP recipe says; ``'fp16'`` adds ``torch.amp.GradScaler``
    (dynamic loss scaling; gradients unscaled before clipping) and needs CUDA, ``'bf16'``
    runs on the CPU (oneDNN) and on GPUs with bfloat16 (``torch.cuda.is_bf16_supported``).
    The parameters and the optimiser stay float32.
    """

    FRAMEWORK = "PyTorch"

    @classmethod
    def amp_unavailable(cls, amp):
        if not torch.cuda.is_available():
            return FP16_NEEDS_GPU if amp == "fp16" else None
        if amp == "bf16" and not torch.cuda.is_bf16_supported():
            return f"the GPU {torch.cuda.get_device_name(0)} has no bfloat16 (torch.cuda.is_bf16_supported() is False)"
        return None

    def setup(self):
        net, fast = self.net, self.fast
        if fast not in (True, False, "channels_last"):
            raise ValueError(f"fast must be True, False or 'channels_last', not {fast!r}")
        # channels-last: on a CPU always (oneDNN); on a GPU only with amp, where tensor cores
        # want NHWC (measured on an H100: float32 the same or slower, bf16 1.2-1.5x faster)
        device = next(net.parameters()).device.type
        gpu = device == "cuda"
        self.memory_format = torch.channels_last if fast and (not gpu or self.amp) else None
        if fast and gpu:
            # cuDNN times its algorithms for each new input shape and keeps the fastest;
            # the shapes of a run are few (the batch, the last batch, the scales)
            torch.backends.cudnn.benchmark = True
        if self.memory_format is not None:
            net.to(memory_format=self.memory_format)
        self.params = [p for p in net.parameters() if p.requires_grad]
        groups = self._groups()
        if self.optimizer == "sgd":
            self.opt = torch.optim.SGD(groups, lr=self.lr, momentum=self.momentum,
                                       weight_decay=self.weight_decay, nesterov=self.nesterov)
        else:
            adam = torch.optim.Adam if self.optimizer == "adam" else torch.optim.AdamW
            self.opt = adam(groups, lr=self.lr, weight_decay=self.weight_decay)
        self.loss = nn.CrossEntropyLoss()
        self.train_loss = nn.CrossEntropyLoss(label_smoothing=self.label_smoothing)
        self.model = distribute.wrap(net, self.world) if self.world else net
        dtype = getattr(torch, self.amp_dtype) if self.amp_dtype else None
        self.autocast = ((lambda: torch.autocast(device, dtype=dtype)) if dtype is not None
                         else contextlib.nullcontext)
        self.scaler = torch.amp.GradScaler(device) if self.amp == "fp16" else None

    def apply_finetune(self):
        """Frozen layers: ``requires_grad_(False)`` (left out of the optimiser and of DDP's
        gradient sums); their batch norms are put back in ``eval()`` after every
        ``net.train()`` (:meth:`_hold_frozen_bn`), so they normalise with their running
        statistics and do not update them."""
        self._frozen_bn = []
        for q in self.frozen_layers:
            module = self.net.param_layers[q]
            module.requires_grad_(False)
            if getattr(module, "bn", None) is not None:
                self._frozen_bn.append(module.bn)

    def _groups(self):
        """The optimiser's parameter groups: one, or with a ``body_lr_factor`` the body's
        (``lr_factor`` = the factor) and the head's; ``set_lr`` scales each group's lr."""
        if self.body_lr_factor == 1:
            return self.params
        trained = {id(p) for p in self.params}
        body = [t for k, (t, _) in model_api.tensors(self.net).items()
                if self.roles[k] == "body" and id(t) in trained]
        ids = {id(p) for p in body}
        head = [p for p in self.params if id(p) not in ids]
        return [g for g in (dict(params=body, lr=self.lr * self.body_lr_factor, lr_factor=self.body_lr_factor),
                            dict(params=head, lr=self.lr, lr_factor=1.0)) if g["params"]]

    def _hold_frozen_bn(self):
        for bn in getattr(self, "_frozen_bn", ()):
            bn.eval()

    def set_lr(self, lr):
        for group in self.opt.param_groups:
            group["lr"] = lr * group.get("lr_factor", 1.0)

    def _input(self, X):
        if self.memory_format is not None and X.dim() == 4:
            return X.contiguous(memory_format=self.memory_format)
        return X

    def train_step(self, X, y, global_batch=None):
        X = self._input(X)
        self.net.train()
        self._hold_frozen_bn()
        with self.autocast():    # the loss of float32 logits (a no-op cast without amp)
            out = self.model(X)
            logits, l = step_loss(out, lambda z: self.train_loss(z.float(), y), self.aux_weight)
        self.opt.zero_grad()
        grad_of = l * loss_scale(y.shape[0], global_batch, self.world.size) if self.world else l
        # (DDP averages over workers: scaled to the global batch's mean)
        if self.scaler is not None:
            self.scaler.scale(grad_of).backward()
            if self.clip_norm:
                self.scaler.unscale_(self.opt)
                torch.nn.utils.clip_grad_norm_(self.params, self.clip_norm)
            self.scaler.step(self.opt)           # skipped if the scaled gradients overflowed
            self.scaler.update()
        else:
            grad_of.backward()
            if self.clip_norm:
                torch.nn.utils.clip_grad_norm_(self.params, self.clip_norm)
            self.opt.step()
        return float(l.detach()) * y.shape[0], int((logits.argmax(1) == y).sum())

    def eval_step(self, X, y):
        X = self._input(X)
        self.net.eval()
        with torch.no_grad(), self.autocast():
            logits = self.net(X).float()
            return float(self.loss(logits, y)) * y.shape[0], int((logits.argmax(1) == y).sum())

    def save_optimizer(self, directory):
        torch.save(self.opt.state_dict(), os.path.join(directory, "optimizer.pt"))

    def load_optimizer(self, directory):
        """Read by :func:`.model.safe_load` (``torch.load(weights_only=True)``: tensors and plain
        containers only), so an ``optimizer.pt`` cannot run code; anything else is refused."""
        self.opt.load_state_dict(safe_load(os.path.join(directory, "optimizer.pt"), "PyTorch optimizer state"))
