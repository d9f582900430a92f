"""Keras's own model zoo (``tf.keras.applications``: InceptionV3, InceptionResNetV2), read into
the table's canonical weights.

``MODELS``: the zoo models and the presets that reproduce them; ``layers(model)`` their conv /
dense layers in creation order and canonical layout (:class:`common.net.zoo.ZooLayer`);
``read(model, spec)`` the canonical weight dict; ``outputs(model, batch)`` the zoo model's own
evaluation-mode logits; ``randomize(model, seed)`` non-trivial batch-norm tensors and biases;
``count(model)`` the parameters as Keras counts them (batch-norm moving statistics included).

Keras facts: a functional model lists its layers by depth, not in creation order; the order
is restored from the variables' creation counter (TensorFlow's unique ids: ``conv2d_3/kernel_87``).
Conv kernels are HWIO, dense kernels (in, out); ``BatchNormalization(scale=False)`` keeps no
gamma.  The zoo model eats NHWC.
"""
import re

import numpy as np
import tensorflow as tf

from common.net import zoo as Z
from common.net.spec import get_spec

NAME = "tensorflow"


def _inception_v3(seed=0):
    tf.keras.utils.set_random_seed(int(seed))   # Keras's unseeded initialisers draw from Python's, NumPy's and TF's
    return tf.keras.applications.InceptionV3(weights=None, classifier_activation=None)


def _inception_resnet_v2(seed=0):
    tf.keras.utils.set_random_seed(int(seed))
    return tf.keras.applications.InceptionResNetV2(weights=None, classifier_activation=None)


def _inception_preprocess(images):
    """``tf.keras.applications.inception_v3.preprocess_input`` (mode 'tf': x / 127.5 - 1), NHWC."""
    return tf.keras.applications.inception_v3.preprocess_input(np.array(images, np.float32))


def _inception_resnet_preprocess(images):
    """``tf.keras.applications.inception_resnet_v2.preprocess_input`` (mode 'tf'), NHWC."""
    return tf.keras.applications.inception_resnet_v2.preprocess_input(np.array(images, np.float32))


#: zoo name -> the model, its preset, its own preprocessing of 0-255 RGB (N, H, W, 3)
MODELS = {
    "inception_v3": Z.ZooModel("inception_v3", "keras_inception_v3", _inception_v3,
                               _inception_preprocess, 299),
    "inception_resnet_v2": Z.ZooModel("inception_resnet_v2", "keras_inception_resnet_v2",
                                      _inception_resnet_v2, _inception_resnet_preprocess, 299),
}

_KINDS = ((tf.keras.layers.Conv2D, "conv"), (tf.keras.layers.Dense, "dense"),
          (tf.keras.layers.BatchNormalization, "bn"))


def _kind(layer):
    return next((k for cls, k in _KINDS if isinstance(layer, cls)), None)


def _created(layer):
    """When the layer's first variable was created (TensorFlow's global unique-id counter)."""
    uid = getattr(layer.weights[0], "_unique_id", None)
    found = re.search(r"_(\d+)$", uid or "")
    if found is None:
        raise Z.ZooMismatch(f"cannot tell when Keras layer {layer.name!r} was created "
                            f"(its variable has no unique id {uid!r})")
    return int(found.group(1))


def _tensors(layer, kind):
    if kind == "conv":
        return dict(weight=layer.kernel.numpy().transpose(3, 2, 0, 1),
                    bias=layer.bias.numpy() if layer.use_bias else None)
    if kind == "dense":
        return dict(weight=layer.kernel.numpy().T, bias=layer.bias.numpy() if layer.use_bias else None)
    c = layer.moving_mean.shape[0]
    return dict(scale=layer.gamma.numpy() if layer.scale else None,
                shift=layer.beta.numpy() if layer.center else np.zeros(c, np.float32),
                mean=layer.moving_mean.numpy(), var=layer.moving_variance.numpy())


def _param_layers(model):
    found = [(layer, _kind(layer)) for layer in model.layers if _kind(layer)]
    return sorted(found, key=lambda lk: _created(lk[0]))


def layers(model):
    """The model's conv / dense layers (each with its batch norm) in creation order, canonical."""
    return Z.attach_bn((kind, layer.name, _tensors(layer, kind)) for layer, kind in _param_layers(model))


def read(model, spec):
    """The canonical weight dict of table ``spec`` (a preset name or a Spec) from a Keras model."""
    spec = get_spec(spec)
    return Z.canonical(spec, layers(model), zoo=f"Keras {model.name}")


def outputs(model, batch):
    """``{'logits': ...}``: the model's evaluation-mode output for a preprocessed NHWC batch."""
    return {"logits": model(tf.constant(batch), training=False).numpy()}


def _measure(model, batch, bns):
    """Running statistics := the batch's (a training-mode forward with momentum 0)."""
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 0.0
    try:
        model(tf.constant(batch), training=True)
    finally:
        for bn, m in zip(bns, momenta):
            bn.momentum = m


def randomize(model, seed=0, batch=None):
    """Random biases and batch-norm tensors around ``batch``'s statistics
    (:func:`common.net.zoo.randomize`), so that a swapped tensor shows."""
    found = _param_layers(model)
    bns = [layer for layer, kind in found if kind == "bn"]

    def write_bn(layer):
        def write(d):
            for v, key in ((layer.gamma if layer.scale else None, "scale"),
                           (layer.beta if layer.center else None, "shift"),
                           (layer.moving_mean, "mean"), (layer.moving_variance, "var")):
                if v is not None:
                    v.assign(d[key])
        return write

    Z.randomize(seed, [(layer.bias.shape[0], layer.bias.assign) for layer, kind in found
                       if kind != "bn" and layer.use_bias],
                [(lambda b=b: (b.moving_mean.numpy(), b.moving_variance.numpy()), b.scale, write_bn(b))
                 for b in bns],
                (lambda: _measure(model, batch, bns)) if batch is not None else None)
    return model


#: the suffix of the zoo's own weight files (Keras's ``save_weights`` in HDF5, as it publishes them)
SUFFIX = ".h5"


def save(model, path):
    """The zoo model's weights in the zoo's own published format (``model.save_weights``, HDF5)."""
    model.save_weights(path)


def count(model):
    """Parameters as Keras counts them (``count_params``: moving statistics included)."""
    return int(model.count_params())


# --------------------------------------------------------------------------- the benchmark's peer
def bench_peer(name, input_size, num_classes=1000, lr=0.1, seed=0):
    """``tf.keras.applications`` ``name`` (``weights=None``) trained as Keras's documentation
    shows: ``compile(SGD, SparseCategoricalCrossentropy(from_logits=True))`` and
    ``train_on_batch`` (what ``fit`` runs per batch), NHWC input; inference with
    ``predict_on_batch``.  (train(X, y) -> loss, infer(X) -> logits, what it is)."""
    tf.keras.utils.set_random_seed(int(seed))
    make = {"inception_v3": tf.keras.applications.InceptionV3,
            "inception_resnet_v2": tf.keras.applications.InceptionResNetV2}[name]
    model = make(weights=None, classes=num_classes, classifier_activation=None,
                 input_shape=(input_size, input_size, 3))
    model.compile(optimizer=tf.keras.optimizers.SGD(lr),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    nhwc = lambda X: np.ascontiguousarray(np.transpose(X, (0, 2, 3, 1)))   # noqa: E731

    def train(X, y):
        return float(model.train_on_batch(nhwc(X), y))

    def infer(X):
        return model.predict_on_batch(nhwc(X))
    return train, infer, f"tf.keras.applications.{make.__name__}(weights=None) (tensorflow {tf.__version__})"
