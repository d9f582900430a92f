"""TensorFlow: GoogLeNet built from the channel-spec table with ``tf.keras`` layers.

Inside, maps are NHWC; outside (inputs, stage outputs, weights) everything is in the
canonical NCHW / OIHW order.  Padding is explicit and symmetric as in the table (never
TensorFlow's asymmetric ``'same'`` for strided layers), so shapes and numbers match
the other backends.
"""
from collections import OrderedDict

import numpy as np
import tensorflow as tf

from common import model as M, weights as W
from common.spec import BN_EPS, BN_MOMENTUM, get_spec

from .core import nchw, to_numpy, to_tensor

layers = tf.keras.layers


def _same(kernel, stride, padding):
    """Whether TensorFlow's ``'same'`` equals the table's symmetric padding (stride 1, odd kernel)."""
    return stride == 1 and 2 * padding == kernel - 1


def _pads(p):
    return [[0, 0], [p, p], [p, p], [0, 0]]


class ConvBlock(layers.Layer):
    """``Conv`` record: (symmetric zero padding,) conv, optional batch norm, optional ReLU."""

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        same = _same(layer.kernel, layer.stride, layer.padding)
        self.pad = None if same or not layer.padding else _pads(layer.padding)
        self.conv = layers.Conv2D(layer.out, layer.kernel, layer.stride,
                                  padding="same" if same else "valid", use_bias=layer.bias)
        self.bn = (layers.BatchNormalization(momentum=1 - BN_MOMENTUM, epsilon=BN_EPS)
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


class MaxPool(layers.Layer):
    """Max pooling; padded cells are -inf, so they never win (PyTorch's semantics)."""

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        self.k, self.s, self.p = layer.kernel, layer.stride, layer.padding

    def call(self, X):
        if _same(self.k, self.s, self.p):
            return tf.nn.max_pool2d(X, self.k, 1, "SAME")
        if self.p:
            X = tf.pad(X, _pads(self.p), constant_values=float("-inf"))
        return tf.nn.max_pool2d(X, self.k, self.s, "VALID")


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
    """Inception: run the branches on the same input, concatenate channels."""

    def __init__(self, branches, **kwargs):
        super().__init__(**kwargs)
        self.branches = branches

    def call(self, X, training=False):
        return tf.concat([b(X, training=training) for b in self.branches], axis=-1)


def _primitive(layer, name):
    kind = layer.kind
    if kind == "conv":
        return ConvBlock(layer, name=name)
    if kind == "dense":
        return DenseBlock(layer, name=name)
    if kind == "maxpool":
        return MaxPool(layer, name=name)
    if kind == "avgpool":
        return layers.AveragePooling2D(layer.kernel, layer.stride, name=name)
    if kind == "lrn":
        return LRN(layer, name=name)
    if kind == "gap":
        return layers.GlobalAveragePooling2D(keepdims=True, name=name)
    if kind == "gmp":
        return layers.GlobalMaxPooling2D(keepdims=True, name=name)
    if kind == "flatten":
        return Flatten(name=name)
    if kind == "dropout":
        return layers.Dropout(layer.rate, name=name)
    raise ValueError(f"unknown layer kind {kind!r}")


class GoogLeNet(tf.keras.Model):
    """GoogLeNet from a :class:`common.spec.Spec` (NHWC inside).

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
        keras_name = lambda q: q.replace(".", "_")
        self.blocks, self.aux, param_layers = M.construct(
            spec, input_size, lambda layer, q, shape: _primitive(layer, keras_name(q)),
            lambda q, branches: Concat(branches, name=keras_name(q)),
            lambda q, modules: Chain(modules, name=keras_name(q)))
        self._param_names = list(param_layers)
        self._param_modules = list(param_layers.values())

    @property
    def param_layers(self):
        return OrderedDict(zip(self._param_names, self._param_modules))

    def block(self, qname):
        return self.blocks[qname]

    def call(self, X, training=False, collect=()):
        return M.run(self.spec, lambda q, x: self.blocks[q](x, training=training),
                     lambda a, x: self.aux[a](x, training=training), X, training=training,
                     collect=collect)


def _create_variables(net):
    """Run a dummy batch through every block and aux head (eval mode), creating all weights."""
    s = net.input_size
    X = tf.zeros((1, s, s, net.spec.in_channels))
    taps = net(X, collect=[h.tap for h in net.spec.aux] or [net.spec.stages[-1].name])
    for h in net.spec.aux:
        net.aux[h.name](taps[h.tap])


def build(spec="d2l", *, input_size=None, seed=0, **options):
    """Build GoogLeNet from a table; its weights exist on return.

    Args:
        spec: a preset name (``'d2l'``, ``'paper'``, ``'bn'``) or a :class:`~common.spec.Spec`.
        input_size: square input size (default: the table's, 96 for ``d2l``); needed
            because dense layers after a flatten take their width from it.
        seed: seed of the recipe's initialisation (Xavier-uniform weights, zero biases),
            identical on every backend; ``None`` keeps Keras's default initialisers.
        **options: preset keywords (``in_channels``, ``num_classes``, ``aux_logits``, ...).
    """
    spec = get_spec(spec, **options)
    input_size = input_size or spec.input_size
    net = GoogLeNet(spec, input_size)
    _create_variables(net)
    if seed is not None:
        init_weights(net, seed)
    return net


def _count(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


def count_params(net) -> int:
    """Trainable parameters, as Keras counts them (all heads included)."""
    return _count(net.trainable_variables)


def _params_of(net, name):
    layer = net.aux[name] if name in net.aux else net.block(name)
    return _count(layer.trainable_variables)


def forward(net, X, training=False):
    """Logits for a NumPy (NCHW) or tensor (NHWC) batch, as NumPy (a tuple with aux heads in
    training); a feature map (``include_top=False, pooling=None``) comes back NCHW."""
    out = net(to_tensor(X), training=training)
    return type(out)(*map(nchw, out)) if isinstance(out, tuple) else nchw(out)


def _collect(net, X, names):
    outs = net(to_tensor(X), training=False, collect=names)
    return OrderedDict((k, nchw(v)) for k, v in outs.items())


def stage_outputs(net, X):
    """Every stage's output (eval mode) as NumPy, canonical NCHW / (N, F)."""
    return _collect(net, X, net.spec.stage_names())


def features(net, X):
    """The named taps of the table (3b, 4a, 4d, 5b for GoogLeNet) as NumPy NCHW."""
    return _collect(net, X, net.spec.features)


def _shape(t):
    """Canonical (C, H, W) / (F,) shape of one example of an NHWC / flat tensor."""
    s = tuple(t.shape[1:])
    return (s[2], s[0], s[1]) if len(s) == 3 else s


def layer_table(net, input_size=None):
    """Per-block rows (name, kind, out_shape, params, macs) measured on the built network."""
    s = net.input_size
    X = tf.zeros((1, s, s, net.spec.in_channels))
    return M.layer_table(net.spec, lambda q, x: net.block(q)(x, training=False),
                         lambda a, x: net.aux[a](x, training=False), X, _shape,
                         lambda n: _params_of(net, n), net.input_size)


# --------------------------------------------------------------------------- weights
#: canonical layout -> Keras layout (conv OIHW -> HWIO, dense (out, in) -> (in, out)), and back
_TO_KERAS = {4: (2, 3, 1, 0), 2: (1, 0), 1: (0,)}
_FROM_KERAS = {4: (3, 2, 0, 1), 2: (1, 0), 1: (0,)}


def _tensors(net):
    """Canonical name -> the Keras variable that holds it."""
    out = OrderedDict()
    for qname, m in net.param_layers.items():
        lin = m.conv if isinstance(m, ConvBlock) else m.linear
        out[f"{qname}.weight"] = lin.kernel
        if lin.use_bias:
            out[f"{qname}.bias"] = lin.bias
        if isinstance(m, ConvBlock) and m.bn is not None:
            bn = m.bn
            for t, v in (("weight", bn.gamma), ("bias", bn.beta), ("running_mean", bn.moving_mean),
                         ("running_var", bn.moving_variance)):
                out[f"{qname}.bn.{t}"] = v
    return out


def get_weights(net):
    """All tensors in canonical names and layouts (conv OIHW, dense (out, in))."""
    return OrderedDict((k, np.ascontiguousarray(v.numpy().transpose(_FROM_KERAS[v.shape.rank])))
                       for k, v in _tensors(net).items())


def set_weights(net, weights):
    """Load canonical weights; checked in full first, so nothing is half-loaded."""
    weights = W.check(net.spec, weights, net.input_size)
    for name, v in _tensors(net).items():
        v.assign(weights[name].transpose(_TO_KERAS[v.shape.rank]))
    return net


def init_weights(net, seed=0):
    """The recipe's initialisation (see :func:`common.weights.xavier_init`)."""
    return set_weights(net, W.xavier_init(net.spec, seed, net.input_size))


NATIVE_SUFFIX = ".weights.h5"


def save_native(net, path):
    """Keras's own format: ``net.save_weights(path)`` (HDF5)."""
    net.save_weights(path)
    return path


def load_native(net, path):
    net.load_weights(path)
    return net
