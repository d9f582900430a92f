"""TensorFlow: the framework calls of the training step (the rest is common.train.trainer)."""
import os

import contextlib

import tensorflow as tf

from common.train.train_config import step_loss
from common.train.trainer import FP16_NEEDS_GPU, TrainerBase

from . import distribute
from .model import api as model_api


def _lr(opt, variable):
    """The optimiser's learning rate for ``variable``: times its factor in ``opt.lr_factors``
    (fine-tuning's ``body_lr_factor``; a Python number, fixed when the step is traced)."""
    lr = tf.cast(opt.learning_rate, variable.dtype)
    factor = (getattr(opt, "lr_factors", None) or {}).get(opt._var_key(variable), 1.0)
    return lr if factor == 1 else lr * factor


class SGD(tf.keras.optimizers.SGD):
    """Keras's SGD with PyTorch's momentum rule: ``buf = momentum * buf + grad``, then
    ``param -= lr * buf`` (Nesterov: ``param -= lr * (grad + momentum * buf)``).

    Keras keeps ``lr * grad`` in its buffer instead (``m = momentum * m - lr * grad``): the
    same numbers while the learning rate is constant, not once a schedule changes it.
    """

    def update_step(self, gradient, variable):
        lr = _lr(self, variable)
        if not self.momentum:
            variable.assign_sub(lr * gradient)
            return
        m = tf.cast(self.momentum, variable.dtype)
        buf = self.momentums[self._index_dict[self._var_key(variable)]]
        buf.assign(m * buf + gradient)
        variable.assign_sub(lr * (gradient + m * buf if self.nesterov else buf))


