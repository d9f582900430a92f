"""MXNet: the framework calls of the training step (the rest is common.train.trainer)."""
import math
import os

import mxnet as mx
import numpy as onp
from mxnet import autograd, gluon, npx

from common.net import oracle, weights as W
from common.net.spec import BN_MOMENTUM
from common.train.train_config import step_loss
from common.train.trainer import FP16_NEEDS_GPU, TrainerBase

from . import distribute
from .core import _device
from .model import api

#: the optimiser's state in a checkpoint (arrays, no pickle), and Gluon's own pickle that it replaces
STATES, OLD_STATES = "optimizer.states.npz", "optimizer.states"


def _bn_running_vars(net, frozen=()):
    """(running_var parameter, output H*W) of every batch norm but those of the ``frozen``
    layers (whose statistics do not move), for the variance fix-up."""
    shapes = {r.name: r.out_shape for r in oracle.analyze(net.spec, net.input_size).layers}
    return [(m.bn.running_var, shapes[q][1] * shapes[q][2]) for q, m in net.param_layers.items()
            if getattr(m, "bn", None) is not None and q not in frozen]


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
        if state is None and not wd:
            # the book's SGD: MXNet's fused ``sgd_update``, ``w - lr*rescale*g`` in one operator
            # instead of four (80 -> 59 ms a step for Inception v3's 24M weights here); the same
            # rule as below, rounded in another order (lr*rescale first): within float32
            # rounding (tests/test_training.py::test_mxnet_fused_sgd_is_the_sgd_rule)
            mx.nd.sgd_update(weight.as_nd_ndarray(), grad.as_nd_ndarray(), lr=lr, wd=0.0,
                             rescale_grad=self.rescale_grad, out=weight.as_nd_ndarray())
            return
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
    """MXNet's ``Trainer`` (arguments: :class:`common.train.trainer.TrainerBase`).

    ``fast``: hybridize the network (one cached graph per mode, ``static_alloc``):
    bit-identical numbers; on a 2-core CPU about 1.1x faster training than eager Gluon and
    the same inference speed (the oneDNN kernels dominate); it saves more of the Python
    overhead where that matters, on a GPU (see docs/performance.md).  Not ``static_shape``:
    with it Gluon keeps a separate static buffer set for every input shape it meets (the
    last, shorter batch of an epoch, the evaluation batches, multi-scale sizes), and a
    real training run peaked at 2.8 GB against 1.75 GB without it (docs/performance.md).

    ``world`` (several workers, :mod:`.distribute`): the Trainer uses the parameter server's
    kvstore with ``update_on_kvstore=False``, so the gradients are summed over the workers
    and each worker runs the optimiser above on its own copy (the state saves as in one
    process).  The kvstore broadcasts rank 0's weights as soon as the Trainer exists, before
    the first forward (the Trainer's lazy broadcast races with the first gradient sum).

    ``amp`` is refused (:meth:`amp_unavailable`): MXNet 1.9.1's ``mxnet.contrib.amp``
    cannot reach this network (see there and docs/performance.md).
    """

    FRAMEWORK = "MXNet"

    @classmethod
    def amp_unavailable(cls, amp):
        """MXNet 1.9.1's mixed precision is ``mxnet.contrib.amp.init()``, which must run before the
        network is built and then replaces the functions of the legacy ``mx.nd`` / ``mx.sym``
        operators (``mx.nd.Convolution``, ...) with casting wrappers.  This project's Gluon
        network runs the NumPy-interface operators (``npx.set_np()``, as the book's MXNet code:
        Gluon's ``Conv2D`` calls ``F.npx.Convolution``), which it does not wrap: the network
        would still train in float32 (measured: identical logits after ``amp.init``).  (On a
        CPU without AVX-512, as this project's, oneDNN has no bfloat16 convolution either:
        ``mx.nd.Convolution`` on bfloat16 arrays fails with "could not create a primitive
        descriptor iterator"; docs/performance.md.)"""
        reason = (f"MXNet {mx.__version__}'s mxnet.contrib.amp (amp.init, to be called before the "
                  f"network exists) casts only the legacy mx.nd/mx.sym operators, not the NumPy-interface "
                  f"operators (npx.Convolution, npx.fully_connected) that this project's Gluon network "
                  f"runs under npx.set_np(), so the network would train in float32 unchanged")
        if amp == "fp16" and mx.context.num_gpus() == 0:
            return f"{FP16_NEEDS_GPU}; and {reason}"
        return reason

    def apply_finetune(self):
        """Frozen layers: ``grad_req = 'null'`` (no gradient, skipped by the update and by the
        kvstore's sums, so no decay either) and their batch norms built into the graph with
        ``use_global_stats=True``: in training mode too they normalise with their running
        statistics and leave them (Gluon has no per-layer mode under ``autograd.record()``);
        the body's other parameters get ``lr_mult = body_lr_factor``, which the optimiser's
        ``_get_lr`` applies to the Trainer's learning rate.  Runs before ``hybridize``, which
        drops any cached graph."""
        for q in self.frozen_layers:
            module = self.net.param_layers[q]
            for p in module.collect_params().values():
                p.grad_req = "null"
            if getattr(module, "bn", None) is not None:
                module.bn._kwargs["use_global_stats"] = True
        for k, (t, _) in api.tensors(self.net).items():
            if self.roles[k] == "body" and t.grad_req != "null":
                t.lr_mult = self.body_lr_factor
        self.net._clear_cached_op()      # a graph hybridized before holds the old batch norms

    def setup(self):
        net = self.net
        if self.fast:
            net.hybridize(static_alloc=True)
        hyper = {"learning_rate": self.lr, "wd": self.weight_decay}
        if self.optimizer == "sgd":
            name = "torchsgd"
            hyper.update(momentum=self.momentum, nesterov=self.nesterov)
        else:
            name = "torchadam"
            hyper.update(decoupled=self.optimizer == "adamw")
        # Parameters with grad_req 'null' (batch-norm running statistics) are not updated.
        kv = dict(kvstore=distribute.kvstore(), update_on_kvstore=False) if self.world else {}
        self.trainer = gluon.Trainer(net.collect_params(), name, hyper, **kv)
        if self.world:
            with distribute.waiting("the Trainer's broadcast of the weights"):
                self._ready()
                mx.nd.waitall()
        self.params = [p for p in net.collect_params().values() if p.grad_req != "null"]
        self.loss = gluon.loss.SoftmaxCrossEntropyLoss()
        self.soft_loss = gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=False)
        self._bn = _bn_running_vars(net, set(self.frozen_layers))

    def set_lr(self, lr):
        self.trainer.set_learning_rate(lr)

    def _train_loss(self, logits, y):
        if not self.label_smoothing:
            return self.loss(logits, y)
        k, e = logits.shape[-1], self.label_smoothing
        return self.soft_loss(logits, npx.one_hot(y, k) * (1 - e) + e / k)

    def _grads_finite(self):
        """Whether every gradient is finite (NumPy's ``isfinite`` on a host copy: 19 ms for
        Inception v3's 24M gradients here, half of MXNet's ``multi_sum_sq``; MXNet's own
        ``multi_all_finite`` has no CPU kernel in 1.9.1)."""
        return all(onp.isfinite(p.grad().asnumpy()).all() for p in self.params)

    def _grad_squares(self):
        """Each gradient's sum of squares, one fused operator, for clipping (NaN and inf stay in
        it; a sum that overflows float32, |g| ~ 1e19, counts as non-finite too)."""
        grads = [p.grad().as_nd_ndarray() for p in self.params]
        return mx.nd.multi_sum_sq(*grads, num_arrays=len(grads)).asnumpy()

    def _clip(self, squares, batch):
        """PyTorch's ``clip_grad_norm_`` on the mean gradient (Gluon's gradients are sums)."""
        norm = float(onp.sqrt(squares.astype(onp.float64).sum())) / batch
        coef = min(self.clip_norm / (norm + 1e-6), 1.0)
        for p in self.params:
            g = p.grad()
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

    def train_step(self, X, y, global_batch=None):
        """One optimiser step; returns (summed loss over the batch, correct predictions).

        As in the book, the per-example losses are summed by ``backward`` and the update
        divides the gradient by the batch size, so the optimised loss is the batch mean.
        With several workers the kvstore sums the gradients over the workers first
        (``allreduce_grads``) and the update divides by ``global_batch``: the mean over the
        global batch; clipping then sees that mean, as in one process.  Gluon updates
        batch-norm running statistics in the backward pass (with the biased variance, fixed
        up here), from this worker's rows: each worker keeps its own.
        """
        batch = global_batch if self.world else X.shape[0]
        with distribute.waiting("a training step"):
            with autograd.record():
                out = self.net(X)
                logits, l = step_loss(out, lambda z: self._train_loss(z, y), self.aux_weight)
            before = [p.data().copy() for p, _ in self._bn]
            l.backward()
            self.trainer.allreduce_grads()      # one process: nothing to do
            if self.clip_norm:
                squares = self._grad_squares()
                finite = onp.isfinite(squares).all()
                self._clip(squares, batch)
            else:
                finite = self._grads_finite()
            self.trainer.update(batch)
            if self._bn:
                self._fix_running_vars(before, X.shape[0])
            loss, correct = float(l.sum()), self._correct(logits, y)
            # oneDNN's ReLU (model.relu) maps NaN to 0: a NaN that reaches the loss in the other
            # three frameworks stops at a ReLU here, but not in the gradient (NaN * 0 is NaN in a
            # convolution's weight gradient).  The step then reports the loss those frameworks
            # report, NaN, so that the training loop's guard stops where theirs does.
            if not finite:
                loss = math.nan
            if self.world:                      # the sums and the update really done (asynchronous)
                mx.nd.waitall()
        return loss, correct

    def eval_step(self, X, y):
        with autograd.predict_mode():
            logits = self.net(X)
            return float(self.loss(logits, y).sum()), self._correct(logits, y)

    # Gluon's own ``Trainer.save_states`` / ``load_states`` write and read a Python pickle of
    # the updater's states and the optimizer object (``pickle.loads`` in
    # ``Updater.set_states``): a states file from a stranger could run code.  So the state is
    # kept as arrays in a neutral ``.npz`` instead (``np.load(allow_pickle=False)``), keyed by
    # canonical weight names, with the update counts (Adam's bias correction) as metadata.
    def _ready(self):
        trainer = self.trainer
        if not trainer._kv_initialized:
            trainer._init_kvstore()
        if trainer._params_to_init:
            trainer._init_params()
        if trainer._update_on_kvstore:      # (a kvstore over several devices by default; never ours)
            raise NotImplementedError("optimizer state kept in a kvstore is not supported")
        return trainer

    def _indexed(self):
        """The trainer's parameter index -> canonical weight name."""
        names = {id(p): k for k, (p, _) in api.tensors(self.net).items()}
        return {i: names[id(p)] for i, p in enumerate(self.trainer._params) if id(p) in names}

    def save_optimizer(self, directory):
        trainer = self._ready()
        names, opt = self._indexed(), trainer._optimizer
        arrays, layout = {}, {}
        for i, state in trainer._updaters[0].states.items():
            # the state of one parameter: none (plain SGD), an array (momentum), a tuple (Adam)
            if state is None:
                layout[names[i]], parts = None, ()
            elif isinstance(state, (tuple, list)):
                layout[names[i]], parts = len(state), state
            else:
                layout[names[i]], parts = "array", (state,)
            for j, part in enumerate(parts):
                arrays[f"{names[i]}|{j}"] = part.asnumpy()
        W.save(os.path.join(directory, STATES), arrays, optimizer=self.optimizer,
               num_update=opt.num_update, begin_num_update=opt.begin_num_update,
               counts={names[i]: n for i, n in opt._index_update_count.items()}, states=layout)

    # Over the complexity limit on purpose: a parameter's state in three shapes (none, momentum,
    # Adam), each checked against the network.
    def load_optimizer(self, directory):  # noqa: C901
        path = os.path.join(directory, STATES)
        if not os.path.exists(path) and os.path.exists(os.path.join(directory, OLD_STATES)):
            raise W.WeightsError(
                f"{os.path.join(directory, OLD_STATES)}: MXNet's optimizer state as a Python pickle "
                f"(written by an earlier version of this project), which could run code when read, "
                f"so it is not read; start a new run from the weights with --init-from "
                f"{os.path.join(directory, 'weights.npz')}")
        arrays, meta = W.load(path, with_meta=True)
        trainer = self._ready()
        index = {k: i for i, k in self._indexed().items()}
        try:
            if meta["optimizer"] != self.optimizer:
                raise ValueError(f"it is {meta['optimizer']}'s state, not {self.optimizer}'s")
            unknown = [k for k in list(meta["states"]) + list(meta["counts"]) if k not in index]
            if unknown:
                raise ValueError(f"{unknown[0]!r} is not a parameter of this network")
            ctx = _device()

            def states():
                out = {}
                for name, kind in meta["states"].items():
                    if kind is None:
                        out[index[name]] = None
                    elif kind == "array":
                        out[index[name]] = mx.nd.array(arrays[f"{name}|0"], ctx=ctx)
                    elif isinstance(kind, int) and not isinstance(kind, bool):
                        out[index[name]] = tuple(mx.nd.array(arrays[f"{name}|{j}"], ctx=ctx)
                                                 for j in range(kind))
                    else:
                        raise ValueError(f"unknown state layout {kind!r} of {name!r}")
                return out

            loaded = [states() for _ in trainer._updaters]          # one copy per device
            counts = {index[k]: int(n) for k, n in meta["counts"].items()}
            num_update, begin = int(meta["num_update"]), int(meta["begin_num_update"])
        except (KeyError, TypeError, ValueError) as e:
            raise W.WeightsError(f"{path}: not this network's optimizer state ({type(e).__name__}: {e})") from None
        for updater, st in zip(trainer._updaters, loaded):
            updater.states, updater.states_synced = st, dict.fromkeys(st, False)
        opt = trainer._optimizer
        opt.num_update, opt.begin_num_update = num_update, begin
        opt._index_update_count.clear()
        opt._index_update_count.update(counts)
