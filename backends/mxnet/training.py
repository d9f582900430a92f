"""MXNet: the framework calls of the training step (the rest is common.trainer)."""
import os

import mxnet as mx
from mxnet import autograd, gluon, np, npx

from common import oracle
from common.spec import BN_MOMENTUM
from common.train_config import step_loss
from common.trainer import TrainerBase


def _bn_running_vars(net):
    """(running_var parameter, output H*W) of every batch norm, for the variance fix-up."""
    shapes = {r.name: r.out_shape for r in oracle.analyze(net.spec, net.input_size).layers}
    return [(m.bn.running_var, shapes[q][1] * shapes[q][2]) for q, m in net.param_layers.items()
            if getattr(m, "bn", None) is not None]


@mx.optimizer.register
class TorchSGD(mx.optimizer.Optimizer):
    """SGD with PyTorch's momentum rule: ``buf = momentum * buf + grad``, ``param -= lr * buf``
    (Nesterov: ``param -= lr * (grad + momentum * buf)``), coupled weight decay in ``grad``.

    MXNet's own ``sgd`` keeps ``lr * grad`` in its buffer (``mom = momentum * mom - lr *
    grad``): the same numbers while the learning rate is constant, not under a schedule.
    """

    def __init__(self, momentum=0.0, nesterov=False, **kwargs):
        super().__init__(**kwargs)
        self.momentum, self.nesterov = momentum, nesterov

    def create_state(self, index, weight):
        return weight.zeros_like() if self.momentum else None

    def update(self, index, weight, grad, state):
        self._update_count(index)
        lr, wd = self._get_lr(index), self._get_wd(index)
        g = grad * self.rescale_grad
        if wd:
            g = g + wd * weight
        if state is not None:
            state[:] = self.momentum * state + g
            g = g + self.momentum * state if self.nesterov else state
        weight[:] = weight - lr * g


@mx.optimizer.register
class TorchAdam(mx.optimizer.Optimizer):
    """Adam with PyTorch's epsilon (added to the bias-corrected ``sqrt(v_hat)``; MXNet's
    ``adam`` adds it to ``sqrt(v)``); ``decoupled=True`` is PyTorch's AdamW
    (``param -= lr * wd * param`` first), else ``wd`` is coupled into the gradient."""

    def __init__(self, beta1=0.9, beta2=0.999, epsilon=1e-8, decoupled=False, **kwargs):
        super().__init__(**kwargs)
        self.beta1, self.beta2, self.epsilon, self.decoupled = beta1, beta2, epsilon, decoupled

    def create_state(self, index, weight):
        return weight.zeros_like(), weight.zeros_like()

    def update(self, index, weight, grad, state):
        self._update_count(index)
        t = self._index_update_count[index]
        lr, wd = self._get_lr(index), self._get_wd(index)
        g = grad * self.rescale_grad
        if wd and self.decoupled:
            weight[:] = weight - lr * wd * weight
        elif wd:
            g = g + wd * weight
        m, v = state
        m[:] = self.beta1 * m + (1 - self.beta1) * g
        v[:] = self.beta2 * v + (1 - self.beta2) * g * g
        denom = (v ** 0.5) / (1 - self.beta2 ** t) ** 0.5 + self.epsilon
        weight[:] = weight - lr / (1 - self.beta1 ** t) * m / denom


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
            name = "torchsgd"
            hyper.update(momentum=self.momentum, nesterov=self.nesterov)
        else:
            name = "torchadam"
            hyper.update(decoupled=self.optimizer == "adamw")
        # Parameters with grad_req 'null' (batch-norm running statistics) are not updated.
        self.trainer = gluon.Trainer(net.collect_params(), name, hyper)
        self.params = [p for p in net.collect_params().values() if p.grad_req != "null"]
        self.loss = gluon.loss.SoftmaxCrossEntropyLoss()
        self.soft_loss = gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=False)
        self._bn = _bn_running_vars(net)

    def set_lr(self, lr):
        self.trainer.set_learning_rate(lr)

    def _train_loss(self, logits, y):
        if not self.label_smoothing:
            return self.loss(logits, y)
        k, e = logits.shape[-1], self.label_smoothing
        return self.soft_loss(logits, npx.one_hot(y, k) * (1 - e) + e / k)

    def _clip(self, batch):
        """PyTorch's ``clip_grad_norm_`` on the mean gradient (Gluon's gradients are sums)."""
        grads = [p.grad() for p in self.params]
        norm = float(np.sqrt(sum((g * g).sum() for g in grads))) / batch
        coef = min(self.clip_norm / (norm + 1e-6), 1.0)
        for g in grads:
            g *= coef

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
            logits, l = step_loss(out, lambda z: self._train_loss(z, y), self.aux_weight)
        before = [p.data().copy() for p, _ in self._bn]
        l.backward()
        if self.clip_norm:
            self._clip(X.shape[0])
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
