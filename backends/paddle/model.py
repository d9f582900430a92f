"""PaddlePaddle: GoogLeNet built from the channel-spec table with ``paddle.nn`` layers."""
from collections import OrderedDict

import numpy as np
import paddle
from paddle import nn
import paddle.nn.functional as F

from common import model as M, weights as W
from common.spec import BN_EPS, BN_MOMENTUM, get_spec

from .core import to_numpy, to_tensor


def relu(X):
    """ReLU that keeps NaN, as PyTorch, TensorFlow and MXNet do (Paddle's ``F.relu`` maps NaN
    to 0 and would hide a diverged step): ``hardtanh`` on [0, inf), same values and gradients."""
    return F.hardtanh(X, 0.0, float("inf"))


class BatchNorm2D(nn.BatchNorm2D):
    """Paddle's batch norm, its running variance fed PyTorch's unbiased batch variance.

    Paddle's kernel averages the biased batch variance into the running one, PyTorch the
    unbiased one (times n / (n - 1)); the outputs and gradients are the same.  Paddle's
    momentum weighs the running statistics: ``1 - BN_MOMENTUM``.
    """

    def __init__(self, channels):
        super().__init__(channels, momentum=1 - BN_MOMENTUM, epsilon=BN_EPS)

    def forward(self, X):
        if not self.training:
            return F.batch_norm(X, self._mean, self._variance, self.weight, self.bias,
                                training=False, epsilon=self._epsilon)
        # Paddle updates the statistics passed in place, so pass copies (its backward keeps them).
        n, m = X.shape[0] * X.shape[2] * X.shape[3], self._momentum
        mean, var = self._mean.clone(), self._variance.clone()
        X = F.batch_norm(X, mean, var, self.weight, self.bias, training=True, momentum=m,
                         epsilon=self._epsilon)
        # var = m * old + (1 - m) * biased  ->  m * old + (1 - m) * biased * n / (n - 1)
        paddle.assign(mean, self._mean)
        paddle.assign((n * var - m * self._variance) / (n - 1), self._variance)
        return X


class ConvBlock(nn.Layer):
    """``Conv`` record: conv, optional batch norm, optional ReLU."""

    def __init__(self, layer, in_channels):
        super().__init__()
        self.conv = nn.Conv2D(in_channels, layer.out, layer.kernel, layer.stride, layer.padding,
                              bias_attr=None if layer.bias else False)
        self.bn = BatchNorm2D(layer.out) if layer.norm == "bn" else None
        self.relu = layer.act == "relu"

    def forward(self, X):
        X = self.conv(X)
        if self.bn is not None:
            X = self.bn(X)
        return relu(X) if self.relu else X


class DenseBlock(nn.Layer):
    """``Dense`` record: linear, optional ReLU."""

    def __init__(self, layer, in_features):
        super().__init__()
        self.linear = nn.Linear(in_features, layer.out, bias_attr=None if layer.bias else False)
        self.relu = layer.act == "relu"

    def forward(self, X):
        X = self.linear(X)
        return relu(X) if self.relu else X


class Concat(nn.Layer):
    """Inception: run the branches on the same input, concatenate channels."""

    def __init__(self, branches):
        super().__init__()
        self.branches = nn.LayerList(branches)

    def forward(self, X):
        return paddle.concat([b(X) for b in self.branches], axis=1)


def _primitive(layer, in_shape):
    kind = layer.kind
    if kind == "conv":
        return ConvBlock(layer, in_shape[0])
    if kind == "dense":
        return DenseBlock(layer, in_shape[0])
    if kind == "maxpool":
        return nn.MaxPool2D(layer.kernel, layer.stride, layer.padding)
    if kind == "avgpool":
        return nn.AvgPool2D(layer.kernel, layer.stride)
    if kind == "lrn":
        return nn.LocalResponseNorm(layer.size, layer.alpha, layer.beta, layer.k)
    if kind == "gap":
        return nn.AdaptiveAvgPool2D(1)
    if kind == "gmp":
        return nn.AdaptiveMaxPool2D(1)
    if kind == "flatten":
        return nn.Flatten()
    if kind == "dropout":
        return nn.Dropout(layer.rate)
    raise ValueError(f"unknown layer kind {kind!r}")


class GoogLeNet(nn.Layer):
    """GoogLeNet from a :class:`common.spec.Spec`.

    ``net(X)`` returns the logits; in training mode with auxiliary heads, the named
    tuple ``(logits, aux2, aux1)``.  ``net.spec``, ``net.input_size`` and
    ``net.param_layers`` (qualified name -> ConvBlock / DenseBlock) describe it.
    """

    def __init__(self, spec, input_size):
        super().__init__()
        self.spec, self.input_size = spec, input_size
        blocks, aux, self.param_layers = M.construct(
            spec, input_size, lambda layer, q, shape: _primitive(layer, shape),
            lambda q, branches: Concat(branches), lambda q, modules: nn.Sequential(*modules))
        self.stages = nn.LayerDict()                 # registered as stages.b3.inception3a ...
        for st in spec.stages:
            self.stages[st.name] = nn.LayerDict(OrderedDict(
                (n, blocks[f"{st.name}.{n}"]) for n, _ in st.layers))
        self.aux = nn.LayerDict(aux)

    def block(self, qname):
        stage, name = qname.split(".")
        return self.stages[stage][name]

    def call_block(self, qname, X):
        return self.block(qname)(X)

    def call_aux(self, name, X):
        return self.aux[name](X)

    def forward(self, X, collect=()):
        # bound methods, not lambdas: paddle.jit.to_static (SOT) trips on closures over self
        return M.run(self.spec, self.call_block, self.call_aux, X, training=self.training,
                     collect=collect)


