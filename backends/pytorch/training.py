"""PyTorch: the framework-specific pieces of the training loop."""
import os

import torch
from torch import nn

from common.train_config import check_optimizer

from .core import to_tensor


class Trainer:
    """One optimiser and loss for ``net``: ``train_step`` / ``eval_step`` on device batches.

    Args:
        net: a network from :func:`build`.
        lr, momentum, weight_decay: SGD hyperparameters (the book: 0.1, 0, 0).
        optimizer: ``'sgd'`` (the book's) or ``'adam'``.
        aux_weight: weight of each auxiliary loss when the net has aux heads (0.3).
        fast: channels-last memory format (NHWC): the network's parameters are
            converted in place (``net.to(memory_format=torch.channels_last)``, which also
            speeds up ``forward`` on it afterwards) and every batch is passed as
            channels-last, so oneDNN runs its convolutions without converting layouts at
            every call.  About 1.3-1.4x faster training on the CPU, no start-up cost; the
            numbers change only by float32 summation order (as with another thread
            count).  ``torch.compile`` was measured and is not used: slower here and
            about a minute of compilation (see docs/performance.md).
    """

    def __init__(self, net, *, lr=0.1, momentum=0.0, weight_decay=0.0, optimizer="sgd",
                 aux_weight=0.3, fast=True):
        check_optimizer(optimizer)
        self.net, self.aux_weight = net, aux_weight
        self.memory_format = torch.channels_last if fast else None
        if fast:
            net.to(memory_format=torch.channels_last)
        params = [p for p in net.parameters() if p.requires_grad]
        if optimizer == "sgd":
            self.opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        else:
            self.opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        self.loss = nn.CrossEntropyLoss()

    def _input(self, X):
        if self.memory_format is not None and X.dim() == 4:
            return X.contiguous(memory_format=self.memory_format)
        return X

    def train_step(self, X, y):
        """One optimiser step; returns (summed loss over the batch, correct predictions)."""
        X = self._input(X)
        self.net.train()
        out = self.net(X)
        logits = out[0] if isinstance(out, tuple) else out
        l = self.loss(logits, y)
        if isinstance(out, tuple):
            l = l + self.aux_weight * sum(self.loss(a, y) for a in out[1:])
        self.opt.zero_grad()
        l.backward()
        self.opt.step()
        return float(l.detach()) * y.shape[0], int((logits.argmax(1) == y).sum())

    def eval_step(self, X, y):
        """Evaluation mode, no gradients; returns (summed loss, correct predictions)."""
        X = self._input(X)
        self.net.eval()
        with torch.no_grad():
            logits = self.net(X)
            return float(self.loss(logits, y)) * y.shape[0], int((logits.argmax(1) == y).sum())

    def save_optimizer(self, directory):
        torch.save(self.opt.state_dict(), os.path.join(directory, "optimizer.pt"))

    def load_optimizer(self, directory):
        self.opt.load_state_dict(torch.load(os.path.join(directory, "optimizer.pt")))