class Adam(tf.keras.optimizers.Adam):
    """Keras's Adam with PyTorch's epsilon: added to the bias-corrected ``sqrt(v_hat)``.

    Keras adds it to the uncorrected ``sqrt(v)``, which at step ``t`` acts as an epsilon
    ``1 / sqrt(1 - beta_2 ** t)`` times larger (about 30x at the first step).  With
    ``decoupled_decay`` it is PyTorch's AdamW: ``param -= lr * decay * param`` first.
    """

    def __init__(self, *args, decoupled_decay=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.decoupled_decay = decoupled_decay

    def update_step(self, gradient, variable):
        dtype = variable.dtype
        lr, step = _lr(self, variable), tf.cast(self.iterations + 1, dtype)
        b1, b2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        if self.decoupled_decay:
            variable.assign_sub(lr * self.decoupled_decay * variable)
        i = self._index_dict[self._var_key(variable)]
        m, v = self._momentums[i], self._velocities[i]
        m.assign_add((gradient - m) * (1 - b1))
        v.assign_add((tf.square(gradient) - v) * (1 - b2))
        denom = tf.sqrt(v) / tf.sqrt(1 - tf.pow(b2, step)) + self.epsilon
        variable.assign_sub(lr / (1 - tf.pow(b1, step)) * m / denom)


def clip_by_norm(grads, clip_norm):
    """PyTorch's ``clip_grad_norm_``: scale by ``clip / (norm + 1e-6)`` where that is below 1."""
    norm = tf.linalg.global_norm(grads)
    coef = tf.minimum(clip_norm / (norm + 1e-6), 1.0)
    return [g * coef for g in grads]


def _autocast_variables(net):
    """Wrap the kernels and biases of the network's ``Conv2D`` and ``Dense`` layers as Keras's
    ``AutoCastVariable``, as Keras does for a layer created under a mixed policy: read as the
    layer's compute dtype inside its call, float32 everywhere else.  The layers' tracked
    variables (the optimiser's, the checkpoints', ``trainable_variables``) stay the float32
    originals; batch norm keeps its float32 variables (Keras never wraps them)."""
    from keras.src.mixed_precision.autocast_variable import AutoCastVariable, create_autocast_variable
    for layer in net._flatten_layers():
        if isinstance(layer, (tf.keras.layers.Conv2D, tf.keras.layers.Dense)):
            for attr in ("kernel", "bias"):
                v = getattr(layer, attr, None)
                if v is not None and not isinstance(v, AutoCastVariable):
                    object.__setattr__(layer, attr, create_autocast_variable(v))   # untracked


@contextlib.contextmanager
def _policy(net, policy):
    """Every layer of ``net`` under the Keras dtype ``policy`` inside the block (the one it was
    built with outside); a ``tf.function`` traced inside keeps the low-precision graph."""
    layers = list(net._flatten_layers())
    before = [layer.dtype_policy for layer in layers]
    try:
        for layer in layers:
            layer._set_dtype_policy(policy)
        yield
    finally:
        for layer, p in zip(layers, before):
            layer._set_dtype_policy(p)


class Trainer(TrainerBase):
    """TensorFlow's ``Trainer`` (arguments: :class:`common.train.trainer.TrainerBase`).

    Coupled weight decay is added to the gradient (Keras 2.15's own ``weight_decay`` is
    decoupled); the optimisers are :class:`SGD` and :class:`Adam` (PyTorch's rules).
    Label smoothing uses ``CategoricalCrossentropy(label_smoothing=)`` on one-hot
    targets (the sparse loss has none).  ``fast``: run the steps as ``tf.function``
    graphs, about 2x faster than eager on the CPU (XLA's ``jit_compile`` is slower there,
    so it is not used; see docs/performance.md).

    Created inside a ``tf.distribute`` strategy's scope (``world.scope()``, see
    :mod:`.distribute`), it trains on that strategy: the step runs in ``strategy.run`` with
    per-example losses summed over the **global** batch's size
    (``tf.nn.compute_average_loss``), the gradients are summed over the replicas (the
    gradient of the global batch's mean loss, as in one process), then checked for NaNs,
    clipped and decayed as in one process; the optimiser's slots are the strategy's
    variables.  Evaluation runs on this process's replicas only.

    ``amp`` uses ``tf.keras.mixed_precision``: the steps run with every layer under the
    ``'mixed_bfloat16'`` (``'mixed_float16'``) policy, conv and dense in the low precision,
    batch norm, the loss and the variables in float32.  Keras takes a policy when a layer is
    created, and the network here already exists in float32, so the Trainer does what the
    policy would have done then: the conv and dense weights become Keras's
    ``AutoCastVariable`` (:func:`_autocast_variables`, still float32 and still the tracked
    variables) and the policy is set on the layers for the duration of the step only
    (:func:`_policy`), so ``forward`` and export outside the Trainer compute in float32.  The
    logits are cast to float32 before the loss.  ``'fp16'`` (GPU only) wraps the optimiser
    in ``tf.keras.mixed_precision.LossScaleOptimizer`` (dynamic loss scaling; gradients
    unscaled before clipping).
    """

    FRAMEWORK = "TensorFlow"

    @classmethod
    def amp_unavailable(cls, amp):
        if amp == "fp16" and not tf.config.list_physical_devices("GPU"):
            return FP16_NEEDS_GPU
        return None

    def setup(self):
        self.strategy = tf.distribute.get_strategy() if tf.distribute.has_strategy() else None
        if self.world and not self.strategy:
            raise ValueError("a distributed Trainer must be created inside world.scope()")
        self.scope = self.strategy.scope if self.strategy else contextlib.nullcontext
        if self.optimizer == "sgd":
            self.opt = SGD(learning_rate=self.lr, momentum=self.momentum, nesterov=self.nesterov)
        else:
            decay = self.weight_decay if self.optimizer == "adamw" else 0.0
            self.opt = Adam(learning_rate=self.lr, epsilon=1e-8, decoupled_decay=decay)
        if self.body_lr_factor != 1:     # untracked: not part of the optimiser's checkpoint
            object.__setattr__(self.opt, "lr_factors", {
                self.opt._var_key(t): self.body_lr_factor for k, (t, _) in model_api.tensors(self.net).items()
                if self.roles[k] == "body" and t.trainable})
        self.policy = f"mixed_{self.amp_dtype}" if self.amp_dtype else None
        if self.policy:
            _autocast_variables(self.net)
            self.policy = tf.keras.mixed_precision.Policy(self.policy)
        if self.amp == "fp16":
            self.opt = tf.keras.mixed_precision.LossScaleOptimizer(self.opt)
        self.coupled_decay = 0.0 if self.optimizer == "adamw" else self.weight_decay
        self.loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        smooth = tf.keras.losses.CategoricalCrossentropy(from_logits=True,
                                                         label_smoothing=self.label_smoothing)
        self.train_loss = (self.loss if not self.label_smoothing else
                           lambda y, z: smooth(tf.one_hot(tf.cast(y, tf.int32), z.shape[-1]), z))
        wrap = (lambda f: tf.function(f, reduce_retracing=True)) if self.fast else (lambda f: f)
        self._train, self._eval = wrap(self._train_step), wrap(self._eval_step)
        if self.strategy:
            with self.scope():               # every worker creates the slots, in the same order
                self.opt.build(self.net.trainable_variables)
            self._train_dist, self._eval_dist = wrap(self._train_step_dist), wrap(self._eval_step_dist)

    @staticmethod
    def _nan_unless_finite(l, tensors):
        """The loss, or NaN where ``tensors`` hold a NaN or infinity.  TensorFlow's max pooling
        and (in graphs) its fused conv + ReLU skip NaNs that PyTorch propagates, so a NaN
        input can leave the loss finite while the gradients (and the update) are not."""
        total = tf.add_n([tf.reduce_sum(t) for t in tensors])
        return tf.where(tf.math.is_finite(total), l, float("nan"))

    def apply_finetune(self):
        """Frozen layers: ``trainable = False``, so their variables are not in
        ``trainable_variables`` (no gradient, no update, no decay) and, Keras 2's rule, a
        ``BatchNormalization`` that is not trainable runs in inference mode even when called
        with ``training=True``: it normalises with its moving statistics and leaves them."""
        for q in self.frozen_layers:
            self.net.param_layers[q].trainable = False

    def _checked(self, l, grads):
        """The loss to report: NaN where the gradients are not finite, except under float16
        loss scaling, whose optimiser skips such a step and lowers the scale (the first steps
        overflow by design) while the loss itself is finite."""
        return l if self.amp == "fp16" else self._nan_unless_finite(l, grads)

    def _mixed(self):
        return _policy(self.net, self.policy) if self.policy else contextlib.nullcontext()

    def _scaled(self, l):
        """The loss to differentiate: with float16 loss scaling, the scaled loss."""
        return self.opt.get_scaled_loss(l) if self.amp == "fp16" else l

    def _unscaled(self, grads):
        return self.opt.get_unscaled_gradients(grads) if self.amp == "fp16" else grads

    def _correct(self, logits, y):
        return tf.reduce_sum(tf.cast(tf.argmax(logits, 1, output_type=tf.int32)
                                     == tf.cast(y, tf.int32), tf.int32))

    def _apply(self, grads, params, **kwargs):
        """Clip the gradients of the mean loss, add the coupled weight decay, step."""
        if self.clip_norm:
            grads = clip_by_norm(grads, self.clip_norm)
        if self.coupled_decay:
            grads = [g + self.coupled_decay * p for g, p in zip(grads, params)]
        self.opt.apply_gradients(zip(grads, params), **kwargs)

    def _train_step(self, X, y):
        with tf.GradientTape() as tape, self._mixed():
            out = self.net(X, training=True)
            logits, l = step_loss(out, lambda z: self.train_loss(y, tf.cast(z, tf.float32)),
                                  self.aux_weight)
            scaled = self._scaled(l)
        params = self.net.trainable_variables
        grads = self._unscaled(tape.gradient(scaled, params))
        checked = self._checked(l, grads)
        self._apply(grads, params)
        return checked, self._correct(logits, y)

    def _per_example(self, y, z):
        """The training loss of each example (label smoothing included)."""
        if self.label_smoothing:
            return tf.keras.losses.categorical_crossentropy(
                tf.one_hot(tf.cast(y, tf.int32), z.shape[-1]), z, from_logits=True,
                label_smoothing=self.label_smoothing)
        return tf.keras.losses.sparse_categorical_crossentropy(y, z, from_logits=True)

    def _replica_step(self, X, y, global_batch):
        """One replica's part of a distributed step: its rows' summed loss over the global
        batch, the gradients summed over every replica (the gradient of the global batch's
        mean loss), then the single process's clipping, decay and update."""
        with tf.GradientTape() as tape, self._mixed():
            out = self.net(X, training=True)
            logits, l = step_loss(out, lambda z: tf.nn.compute_average_loss(
                self._per_example(y, tf.cast(z, tf.float32)), global_batch_size=global_batch),
                self.aux_weight)
            scaled = self._scaled(l)
        params = self.net.trainable_variables
        grads = tf.distribute.get_replica_context().all_reduce(
            distribute.SUM, self._unscaled(tape.gradient(scaled, params)))
        checked = self._checked(l, grads)
        self._apply(grads, params, skip_gradients_aggregation=True)
        return checked * tf.cast(global_batch, l.dtype), self._correct(logits, y)

    def _train_step_dist(self, X, y, global_batch):
        l, correct = self.strategy.run(self._replica_step, args=(X, y, global_batch))
        return (tf.add_n(distribute.local_results(self.strategy, l)),
                tf.add_n(distribute.local_results(self.strategy, correct)))

    def set_lr(self, lr):
        self.opt.learning_rate.assign(lr)

    def _eval_step(self, X, y):
        with self._mixed():
            logits = tf.cast(self.net(X, training=False), tf.float32)
        return self._nan_unless_finite(self.loss(y, logits), [X]), self._correct(logits, y)

    def _eval_step_dist(self, X, y):
        """Evaluation on this process's replicas only (no collective): summed loss, correct."""
        def replica(X, y):
            with self._mixed():
                logits = tf.cast(self.net(X, training=False), tf.float32)
            l = tf.reduce_sum(tf.keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
            return self._nan_unless_finite(l, [X]), self._correct(logits, y)
        l, correct = self.strategy.run(replica, args=(X, y))
        return (tf.add_n(distribute.local_results(self.strategy, l)),
                tf.add_n(distribute.local_results(self.strategy, correct)))

    def train_step(self, X, y, global_batch=None):
        if self.strategy:
            rows = int(y.shape[0]) * (self.world.size if self.world else 1)
            global_batch = tf.constant(global_batch or rows, tf.int32)      # a tensor: no retracing
            l, correct = self._train_dist(*distribute.split(self.strategy, X, y), global_batch)
            return float(l), int(correct)
        l, correct = self._train(X, y)
        return float(l) * int(y.shape[0]), int(correct)

    def eval_step(self, X, y):
        if self.strategy:
            l, correct = self._eval_dist(*distribute.split(self.strategy, X, y))
            return float(l), int(correct)
        l, correct = self._eval(X, y)
        return float(l) * int(y.shape[0]), int(correct)

    def _checkpoint(self):
        with self.scope():
            self.opt.build(self.net.trainable_variables)   # slots exist before a restore
        return tf.train.Checkpoint(optimizer=self.opt)

    def save_optimizer(self, directory):
        self._checkpoint().write(os.path.join(directory, "optimizer"))

    def load_optimizer(self, directory):
        self._checkpoint().read(os.path.join(directory, "optimizer")).assert_consumed()
