"""PaddlePaddle: the table's layers as ``paddle.nn`` layers; the rest is :class:`common.net.model.NetAPI`."""
import contextlib
from collections import OrderedDict

import numpy as np
import paddle
from paddle import nn
import paddle.nn.functional as F

from common.net import model as M, safepickle
from common.net.weights import WeightsError
from common.net.spec import BN_MOMENTUM, pair

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

    def __init__(self, channels, eps, scale=True):
        super().__init__(channels, momentum=1 - BN_MOMENTUM, epsilon=eps)
        if not scale:                     # Keras's scale=False: kept at 1, not learnt
            self.weight.stop_gradient = True

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
        self.conv = nn.Conv2D(in_channels, layer.out, pair(layer.kernel), pair(layer.stride),
                              pair(layer.padding), bias_attr=None if layer.bias else False)
        self.bn = BatchNorm2D(layer.out, layer.eps, layer.scale) if layer.norm == "bn" else None
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
    """A Concat (an Inception block): run the branches on one input, concatenate channels, ``act``."""

    def __init__(self, branches, act=None):
        super().__init__()
        self.branches = nn.LayerList(branches)
        self.relu = act == "relu"

    def forward(self, X):
        X = paddle.concat([b(X) for b in self.branches], axis=1)
        return relu(X) if self.relu else X


class Residual(nn.Layer):
    """``act(x + scale * body(x))``; the body is kept as ``branches[0]`` (the keys of a Concat)."""

    def __init__(self, body, scale, act):
        super().__init__()
        self.branches = nn.LayerList([body])
        self.scale, self.relu = scale, act == "relu"

    def forward(self, X):
        X = X + self.scale * self.branches[0](X)
        return relu(X) if self.relu else X


class Affine(nn.Layer):
    """A fixed per-channel ``x * scale + shift`` (buffers outside the state dict: the table holds them)."""

    def __init__(self, layer):
        super().__init__()
        self.register_buffer("scale", paddle.to_tensor(layer.scale, "float32").reshape([1, -1, 1, 1]),
                             persistable=False)
        self.register_buffer("shift", paddle.to_tensor(layer.shift, "float32").reshape([1, -1, 1, 1]),
                             persistable=False)

    def forward(self, X):
        return X * self.scale + self.shift


#: the table's records -> Paddle layers: ``make(layer, in_shape, name)``
LAYERS = {
    "conv": lambda l, shape, name: ConvBlock(l, shape[0]),
    "dense": lambda l, shape, name: DenseBlock(l, shape[0]),
    "maxpool": lambda l, shape, name: nn.MaxPool2D(pair(l.kernel), pair(l.stride), pair(l.padding),
                                                   ceil_mode=l.ceil),
    "avgpool": lambda l, shape, name: nn.AvgPool2D(pair(l.kernel), pair(l.stride), pair(l.padding),
                                                   exclusive=not l.count_pad),
    "adaptive_avg": lambda l, shape, name: nn.AdaptiveAvgPool2D(pair(l.size)),
    "affine": lambda l, shape, name: Affine(l),
    "lrn": lambda l, shape, name: nn.LocalResponseNorm(l.size, l.alpha, l.beta, l.k),
    "gap": lambda l, shape, name: nn.AdaptiveAvgPool2D(1),
    "gmp": lambda l, shape, name: nn.AdaptiveMaxPool2D(1),
    "flatten": lambda l, shape, name: nn.Flatten(),
    # Paddle's own modes: 'upscale_in_train' (every framework's default), 'downscale_in_infer'
    "dropout": lambda l, shape, name: nn.Dropout(l.rate, mode=l.mode),
}
#: where Paddle keeps the weight file's tensors, and its layouts: ``Linear`` is (in, out)
WEIGHT_NAMES = M.WeightNames(weight="weight", bias="bias", bn=("weight", "bias", "_mean", "_variance"),
                             dense_axes=(1, 0))


class GoogLeNet(nn.Layer):
    """GoogLeNet from a :class:`common.net.spec.Spec`.

    ``net(X)`` returns the logits; in training mode with auxiliary heads, the named
    tuple ``(logits, aux2, aux1)``.  ``net.spec``, ``net.input_size`` and
    ``net.param_layers`` (qualified name -> ConvBlock / DenseBlock) describe it.
    """

    def __init__(self, spec, input_size):
        super().__init__()
        self.spec, self.input_size = spec, input_size
        blocks, aux, self.param_layers = M.construct(
            spec, input_size, LAYERS, lambda q, branches, act: Concat(branches, act),
            lambda q, modules: nn.Sequential(*modules), lambda q, body, scale, act: Residual(body, scale, act))
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

    def forward(self, X):
        # bound methods, not lambdas: paddle.jit.to_static (SOT) trips on closures over self
        return M.run(self.spec, self.call_block, self.call_aux, X, training=self.training)


def _new(spec, input_size):
    net = GoogLeNet(spec, input_size)  # created on the device set by paddle.set_device
    net.eval()
    return net


def _call(net, X, training):
    net.train() if training else net.eval()
    try:
        with paddle.set_grad_enabled(training):
            return net(X)
    finally:
        net.eval()


@contextlib.contextmanager
def _evaluating(net):
    net.eval()
    with paddle.no_grad():
        yield


api = M.NetAPI(
    new=_new, call=_call, evaluating=_evaluating,
    count=lambda layer: sum(int(np.prod(p.shape)) for p in layer.parameters() if not p.stop_gradient),
    to_tensor=to_tensor, to_canonical=to_numpy, names=WEIGHT_NAMES,
    read=to_numpy, write=lambda t, a: t.set_value(a))
build, count_params, forward, stage_outputs, features, layer_table = (
    api.build, api.count_params, api.forward, api.stage_outputs, api.features, api.layer_table)
get_weights, set_weights, init_weights = api.get_weights, api.set_weights, api.init_weights
aux_outputs = api.aux_outputs

NATIVE_SUFFIX = ".pdparams"


def save_native(net, path):
    """Paddle's own format: ``paddle.save(net.state_dict(), path)``."""
    paddle.save(net.state_dict(), path)
    return path


def read_pickle(path, what="Paddle file"):
    """A Paddle pickle (``.pdparams``, ``.pdopt``) as a dict of NumPy arrays, by the restricted
    unpickler (:func:`common.net.safepickle.read_paddle`), never ``paddle.load``."""
    try:
        return safepickle.read_paddle(path, what)
    except safepickle.PickleFileError as e:
        raise WeightsError(str(e)) from None


def read_native(path, spec, input_size=None):
    """The tensors of a ``.pdparams`` state dict, as canonical names and layouts (not yet
    checked: ``common.net.weights.read`` and ``set_weights`` check them); no network is built.
    Read by :func:`read_pickle` (a restricted unpickler), never by ``paddle.load``."""
    tensors = read_pickle(path, "Paddle weight file")
    return M.from_native(spec, WEIGHT_NAMES, M.module_key, tensors, input_size)


def load_native(net, path):
    """``set_weights(net, read_native(path, ...))``: checked in full before the network is touched."""
    return set_weights(net, read_native(path, net.spec, net.input_size))
