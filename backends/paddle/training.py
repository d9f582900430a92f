"""PaddlePaddle: the framework-specific pieces of the training loop."""
import os

import paddle
from paddle import nn

from common.train_config import check_optimizer

from .core import to_tensor


class WithLoss(nn.Layer):
    """The network and its loss as one layer (``paddle.jit.to_static`` converts layers)."""

    def __init__(self, net, aux_weight):
        super().__init__()
        self.net, self.aux_weight, self.loss = net, aux_weight, nn.CrossEntropyLoss()

    def forward(self, X, y):
        out = self.net(X)
        logits = out[0] if isinstance(out, tuple) else out
        l = self.loss(logits, y)
        if isinstance(out, tuple):
            l = l + self.aux_weight * sum(self.loss(a, y) for a in out[1:])
        return l, logits


class Trainer:
    """One optimiser and loss for ``net``: ``train_step`` / ``eval_step`` on device batches.

    Args:
        net: a network from :func:`build`.
        lr, momentum, weight_decay: SGD hyperparameters (the book: 0.1, 0, 0).
        optimizer: ``'sgd'`` (the book's) or ``'adam'``.
        aux_weight: weight of each auxiliary loss when the net has aux heads (0.3).
        fast: run the forward pass and loss as a static graph (``paddle.jit.to_static``).
    """

    def __init__(self, net, *, lr=0.1, momentum=0.0, weight_decay=0.0, optimizer="sgd",
                 aux_weight=0.3, fast=True):
        check_optimizer(optimizer)
        self.net, self.aux_weight = net, aux_weight
        params = [p for p in net.parameters() if not p.stop_gradient]
        # A float weight_decay is Paddle's L2Decay: grad += wd * param, as in PyTorch.
        wd = weight_decay or None
        if optimizer == "adam":
            self.opt = paddle.optimizer.Adam(lr, parameters=params, weight_decay=wd)
        elif momentum:
            self.opt = paddle.optimizer.Momentum(lr, momentum, parameters=params, weight_decay=wd)
        else:
            self.opt = paddle.optimizer.SGD(lr, parameters=params, weight_decay=wd)
        self.loss = nn.CrossEntropyLoss()
        self._train = WithLoss(net, aux_weight)
        if fast:
            self._train = paddle.jit.to_static(self._train)

    def train_step(self, X, y):
        """One optimiser step; returns (summed loss over the batch, correct predictions)."""
        self._train.train()
        l, logits = self._train(X, y)
        self.opt.clear_grad()
        l.backward()
        self.opt.step()
        return float(l) * y.shape[0], int((logits.argmax(1) == y).sum())

    def eval_step(self, X, y):
        """Evaluation mode, no gradients; returns (summed loss, correct predictions)."""
        self._train.eval()
        with paddle.no_grad():
            l, logits = self._train(X, y)
            return float(l) * y.shape[0], int((logits.argmax(1) == y).sum())

    def save_optimizer(self, directory):
        paddle.save(self.opt.state_dict(), os.path.join(directory, "optimizer.pdopt"))

    def load_optimizer(self, directory):
        self.opt.set_state_dict(paddle.load(os.path.join(directory, "optimizer.pdopt")))
