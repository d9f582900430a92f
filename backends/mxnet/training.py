"""MXNet: the framework-specific pieces of the training loop."""
import os

from mxnet import autograd, gluon

from common.train_config import check_optimizer


class Trainer:
    """One optimiser and loss for ``net``: ``train_step`` / ``eval_step`` on device batches.

    Args:
        net: a network from :func:`build`.
        lr, momentum, weight_decay: SGD hyperparameters (the book: 0.1, 0, 0).
        optimizer: ``'sgd'`` (the book's) or ``'adam'``.
        aux_weight: weight of each auxiliary loss when the net has aux heads (0.3).
        fast: hybridize the network (one cached graph, ``static_alloc`` and
            ``static_shape``): bit-identical numbers; on a 2-core CPU it is about as fast
            as eager Gluon (the oneDNN kernels dominate), and it saves the Python
            overhead where that matters, on a GPU (see docs/performance.md).
    """

    def __init__(self, net, *, lr=0.1, momentum=0.0, weight_decay=0.0, optimizer="sgd",
                 aux_weight=0.3, fast=True):
        check_optimizer(optimizer)
        self.net, self.aux_weight = net, aux_weight
        if fast:
            net.hybridize(static_alloc=True, static_shape=True)
        hyper = {"learning_rate": lr, "wd": weight_decay}
        if optimizer == "sgd":
            hyper["momentum"] = momentum
        # Parameters with grad_req 'null' (batch-norm running statistics) are not updated.
        self.trainer = gluon.Trainer(net.collect_params(), optimizer, hyper)
        self.loss = gluon.loss.SoftmaxCrossEntropyLoss()

    @staticmethod
    def _correct(logits, y):
        return int((logits.argmax(axis=1).astype(y.dtype) == y).sum())

    def train_step(self, X, y):
        """One optimiser step; returns (summed loss over the batch, correct predictions).

        As in the book, the per-example losses are summed by ``backward`` and
        ``trainer.step(batch_size)`` divides the gradient by the batch size, so the
        optimised loss is the batch mean.  Gluon updates batch-norm running statistics
        in the backward pass.
        """
        with autograd.record():
            out = self.net(X)
            logits = out[0] if isinstance(out, tuple) else out
            l = self.loss(logits, y)
            if isinstance(out, tuple):
                l = l + self.aux_weight * sum(self.loss(a, y) for a in out[1:])
        l.backward()
        self.trainer.step(X.shape[0])
        return float(l.sum()), self._correct(logits, y)

    def eval_step(self, X, y):
        """Evaluation mode, no gradients; returns (summed loss, correct predictions)."""
        with autograd.predict_mode():
            logits = self.net(X)
            return float(self.loss(logits, y).sum()), self._correct(logits, y)

    def save_optimizer(self, directory):
        self.trainer.save_states(os.path.join(directory, "optimizer.states"))

    def load_optimizer(self, directory):
        self.trainer.load_states(os.path.join(directory, "optimizer.states"))
