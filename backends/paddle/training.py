"""PaddlePaddle: the framework calls of the training step (the rest is common.trainer)."""
import os
import warnings

import paddle
from paddle import nn

from common.distributed import loss_scale
from common.train_config import step_loss
from common.trainer import TrainerBase
from common.weights import WeightsError

from . import distribute
from .model import api, read_pickle


class Trainer(TrainerBase):
    """Paddle's ``Trainer`` (arguments: :class:`common.trainer.TrainerBase`); weight decay is
    Paddle's ``L2Decay`` (``grad += wd * param``, as in PyTorch).

    ``fast``: Paddle's dynamic mode is already its fastest on the CPU here:
    ``paddle.jit.to_static`` gives the same numbers and the same step time (2.1 s per
    batch of 32 at 96x96) after ~10 s of tracing per input shape (see
    docs/performance.md); kept for the common signature.

    With a ``world`` the training forward runs through :func:`.distribute.wrap`
    (``paddle.DataParallel``), whose ``backward`` averages the gradients over the workers;
    clipping then sees the averaged gradients, the same on every worker.
    """

    def setup(self):
        self.params = params = [p for p in self.net.parameters() if not p.stop_gradient]
        lr, wd = self.lr, self.weight_decay or None
        if self.optimizer == "adam":
            self.opt = paddle.optimizer.Adam(lr, parameters=params, weight_decay=wd)
        elif self.optimizer == "adamw":
            self.opt = paddle.optimizer.AdamW(lr, parameters=params, weight_decay=self.weight_decay)
        elif self.momentum:
            self.opt = paddle.optimizer.Momentum(lr, self.momentum, parameters=params,
                                                 use_nesterov=self.nesterov, weight_decay=wd)
        else:
            self.opt = paddle.optimizer.SGD(lr, parameters=params, weight_decay=wd)
        self.loss = nn.CrossEntropyLoss()
        self.train_loss = nn.CrossEntropyLoss(label_smoothing=self.label_smoothing)
        self.model = distribute.wrap(self.net, self.world) if self.world else self.net

    def set_lr(self, lr):
        self.opt.set_lr(lr)

    def _clip(self):
        """PyTorch's ``clip_grad_norm_``: scale by ``clip / (norm + 1e-6)`` where that is below 1."""
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = float(paddle.sqrt(paddle.add_n([(g * g).sum() for g in grads])))
        coef = min(self.clip_norm / (norm + 1e-6), 1.0)
        if coef < 1.0:
            with paddle.no_grad():
                for g in grads:
                    g.scale_(coef)

    def train_step(self, X, y, global_batch=None):
        self.net.train()
        out = self.model(X)
        logits, l = step_loss(out, lambda z: self.train_loss(z, y), self.aux_weight)
        self.opt.clear_grad()
        if self.world:           # DataParallel averages over workers: scale to the global batch's mean
            (l * loss_scale(y.shape[0], global_batch, self.world.size)).backward()
        else:
            l.backward()
        if self.clip_norm:
            self._clip()
        self.opt.step()
        return float(l) * y.shape[0], int((logits.argmax(1) == y).sum())

    def eval_step(self, X, y):
        self.net.eval()
        with paddle.no_grad():
            logits = self.net(X)
            return float(self.loss(logits, y)) * y.shape[0], int((logits.argmax(1) == y).sum())

    # Paddle keys the optimiser's state by parameter names that are unique per process
    # (``conv2d_7.w_0_velocity_0``); the file keys it by canonical weight names instead,
    # so a checkpoint loads into any network built from the same table.
    def _names(self):
        return {t.name: k for k, (t, _) in api.tensors(self.net).items() if not t.stop_gradient}

    def save_optimizer(self, directory):
        names = self._names()
        state = {f"{names[p]}|{acc}": var.numpy() for acc, per in self.opt._accumulators.items()
                 for p, var in per.items()}
        with warnings.catch_warnings():      # plain SGD has no state: Paddle warns, and still saves
            warnings.filterwarnings("ignore", message="The input state dict is empty")
            paddle.save(state, os.path.join(directory, "optimizer.pdopt"))

    def load_optimizer(self, directory):
        """Read ``optimizer.pdopt`` with the restricted unpickler (:func:`.model.read_pickle`),
        never ``paddle.load``: a pickle that names anything but arrays is refused, unrun."""
        path = os.path.join(directory, "optimizer.pdopt")
        state = read_pickle(path, "Paddle optimizer state")
        params = {k: p for p, k in self._names().items()}
        unknown = [k for k in state if k.count("|") != 1 or k.split("|")[0] not in params]
        if unknown:
            raise WeightsError(f"{path}: optimizer state for {unknown[0]!r}, which is not a "
                               f"parameter of this network")
        if self.opt._accumulators:      # already stepped: overwrite the live accumulators
            for key, value in state.items():
                name, acc = key.split("|")
                self.opt._accumulators[acc][params[name]].set_value(value)
        else:                           # created lazily on the first step, as NAME_ACC_0
            self.opt.set_state_dict({f"{params[k.split('|')[0]]}_{k.split('|')[1]}_0": v
                                     for k, v in state.items()})
