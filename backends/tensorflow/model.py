"""TensorFlow: the table's layers as ``tf.keras`` layers; the rest is :class:`common.net.model.NetAPI`.

Inside, maps are NHWC; outside (inputs, stage outputs, weights) everything is in the
canonical NCHW / OIHW order.  Padding is explicit and symmetric as in the table (never
TensorFlow's asymmetric ``'same'`` for strided layers), so shapes and numbers match
the other backends.
"""
import contextlib
from collections import OrderedDict

import numpy as np
import tensorflow as tf

from common.net import model as M
from common.net.weights import WeightsError
from common.net import oracle
from common.net.spec import BN_MOMENTUM, pair

from . import distribute
from .core import nchw, to_tensor

layers = tf.keras.layers


def _same(kernel, stride, padding):
    """Whether TensorFlow's ``'same'`` equals the table's symmetric padding (stride 1, odd
    kernel, half of it padded) in both dimensions."""
    return all(s == 1 and 2 * p == k - 1 for k, s, p in zip(pair(kernel), pair(stride), pair(padding)))


def _pads(p, extra=(0, 0)):
    (ph, pw), (eh, ew) = pair(p), extra
    return [[0, 0], [ph, ph + eh], [pw, pw + ew], [0, 0]]


class ConvBlock(layers.Layer):
    """``Conv`` record: (symmetric zero padding,) conv, optional batch norm, optional ReLU."""

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        same = _same(layer.kernel, layer.stride, layer.padding)
        self.pad = None if same or not any(pair(layer.padding)) else _pads(layer.padding)
        self.conv = layers.Conv2D(layer.out, pair(layer.kernel), pair(layer.stride),
                                  padding="same" if same else "valid", use_bias=layer.bias)
        self.bn = (layers.BatchNormalization(momentum=1 - BN_MOMENTUM, epsilon=layer.eps, scale=layer.scale)
                   if layer.norm == "bn" else None)
        self.relu = layer.act == "relu"

    def call(self, X, training=False):
        if self.pad:
            X = tf.pad(X, self.pad)
        X = self.conv(X)
        if self.bn is not None:
            X = self.bn(X, training=training)
        return tf.nn.relu(X) if self.relu else X


class DenseBlock(layers.Layer):
    """``Dense`` record: linear, optional ReLU."""

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        self.linear = layers.Dense(layer.out, use_bias=layer.bias)
        self.relu = layer.act == "relu"

    def call(self, X):
        X = self.linear(X)
        return tf.nn.relu(X) if self.relu else X


def _ceil_extra(layer, shape):
    """Cells to add on the bottom and right so that floor rounding gives the table's ceil-mode
    size (TensorFlow has no ceil mode)."""
    if not getattr(layer, "ceil", False):
        return (0, 0)
    _, _, ho, wo = oracle._window(layer, shape)
    return tuple(max(0, (o - 1) * s + k - (n + 2 * p)) for o, n, k, s, p in
                 zip((ho, wo), shape[1:], pair(layer.kernel), pair(layer.stride), pair(layer.padding)))


class MaxPool(layers.Layer):
    """Max pooling; padded cells are -inf, so they never win (PyTorch's semantics); ceil mode
    pads the bottom and right with more -inf cells."""

    def __init__(self, layer, shape, **kwargs):
        super().__init__(**kwargs)
        self.k, self.s, self.p = pair(layer.kernel), pair(layer.stride), pair(layer.padding)
        self.extra = _ceil_extra(layer, shape)

    def call(self, X):
        if _same(self.k, self.s, self.p):
            return tf.nn.max_pool2d(X, self.k, 1, "SAME")
        if any(self.p) or any(self.extra):
            X = tf.pad(X, _pads(self.p, self.extra), constant_values=float("-inf"))
        return tf.nn.max_pool2d(X, self.k, self.s, "VALID")


