"""PaddlePaddle: the framework-specific pieces of the training loop."""
import os

import paddle
from paddle import nn

from common.train_config import check_optimizer, step_loss

from .model import _tensors


class Trainer:
    """One optimiser and loss for ``net``: ``train_step`` / ``eval_step`` on device batches.

    Args:
        net: a network from :func:`build`.
        lr, momentum, weight_decay: SGD hyperparameters (the book: 0.1, 0, 0); a weight
            decay is Paddle's ``L2Decay`` (``grad += wd * param``, as in PyTorch).
        optimizer: ``'sgd'`` (the book's) or ``'adam'``.
        aux_weight: weight of each auxiliary loss when the net has aux heads (0.3).
        fast: Paddle's dynamic mode is already its fastest on the CPU here:
            ``paddle.jit.to_static`` gives the same numbers and the same step time
            (2.1 s per batch of 32 at 96x96) after ~10 s of tracing per input shape
            (see docs/performance.md); kept for the common signature.
    """

    def __init__(self, net, *, lr=0.1, momentum=0.0, weight_decay=0.0, optimizer="sgd",
                 aux_weight=0.3, fast=True):
        check_optimizer(optimizer)
        self.net, self.aux_weight = net, aux_weight
        params = [p for p in net.parameters() if not p.stop_gradient]
        wd = weight_decay or None
        if optimizer == "adam":
            self.opt = paddle.optimizer.Adam(lr, parameters=params, weight_decay=wd)
        elif momentum:
            self.opt = paddle.optimizer.Momentum(lr, momentum, parameters=params, weight_decay=wd)
        else:
            self.opt = paddle.optimizer.SGD(lr, parameters=params, weight_decay=wd)
        self.loss = nn.CrossEntropyLoss()

    def train_step(self, X, y):
        """One optimiser step; returns (summed loss over the batch, correct predictions)."""
        self.net.train()
        out = self.net(X)
        logits, l = step_loss(out, lambda z: self.loss(z, y), self.aux_weight)
        self.opt.clear_grad()
        l.backward()
        self.opt.step()
        return float(l) * y.shape[0], int((logits.argmax(1) == y).sum())

    def eval_step(self, X, y):
        """Evaluation mode, no gradients; returns (summed loss, correct predictions)."""
        self.net.eval()
        with paddle.no_grad():
            logits = self.net(X)
            return float(self.loss(logits, y)) * y.shape[0], int((logits.argmax(1) == y).sum())

    # Paddle keys the optimiser's state by parameter names that are unique per process
    # (``conv2d_7.w_0_velocity_0``); the file keys it by canonical weight names instead,
    # so a checkpoint loads into any network built from the same table.
    def _names(self):
        return {t.name: k for k, (t, _) in _tensors(self.net).items() if not t.stop_gradient}

    def save_optimizer(self, directory):
        names = self._names()
        state = {f"{names[p]}|{acc}": var.numpy() for acc, per in self.opt._accumulators.items()
                 for p, var in per.items()}
        paddle.save(state, os.path.join(directory, "optimizer.pdopt"))

    def load_optimizer(self, directory):
        state = paddle.load(os.path.join(directory, "optimizer.pdopt"), return_numpy=True)
        params = {k: p for p, k in self._names().items()}
        if self.opt._accumulators:      # already stepped: overwrite the live accumulators
            for key, value in state.items():
                name, acc = key.split("|")
                self.opt._accumulators[acc][params[name]].set_value(value)
        else:                           # created lazily on the first step, as NAME_ACC_0
            self.opt.set_state_dict({f"{params[k.split('|')[0]]}_{k.split('|')[1]}_0": v
                                     for k, v in state.items()})
