"""PaddlePaddle: the framework calls of the training step (the rest is common.train.trainer)."""
import contextlib
import os
import warnings

import paddle
from paddle import nn

from common.train.distributed import loss_scale
from common.train.train_config import step_loss
from common.train.trainer import FP16_NEEDS_GPU, TrainerBase
from common.net.weights import WeightsError

from . import distribute
from .model import api, read_pickle


class Trainer(TrainerBase):
    """Paddle's ``Trainer`` (arguments: :class:`common.train.trainer.TrainerBase`); weight decay is
    Paddle's ``L2Decay`` (``grad += wd * param``, as in PyTorch).

    ``fast``: Paddle's dynamic mode is already its fastest on the CPU here:
    ``paddle.jit.to_static`` gives the same numbers and the same step time (2.1 s per
    batch of 32 at 96x96) after ~10 s of tracing per input shape (see
    docs/performance.md); kept for the common signature.

    With a ``world`` the training forward runs through :func:`.distribute.wrap`
    (``paddle.DataParallel``), whose ``backward`` averages the gradients over the workers;
    clipping then sees the averaged gradients, the same on every worker.

    ``amp``: the forward pass runs inside ``paddle.amp.auto_cast(dtype='bfloat16' |
    'float16')`` (level O1: the white-listed operators, conv and matmul, in the low
    precision), the loss on float32 logits; ``'fp16'`` adds ``paddle.amp.GradScaler``
    (dynamic loss scaling; gradients unscaled before clipping).  Paddle 3.3.1 does
    mixed precision on CUDA, XPU and custom devices only: on the CPU ``auto_cast`` warns
    and computes in float32, so ``amp`` is refused there (:meth:`amp_unavailable`).
    """

    FRAMEWORK = "Paddle"

    @classmethod
    def amp_unavailable(cls, amp):
        place = paddle.framework._current_expected_place()
        if not (place.is_gpu_place() or place.is_xpu_place() or place.is_custom_place()):
            return (FP16_NEEDS_GPU if amp == "fp16" else
                    f"Paddle {paddle.__version__}'s paddle.amp.auto_cast works only on CUDA, XPU and "
                    f"custom devices; on the CPU it warns 'amp_guard can only be enabled on CUDAPlace, "
                    f"XPUPlace, and CustomPlace' and computes in float32 "
                    f"(paddle.amp.is_bfloat16_supported() is {paddle.amp.is_bfloat16_supported()} here)")
        supported = paddle.amp.is_bfloat16_supported if amp == "bf16" else paddle.amp.is_float16_supported
        if not supported():
            return f"paddle.amp.is_{'b' if amp == 'bf16' else ''}float16_supported() is False on {place}"
        return None

    def apply_finetune(self):
        """Frozen layers: ``stop_gradient = True`` on their parameters (left out of the
        optimiser: no update, no decay, no gradient sum in ``DataParallel``); their batch
        norms are put back in ``eval()`` after every ``net.train()`` (:meth:`_hold_frozen_bn`):
        they normalise with their running statistics and do not update them."""
        self._frozen_bn = []
        for q in self.frozen_layers:
            module = self.net.param_layers[q]
            for p in module.parameters():
                p.stop_gradient = True
            if getattr(module, "bn", None) is not None:
                self._frozen_bn.append(module.bn)

    def _hold_frozen_bn(self):
        for bn in getattr(self, "_frozen_bn", ()):
            bn.eval()

    def _groups(self, params):
        """The parameters, or with a ``body_lr_factor`` two groups: Paddle multiplies the
        optimiser's learning rate by a group's ``learning_rate`` for each of its parameters
        (``optimize_attr``), so ``set_lr`` scales both."""
        if self.body_lr_factor == 1:
            return params
        body = {id(t) for k, (t, _) in api.tensors(self.net).items() if self.roles[k] == "body"}
        groups = [dict(params=[p for p in params if id(p) in body], learning_rate=self.body_lr_factor),
                  dict(params=[p for p in params if id(p) not in body], learning_rate=1.0)]
        return [g for g in groups if g["params"]]

    def setup(self):
        self.params = [p for p in self.net.parameters() if not p.stop_gradient]
        params = self._groups(self.params)
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
        dtype = self.amp_dtype
        self.autocast = ((lambda: paddle.amp.auto_cast(dtype=dtype, level="O1")) if dtype
                         else contextlib.nullcontext)
        self.scaler = paddle.amp.GradScaler() if self.amp == "fp16" else None

    def set_lr(self, lr):
        self.opt.set_lr(lr)

    @staticmethod
    def _float(z):
        return z if z.dtype == paddle.float32 else z.astype("float32")

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
        self._hold_frozen_bn()
        with self.autocast():
            out = self.model(X)
        logits, l = step_loss(out, lambda z: self.train_loss(self._float(z), y), self.aux_weight)
        self.opt.clear_grad()
        # DataParallel averages over workers: scaled to the global batch's mean
        grad_of = l * loss_scale(y.shape[0], global_batch, self.world.size) if self.world else l
        if self.scaler is not None:
            self.scaler.scale(grad_of).backward()
            if self.clip_norm:
                self.scaler.unscale_(self.opt)
                self._clip()
            self.scaler.step(self.opt)           # skipped if the scaled gradients overflowed
            self.scaler.update()
        else:
            grad_of.backward()
            if self.clip_norm:
                self._clip()
            self.opt.step()
        return float(l) * y.shape[0], int((logits.argmax(1) == y).sum())

    def eval_step(self, X, y):
        self.net.eval()
        with paddle.no_grad(), self.autocast():
            logits = self._float(self.net(X))
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
