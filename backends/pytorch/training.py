"""PyTorch: the framework calls of the training step (the rest is common.trainer)."""
import os

import torch
from torch import nn

from common.train_config import step_loss
from common.trainer import TrainerBase

from .model import safe_load


class Trainer(TrainerBase):
    """PyTorch's ``Trainer`` (arguments: :class:`common.trainer.TrainerBase`).

    ``fast``: ``True`` (the default) is eager PyTorch, already its fastest path that
    changes no numbers (``torch.compile`` was measured: slower here, and about a minute
    of compilation).  ``fast='channels_last'`` opts in to the channels-last memory format:
    the network's parameters are converted in place (``net.to(memory_format=
    torch.channels_last)``; ``forward`` on it is then channels-last too) and every batch
    is passed channels-last, so oneDNN runs its convolutions without layout conversions:
    about 1.3x faster training on a CPU, no start-up cost.  It is not the default because
    it changes float32 summation order: one step stays within 1e-5 of eager, but three
    momentum steps drift past the equivalence tests' 1e-4 (a ReLU input at 1e-8 flips
    sign).  See docs/performance.md.
    """

    def setup(self):
        net, fast = self.net, self.fast
        if fast not in (True, False, "channels_last"):
            raise ValueError(f"fast must be True, False or 'channels_last', not {fast!r}")
        self.memory_format = torch.channels_last if fast == "channels_last" else None
        if self.memory_format is not None:
            net.to(memory_format=self.memory_format)
        params = [p for p in net.parameters() if p.requires_grad]
        if self.optimizer == "sgd":
            self.opt = torch.optim.SGD(params, lr=self.lr, momentum=self.momentum,
                                       weight_decay=self.weight_decay)
        else:
            self.opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        self.loss = nn.CrossEntropyLoss()

    def _input(self, X):
        if self.memory_format is not None and X.dim() == 4:
            return X.contiguous(memory_format=self.memory_format)
        return X

    def train_step(self, X, y):
        X = self._input(X)
        self.net.train()
        out = self.net(X)
        logits, l = step_loss(out, lambda z: self.loss(z, y), self.aux_weight)
        self.opt.zero_grad()
        l.backward()
        self.opt.step()
        return float(l.detach()) * y.shape[0], int((logits.argmax(1) == y).sum())

    def eval_step(self, X, y):
        X = self._input(X)
        self.net.eval()
        with torch.no_grad():
            logits = self.net(X)
            return float(self.loss(logits, y)) * y.shape[0], int((logits.argmax(1) == y).sum())

    def save_optimizer(self, directory):
        torch.save(self.opt.state_dict(), os.path.join(directory, "optimizer.pt"))

    def load_optimizer(self, directory):
        """Read by :func:`.model.safe_load` (``torch.load(weights_only=True)``: tensors and plain
        containers only), so an ``optimizer.pt`` cannot run code; anything else is refused."""
        self.opt.load_state_dict(safe_load(os.path.join(directory, "optimizer.pt"), "PyTorch optimizer state"))