def build(spec="d2l", *, input_size=None, seed=0, **options):
    """Build GoogLeNet from a table on the backend's device.

    Args:
        spec: a preset name (``'d2l'``, ``'paper'``, ``'bn'``) or a :class:`~common.spec.Spec`.
        input_size: square input size (default: the table's, 96 for ``d2l``); needed
            because dense layers after a flatten take their width from it.
        seed: seed of the recipe's initialisation (Xavier-uniform weights, zero biases),
            identical on every backend; ``None`` keeps Paddle's default initialisers.
        **options: preset keywords (``in_channels``, ``num_classes``, ``aux_logits``, ...).
    """
    spec = get_spec(spec, **options)
    input_size = input_size or spec.input_size
    net = GoogLeNet(spec, input_size)  # created on the device set by paddle.set_device
    if seed is not None:
        init_weights(net, seed)
    net.eval()
    return net


def _trainable(layer):
    return [p for p in layer.parameters() if not p.stop_gradient]


def count_params(net) -> int:
    """Trainable parameters, as Paddle counts them (all heads included; BN statistics excluded)."""
    return sum(int(np.prod(p.shape)) for p in _trainable(net))


def _params_of(net, name):
    module = net.aux[name] if name in net.aux else net.block(name)
    return sum(int(np.prod(p.shape)) for p in _trainable(module))


def forward(net, X, training=False):
    """Logits for a NumPy (NCHW) or tensor batch, as NumPy (a tuple with aux heads in training)."""
    net.train() if training else net.eval()
    with paddle.set_grad_enabled(training):
        out = net(to_tensor(X))
    net.eval()
    return type(out)(*map(to_numpy, out)) if isinstance(out, tuple) else to_numpy(out)


def _collect(net, X, names):
    net.eval()
    with paddle.no_grad():
        outs = net(to_tensor(X), collect=names)
    return OrderedDict((k, to_numpy(v)) for k, v in outs.items())


def stage_outputs(net, X):
    """Every stage's output (eval mode) as NumPy, canonical NCHW / (N, F)."""
    return _collect(net, X, net.spec.stage_names())


def features(net, X):
    """The named taps of the table (3b, 4a, 4d, 5b for GoogLeNet) as NumPy NCHW."""
    return _collect(net, X, net.spec.features)


def layer_table(net, input_size=None):
    """Per-block rows (name, kind, out_shape, params, macs) measured on the built network."""
    net.eval()
    X = paddle.zeros((1, net.spec.in_channels, net.input_size, net.input_size), dtype="float32")
    with paddle.no_grad():
        return M.layer_table(net.spec, net.call_block, net.call_aux, X,
                             lambda t: tuple(t.shape[1:]), lambda n: _params_of(net, n),
                             net.input_size)


# --------------------------------------------------------------------------- weights
#: canonical batch-norm tensor -> Paddle's attribute
_BN = {"weight": "weight", "bias": "bias", "running_mean": "_mean", "running_var": "_variance"}


def _tensors(net):
    """Canonical name -> (the framework tensor that holds it, transposed?)."""
    out = OrderedDict()
    for qname, m in net.param_layers.items():
        lin = m.conv if isinstance(m, ConvBlock) else m.linear
        out[f"{qname}.weight"] = (lin.weight, isinstance(m, DenseBlock))  # Linear is (in, out)
        if lin.bias is not None:
            out[f"{qname}.bias"] = (lin.bias, False)
        if isinstance(m, ConvBlock) and m.bn is not None:
            for t, attr in _BN.items():
                out[f"{qname}.bn.{t}"] = (getattr(m.bn, attr), False)
    return out


def get_weights(net):
    """All tensors in canonical names and layouts (conv OIHW: Paddle's; dense (out, in): transposed)."""
    return OrderedDict((k, np.ascontiguousarray(to_numpy(t).T if tr else to_numpy(t)))
                       for k, (t, tr) in _tensors(net).items())


def set_weights(net, weights):
    """Load canonical weights; checked in full first, so nothing is half-loaded."""
    weights = W.check(net.spec, weights, net.input_size)
    with paddle.no_grad():
        for name, (t, tr) in _tensors(net).items():
            w = weights[name]
            t.set_value(np.ascontiguousarray(w.T if tr else w))
    return net


def init_weights(net, seed=0):
    """The recipe's initialisation (see :func:`common.weights.xavier_init`)."""
    return set_weights(net, W.xavier_init(net.spec, seed, net.input_size))


NATIVE_SUFFIX = ".pdparams"


def save_native(net, path):
    """Paddle's own format: ``paddle.save(net.state_dict(), path)``."""
    paddle.save(net.state_dict(), path)
    return path


def load_native(net, path):
    net.set_state_dict(paddle.load(path))
    return net
