"""MXNet: the framework calls of the training step (the rest is common.trainer)."""
import os

from mxnet import autograd, gluon

from common import oracle
from common.spec import BN_MOMENTUM
from common.train_config import step_loss
from common.trainer import TrainerBase


def _bn_running_vars(net):
    """(running_var parameter, output H*W) of every batch norm, for the variance fix-up."""
    shapes = {r.name: r.out_shape for r in oracle.analyze(net.spec, net.input_size).layers}
    return [(m.bn.running_var, shapes[q][1] * shapes[q][2]) for q, m in net.param_layers.items()
            if getattr(m, "bn", None) is not None]


class Trainer(TrainerBase):
    """MXNet's ``Trainer`` (arguments: :class:`common.trainer.TrainerBase`).

    ``fast``: hybridize the network (one cached graph, ``static_alloc`` and
    ``static_shape``): bit-identical numbers; on a 2-core CPU about 1.1x faster training
    than eager Gluon and the same inference speed (the oneDNN kernels dominate); it saves
    more of the Python overhead where that matters, on a GPU (see docs/performance.md).
    """

    def setup(self):
        net = self.net
        if self.fast:
            net.hybridize(static_alloc=True, static_shape=True)
        hyper = {"learning_rate": self.lr, "wd": self.weight_decay}
        if self.optimizer == "sgd":
            hyper["momentum"] = self.momentum
        # Parameters with grad_req 'null' (batch-norm running statistics) are not updated.
        self.trainer = gluon.Trainer(net.collect_params(), self.optimizer, hyper)
        self.loss = gluon.loss.SoftmaxCrossEntropyLoss()
        self._bn = _bn_running_vars(net)

    def _fix_running_vars(self, before, batch):
        """MXNet updates the running variance with the biased batch variance; PyTorch,
        TensorFlow and (ours) Paddle with the unbiased one.  With m = 1 - BN_MOMENTUM,
        new = m*old + (1-m)*biased, so the unbiased update is new + (new - m*old)/(n-1)."""
        m = 1 - BN_MOMENTUM
        for (p, hw), old in zip(self._bn, before):
            n = batch * hw
            if n > 1:
                new = p.data()
                p.set_data(new + (new - m * old) / (n - 1))

    @staticmethod
    def _correct(logits, y):
        return int((logits.argmax(axis=1).astype(y.dtype) == y).sum())

    def train_step(self, X, y):
        """One optimiser step; returns (summed loss over the batch, correct predictions).

        As in the book, the per-example losses are summed by ``backward`` and
        ``trainer.step(batch_size)`` divides the gradient by the batch size, so the
        optimised loss is the batch mean.  Gluon updates batch-norm running statistics
        in the backward pass (with the biased variance, fixed up here).
        """
        with autograd.record():
            out = self.net(X)
            logits, l = step_loss(out, lambda z: self.loss(z, y), self.aux_weight)
        before = [p.data().copy() for p, _ in self._bn]
        l.backward()
        self.trainer.step(X.shape[0])
        if self._bn:
            self._fix_running_vars(before, X.shape[0])
        return float(l.sum()), self._correct(logits, y)

    def eval_step(self, X, y):
        with autograd.predict_mode():
            logits = self.net(X)
            return float(self.loss(logits, y).sum()), self._correct(logits, y)

    def save_optimizer(self, directory):
        self.trainer.save_states(os.path.join(directory, "optimizer.states"))

    def load_optimizer(self, directory):
        self.trainer.load_states(os.path.join(directory, "optimizer.states"))
