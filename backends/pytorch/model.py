"""PyTorch: GoogLeNet built from the channel-spec table with ``torch.nn`` layers."""
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from common import model as M, weights as W
from common.spec import BN_EPS, BN_MOMENTUM, get_spec

from .core import _device, to_numpy, to_tensor


class ConvBlock(nn.Module):
    """``Conv`` record: conv, optional batch norm, optional ReLU."""

    def __init__(self, layer, in_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, layer.out, layer.kernel, layer.stride, layer.padding,
                              bias=layer.bias)
        self.bn = (nn.BatchNorm2d(layer.out, eps=BN_EPS, momentum=BN_MOMENTUM)
                   if layer.norm == "bn" else None)
        self.relu = layer.act == "relu"

    def forward(self, X):
        X = self.conv(X)
        if self.bn is not None:
            X = self.bn(X)
        return torch.relu(X) if self.relu else X


class DenseBlock(nn.Module):
    """``Dense`` record: linear, optional ReLU."""

    def __init__(self, layer, in_features):
        super().__init__()
        self.linear = nn.Linear(in_features, layer.out, bias=layer.bias)
        self.relu = layer.act == "relu"

    def forward(self, X):
        X = self.linear(X)
        return torch.relu(X) if self.relu else X


class Concat(nn.Module):
    """Inception: run the branches on the same input, concatenate channels."""

    def __init__(self, branches):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, X):
        return torch.cat([b(X) for b in self.branches], dim=1)


def _primitive(layer, in_shape):
    kind = layer.kind
    if kind == "conv":
        return ConvBlock(layer, in_shape[0])
    if kind == "dense":
        return DenseBlock(layer, in_shape[0])
    if kind == "maxpool":
        return nn.MaxPool2d(layer.kernel, layer.stride, layer.padding)
    if kind == "avgpool":
        return nn.AvgPool2d(layer.kernel, layer.stride)
    if kind == "lrn":
        return nn.LocalResponseNorm(layer.size, layer.alpha, layer.beta, layer.k)
    if kind == "gap":
        return nn.AdaptiveAvgPool2d(1)
    if kind == "gmp":
        return nn.AdaptiveMaxPool2d(1)
    if kind == "flatten":
        return nn.Flatten()
    if kind == "dropout":
        return nn.Dropout(layer.rate)
    raise ValueError(f"unknown layer kind {kind!r}")


class GoogLeNet(nn.Module):
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
        self.stages = nn.ModuleDict()                # registered as stages.b3.inception3a ...
        for st in spec.stages:
            self.stages[st.name] = nn.ModuleDict((n, blocks[f"{st.name}.{n}"]) for n, _ in st.layers)
        self.aux = nn.ModuleDict(aux)

    def block(self, qname):
        stage, name = qname.split(".")
        return self.stages[stage][name]

    def forward(self, X, collect=()):
        return M.run(self.spec, lambda q, x: self.block(q)(x), lambda a, x: self.aux[a](x),
                     X, training=self.training, collect=collect)


def build(spec="d2l", *, input_size=None, seed=0, **options):
    """Build GoogLeNet from a table on the backend's device.

    Args:
        spec: a preset name (``'d2l'``, ``'paper'``, ``'bn'``) or a :class:`~common.spec.Spec`.
        input_size: square input size (default: the table's, 96 for ``d2l``); needed
            because dense layers after a flatten take their width from it.
        seed: seed of the recipe's initialisation (Xavier-uniform weights, zero biases),
            identical on every backend; ``None`` keeps PyTorch's default initialisers.
        **options: preset keywords (``in_channels``, ``num_classes``, ``aux_logits``, ...).
    """
    spec = get_spec(spec, **options)
    input_size = input_size or spec.input_size
    net = GoogLeNet(spec, input_size).to(_device())
    if seed is not None:
        init_weights(net, seed)
    return net.eval()


def count_params(net) -> int:
    """Trainable parameters, as PyTorch counts them (all heads included)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def _params_of(net, name):
    module = net.aux[name] if name in net.aux else net.block(name)
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def forward(net, X, training=False):
    """Logits for a NumPy (NCHW) or tensor batch, as NumPy (a tuple with aux heads in training)."""
    net.train(training)
    with torch.set_grad_enabled(training):
        out = net(to_tensor(X))
    net.eval()
    return type(out)(*map(to_numpy, out)) if isinstance(out, tuple) else to_numpy(out)


def _collect(net, X, names):
    net.eval()
    with torch.no_grad():
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
    X = torch.zeros((1, net.spec.in_channels, net.input_size, net.input_size), device=_device())
    with torch.no_grad():
        return M.layer_table(net.spec, lambda q, x: net.block(q)(x), lambda a, x: net.aux[a](x), X,
                             lambda t: tuple(t.shape[1:]), lambda n: _params_of(net, n),
                             net.input_size)


# --------------------------------------------------------------------------- weights
def _tensors(net):
    """Canonical name -> the framework tensor that holds it."""
    out = OrderedDict()
    for qname, m in net.param_layers.items():
        lin = m.conv if isinstance(m, ConvBlock) else m.linear
        out[f"{qname}.weight"] = lin.weight
        if lin.bias is not None:
            out[f"{qname}.bias"] = lin.bias
        if isinstance(m, ConvBlock) and m.bn is not None:
            for t in ("weight", "bias", "running_mean", "running_var"):
                out[f"{qname}.bn.{t}"] = getattr(m.bn, t)
    return out


def get_weights(net):
    """All tensors in canonical names and layouts (conv OIHW, dense (out, in): PyTorch's own)."""
    return OrderedDict((k, to_numpy(t).copy()) for k, t in _tensors(net).items())


def set_weights(net, weights):
    """Load canonical weights; checked in full first, so nothing is half-loaded."""
    weights = W.check(net.spec, weights, net.input_size)
    with torch.no_grad():
        for name, t in _tensors(net).items():
            t.copy_(torch.from_numpy(np.ascontiguousarray(weights[name])))
    return net


def init_weights(net, seed=0):
    """The recipe's initialisation (see :func:`common.weights.xavier_init`)."""
    return set_weights(net, W.xavier_init(net.spec, seed, net.input_size))


NATIVE_SUFFIX = ".pt"


def save_native(net, path):
    """PyTorch's own format: ``torch.save(net.state_dict(), path)``."""
    torch.save(net.state_dict(), path)
    return path


def load_native(net, path):
    net.load_state_dict(torch.load(path, map_location=_device()))
    return net