class AvgPool(layers.Layer):
    """Average pooling, the padding convention as the table states it: padded zeros counted
    (``count_pad``: pad, then average) or not (TensorFlow's own ``'SAME'`` where it applies,
    otherwise the window sums divided by the number of real cells in each window)."""

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        self.k, self.s, self.p = pair(layer.kernel), pair(layer.stride), pair(layer.padding)
        self.count_pad = layer.count_pad

    def call(self, X):
        if not any(self.p):
            return tf.nn.avg_pool2d(X, self.k, self.s, "VALID")
        if not self.count_pad and _same(self.k, self.s, self.p):
            return tf.nn.avg_pool2d(X, self.k, 1, "SAME")       # TensorFlow's SAME excludes the padding
        ones = tf.pad(tf.ones_like(X[:1, :, :, :1]), _pads(self.p))      # before X is pooled
        X = tf.nn.avg_pool2d(tf.pad(X, _pads(self.p)), self.k, self.s, "VALID")
        if self.count_pad:
            return X
        return X / tf.nn.avg_pool2d(ones, self.k, self.s, "VALID")


def _bins(n, out):
    """PyTorch's adaptive-pooling matrix: row i averages cells floor(i*n/out) .. ceil((i+1)*n/out) - 1."""
    m = np.zeros((out, n), np.float32)
    for i in range(out):
        lo, hi = (i * n) // out, -(-((i + 1) * n) // out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


class AdaptiveAvgPool(layers.Layer):
    """Adaptive average pooling as PyTorch bins it, for the input size the net is built for:
    two averaging matrices (rows, then columns)."""

    def __init__(self, layer, shape, **kwargs):
        super().__init__(**kwargs)
        (h, w), (_, n, m) = pair(layer.size), shape
        self.rows, self.cols = tf.constant(_bins(n, h)), tf.constant(_bins(m, w))

    def call(self, X):
        return tf.einsum("ih,nhwc,jw->nijc", self.rows, X, self.cols)


class Affine(layers.Layer):
    """A fixed per-channel ``x * scale + shift`` (channels last)."""

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.shift = tf.constant(layer.scale), tf.constant(layer.shift)

    def call(self, X):
        return X * self.scale + self.shift


class DownscaleDropout(layers.Layer):
    """Paddle's ``downscale_in_infer`` dropout: training zeroes without rescaling, evaluation
    multiplies by ``1 - rate``."""

    def __init__(self, rate, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate
        self.drop = layers.Dropout(rate)

    def call(self, X, training=False):
        return (self.drop(X, training=True) if training else X) * (1 - self.rate)


class LRN(layers.Layer):
    """Local response normalisation across channels, PyTorch's ``LocalResponseNorm(size, alpha, beta, k)``."""

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer

    def call(self, X):
        l = self.layer
        return tf.nn.local_response_normalization(X, depth_radius=l.size // 2, bias=l.k,
                                                  alpha=l.alpha / l.size, beta=l.beta)


class Flatten(layers.Layer):
    """Flatten in canonical (C, H, W) order, so dense weights are the same on every backend."""

    def call(self, X):
        if X.shape.rank == 4:
            X = tf.transpose(X, (0, 3, 1, 2))
        return tf.reshape(X, (-1, int(np.prod(X.shape[1:]))))


class Chain(layers.Layer):
    """Layers in sequence (an Inception branch or an aux head), passing ``training`` on."""

    def __init__(self, chain, **kwargs):
        super().__init__(**kwargs)
        self.chain = chain

    def call(self, X, training=False):
        for layer in self.chain:
            X = layer(X, training=training)
        return X


class Concat(layers.Layer):
    """A Concat (an Inception block): run the branches on one input, concatenate channels, ``act``."""

    def __init__(self, branches, act=None, **kwargs):
        super().__init__(**kwargs)
        self.branches = branches
        self.relu = act == "relu"

    def call(self, X, training=False):
        X = tf.concat([b(X, training=training) for b in self.branches], axis=-1)
        return tf.nn.relu(X) if self.relu else X


class Residual(layers.Layer):
    """``act(x + scale * body(x))``."""

    def __init__(self, body, scale, act, **kwargs):
        super().__init__(**kwargs)
        self.body, self.scale, self.relu = body, scale, act == "relu"

    def call(self, X, training=False):
        X = X + self.scale * self.body(X, training=training)
        return tf.nn.relu(X) if self.relu else X


def _keras_name(qname):
    return qname.replace(".", "_")


#: the table's records -> Keras layers: ``make(layer, in_shape, name)`` (named after the table)
LAYERS = {
    "conv": lambda l, shape, name: ConvBlock(l, name=_keras_name(name)),
    "dense": lambda l, shape, name: DenseBlock(l, name=_keras_name(name)),
    "maxpool": lambda l, shape, name: MaxPool(l, shape, name=_keras_name(name)),
    "avgpool": lambda l, shape, name: AvgPool(l, name=_keras_name(name)),
    "adaptive_avg": lambda l, shape, name: AdaptiveAvgPool(l, shape, name=_keras_name(name)),
    "affine": lambda l, shape, name: Affine(l, name=_keras_name(name)),
    "lrn": lambda l, shape, name: LRN(l, name=_keras_name(name)),
    "gap": lambda l, shape, name: layers.GlobalAveragePooling2D(keepdims=True, name=_keras_name(name)),
    "gmp": lambda l, shape, name: layers.GlobalMaxPooling2D(keepdims=True, name=_keras_name(name)),
    "flatten": lambda l, shape, name: Flatten(name=_keras_name(name)),
    "dropout": lambda l, shape, name: (layers.Dropout(l.rate, name=_keras_name(name))
                                       if l.mode == "upscale_in_train" else
                                       DownscaleDropout(l.rate, name=_keras_name(name))),
}
#: where Keras keeps the weight file's tensors, and its layouts: conv HWIO, dense (in, out)
WEIGHT_NAMES = M.WeightNames(weight="kernel", bias="bias",
                             bn=("gamma", "beta", "moving_mean", "moving_variance"),
                             conv_axes=(2, 3, 1, 0), dense_axes=(1, 0))


class GoogLeNet(tf.keras.Model):
    """GoogLeNet from a :class:`common.net.spec.Spec` (NHWC inside).

    ``net(X)`` returns the logits; ``net(X, training=True)`` with auxiliary heads, the
    named tuple ``(logits, aux2, aux1)``.  ``net.spec``, ``net.input_size`` and
    ``net.param_layers`` (qualified name -> ConvBlock / DenseBlock) describe it.
    """

    def get_config(self):
        """Weights travel as files (save_native / the neutral .npz); the table is not
        serialised into Keras configs."""
        return {"spec": self.spec.name, "input_size": self.input_size}

    def __init__(self, spec, input_size):
        super().__init__(name=f"googlenet_{spec.name}".replace("*", "_"))
        self.spec, self.input_size = spec, input_size
        self.blocks, self.aux, param_layers = M.construct(
            spec, input_size, LAYERS, lambda q, branches, act: Concat(branches, act, name=_keras_name(q)),
            lambda q, modules: Chain(modules, name=_keras_name(q)),
            lambda q, body, scale, act: Residual(body, scale, act, name=_keras_name(q)))
        self._param_names = list(param_layers)
        self._param_modules = list(param_layers.values())

    @property
    def param_layers(self):
        return OrderedDict(zip(self._param_names, self._param_modules))

    def block(self, qname):
        return self.blocks[qname]

    def call_block(self, qname, X, training=False):
        return self.blocks[qname](X, training=training)

    def call_aux(self, name, X, training=False):
        return self.aux[name](X, training=training)

    def call(self, X, training=False):
        return M.run(self.spec, lambda q, x: self.call_block(q, x, training),
                     lambda a, x: self.call_aux(a, x, training), X, training=training)


def _new(spec, input_size):
    """A new network whose weights exist: a dummy batch runs through every block and aux head."""
    net = GoogLeNet(spec, input_size)
    X = tf.zeros((1, input_size, input_size, spec.in_channels))
    net(X)                                         # builds the Keras model
    if spec.aux:
        taps = M.run(spec, net.call_block, net.call_aux, X, collect=[h.tap for h in spec.aux])
        for h in spec.aux:
            net.call_aux(h.name, taps[h.tap])
    return net


api = M.NetAPI(
    new=_new, call=distribute.call,
    evaluating=lambda net: contextlib.nullcontext(),     # blocks are called with training=False
    count=lambda layer: sum(int(np.prod(v.shape)) for v in layer.trainable_variables),
    to_tensor=to_tensor, to_canonical=nchw, names=WEIGHT_NAMES,
    read=lambda v: distribute.local(v).numpy(), write=lambda v, a: v.assign(a))
build, count_params, forward, stage_outputs, features, layer_table = (
    api.build, api.count_params, api.forward, api.stage_outputs, api.features, api.layer_table)
get_weights, set_weights, init_weights = api.get_weights, api.set_weights, api.init_weights
aux_outputs = api.aux_outputs

NATIVE_SUFFIX = ".weights.h5"


def save_native(net, path):
    """Keras's own format: ``net.save_weights(path)`` (HDF5)."""
    net.save_weights(path)
    return path


#: the order in which Keras stores a layer's variables (``vars/0``, ``vars/1`` ...)
_VAR_ORDER = {"conv": ("kernel", "bias"), "linear": ("kernel", "bias"),
              "bn": ("gamma", "beta", "moving_mean", "moving_variance")}


def _native_key(place, sub, attr):
    """The HDF5 path of a tensor in a ``.weights.h5`` file.  Keras 2.15's ``save_weights``
    stores each layer once, under the first attribute (in reverse alphabetical order) that
    reaches it: :class:`GoogLeNet`'s ``param_layers``, a container whose layers it names by
    class, ``conv_block``, ``conv_block_1``, ... and ``dense_block``, ``dense_block_1``, ... in
    construction order; in each, ``conv`` / ``bn`` / ``linear`` and their ``vars/<i>`` (a batch
    norm without scale has no ``gamma``: its ``beta`` is ``vars/0``)."""
    cls = "conv_block" if place.kind == "conv" else "dense_block"
    layer = cls if place.index == 0 else f"{cls}_{place.index}"
    order = [a for a in _VAR_ORDER[sub] if place.scale or a != "gamma"]
    return f"param_layers/{layer}/{sub}/vars/{order.index(attr) if attr in order else 'absent'}"


def read_native(path, spec, input_size=None):
    """The tensors of a Keras ``.weights.h5`` file, as canonical names and layouts (not yet
    checked: ``common.net.weights.read`` and ``set_weights`` check them); no network is built.

    Read with ``h5py``: every dataset of the HDF5 file, by its path (HDF5 holds arrays and
    names, no code).  A damaged or truncated file raises ``WeightsError``.
    """
    import h5py                       # installed with TensorFlow

    tensors = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            tensors[name] = obj[()]

    try:
        with h5py.File(path, "r") as f:
            f.visititems(visit)
    except FileNotFoundError:
        raise
    except Exception as e:            # OSError (truncated file, not HDF5), KeyError ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise WeightsError(f"{path}: not a readable Keras weight file ({type(e).__name__}: "
                           f"{first})") from None
    return M.from_native(spec, WEIGHT_NAMES, _native_key, tensors, input_size)


def load_native(net, path):
    """``set_weights(net, read_native(path, ...))``: checked in full before the network is touched."""
    return set_weights(net, read_native(path, net.spec, net.input_size))
