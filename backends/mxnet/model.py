"""MXNet: GoogLeNet built from the channel-spec table with Gluon ``HybridBlock`` s."""
import warnings
from collections import OrderedDict
from types import MappingProxyType

from mxnet import autograd, np
from mxnet.gluon import nn

from common import model as M, weights as W
from common.spec import BN_EPS, BN_MOMENTUM, get_spec, outputs_type

from .core import _device, to_numpy, to_tensor


class ConvBlock(nn.HybridBlock):
    """``Conv`` record: conv, optional batch norm, optional ReLU."""

    def __init__(self, layer, in_channels, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.conv = nn.Conv2D(layer.out, layer.kernel, layer.stride, layer.padding,
                                  use_bias=layer.bias, in_channels=in_channels)
            # Gluon's momentum is the weight of the running value: 1 - PyTorch's.
            self.bn = (nn.BatchNorm(momentum=1 - BN_MOMENTUM, epsilon=BN_EPS, in_channels=layer.out)
                       if layer.norm == "bn" else None)
        self.relu = layer.act == "relu"

    def hybrid_forward(self, F, X):
        X = self.conv(X)
        if self.bn is not None:
            X = self.bn(X)
        return F.npx.relu(X) if self.relu else X


class DenseBlock(nn.HybridBlock):
    """``Dense`` record: linear, optional ReLU (no implicit flatten: the table has ``Flatten``)."""

    def __init__(self, layer, in_features, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.linear = nn.Dense(layer.out, use_bias=layer.bias, flatten=False, in_units=in_features)
        self.relu = layer.act == "relu"

    def hybrid_forward(self, F, X):
        X = self.linear(X)
        return F.npx.relu(X) if self.relu else X


class LRN(nn.HybridBlock):
    """Local response normalisation across channels: ``x / (k + alpha/size * sum x^2)^beta``.

    MXNet's ``LRN`` divides ``alpha`` by ``nsize`` exactly as PyTorch's
    ``nn.LocalResponseNorm`` (and Caffe) do, so the record's constants pass through
    unchanged.  It is a legacy operator: the NumPy array goes in and out through
    ``as_nd_ndarray`` / ``as_np_ndarray``.
    """

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        self.size, self.alpha, self.beta, self.k = layer.size, layer.alpha, layer.beta, layer.k

    def hybrid_forward(self, F, X):
        return F.LRN(X.as_nd_ndarray(), alpha=self.alpha, beta=self.beta, knorm=self.k,
                     nsize=self.size).as_np_ndarray()


class Concat(nn.HybridBlock):
    """Inception: run the branches on the same input, concatenate channels."""

    def __init__(self, branches, **kwargs):
        super().__init__(**kwargs)
        self.branches = branches
        for i, b in enumerate(branches):
            self.register_child(b, f"branch{i + 1}")

    def hybrid_forward(self, F, X):
        return F.np.concatenate([b(X) for b in self.branches], axis=1)


def _primitive(layer, in_shape):
    kind = layer.kind
    if kind == "conv":
        return ConvBlock(layer, in_shape[0])
    if kind == "dense":
        return DenseBlock(layer, in_shape[0])
    if kind == "maxpool":   # MXNet's max pool pads with -inf; floor ('valid') rounding by default
        return nn.MaxPool2D(layer.kernel, layer.stride, layer.padding)
    if kind == "avgpool":
        return nn.AvgPool2D(layer.kernel, layer.stride)
    if kind == "lrn":
        return LRN(layer)
    if kind == "gap":
        return nn.GlobalAvgPool2D()
    if kind == "gmp":
        return nn.GlobalMaxPool2D()
    if kind == "flatten":
        return nn.Flatten()
    if kind == "dropout":
        return nn.Dropout(layer.rate)
    raise ValueError(f"unknown layer kind {kind!r}")


def _chain(qname, blocks):
    seq = nn.HybridSequential()
    seq.add(*blocks)
    return seq


class GoogLeNet(nn.HybridBlock):
    """GoogLeNet from a :class:`common.spec.Spec`.

    ``net(X)`` returns the logits; in training mode (``autograd.record()`` or
    ``autograd.train_mode()``) with auxiliary heads, the named tuple ``(logits, aux2,
    aux1)``.  ``net.spec``, ``net.input_size`` and ``net.param_layers`` (qualified name ->
    ConvBlock / DenseBlock) describe it.

    Hybridized, the graph is traced once and can return only symbols or plain lists of
    them, and whether it has the aux outputs is fixed when it is traced: so
    ``hybrid_forward`` returns a plain tuple, ``forward`` wraps it in the named tuple,
    and a change of mode re-traces the graph (once per switch between training and
    evaluation, only for tables with aux heads).
    """

    def __init__(self, spec, input_size, **kwargs):
        super().__init__(**kwargs)
        self.spec, self.input_size = spec, input_size
        with self.name_scope():
            self.blocks, self.aux, param_layers = M.construct(
                spec, input_size, lambda layer, q, shape: _primitive(layer, shape),
                lambda q, branches: Concat(branches), _chain)
        for qname, block in self.blocks.items():
            self.register_child(block, qname.replace(".", "_"))
        for name, head in self.aux.items():
            self.register_child(head, name)
        # A read-only view: Gluon warns about plain dicts of blocks that are not its children.
        self.param_layers = MappingProxyType(param_layers)
        self._traced_training = None

    def block(self, qname):
        return self.blocks[qname]

    def run(self, X, collect=()):
        """The table's forward (:func:`common.model.run`) in the current autograd mode."""
        return M.run(self.spec, lambda q, x: self.blocks[q](x), lambda a, x: self.aux[a](x),
                     X, training=autograd.is_training(), collect=collect)

    def hybrid_forward(self, F, X):
        out = self.run(X)
        return tuple(out) if isinstance(out, tuple) else out

    def forward(self, X):
        training = autograd.is_training()
        if self._active and self.spec.aux and self._traced_training not in (None, training):
            self._clear_cached_op()        # the other mode's graph has other outputs
        self._traced_training = training
        with warnings.catch_warnings():     # the eval graph leaves the aux heads' parameters unused
            warnings.filterwarnings("ignore", message="Parameter .* is not used by any computation")
            out = super().forward(X)
        return outputs_type(self.spec)(*out) if isinstance(out, (list, tuple)) else out


def build(spec="d2l", *, input_size=None, seed=0, **options):
    """Build GoogLeNet from a table on the backend's device.

    Args:
        spec: a preset name (``'d2l'``, ``'paper'``, ``'bn'``) or a :class:`~common.spec.Spec`.
        input_size: square input size (default: the table's, 96 for ``d2l``); needed
            because dense layers after a flatten take their width from it.
        seed: seed of the recipe's initialisation (Xavier-uniform weights, zero biases),
            identical on every backend; ``None`` keeps Gluon's default initialisers.
        **options: preset keywords (``in_channels``, ``num_classes``, ``aux_logits``, ...).
    """
    spec = get_spec(spec, **options)
    input_size = input_size or spec.input_size
    net = GoogLeNet(spec, input_size)
    net.initialize(ctx=_device())          # every shape is known: nothing is deferred
    if seed is not None:
        init_weights(net, seed)
    return net


def _trainable(block):
    return [p for p in block.collect_params().values() if p.grad_req != "null"]


def count_params(net) -> int:
    """Trainable parameters, as Gluon counts them (all heads included, BN running stats not)."""
    return sum(p.data().size for p in _trainable(net))


def _params_of(net, name):
    block = net.aux[name] if name in net.aux else net.block(name)
    return sum(p.data().size for p in _trainable(block))


def forward(net, X, training=False):
    """Logits for a NumPy (NCHW) or tensor batch, as NumPy (a tuple with aux heads in training)."""
    with autograd.train_mode() if training else autograd.predict_mode():
        out = net(to_tensor(X))
    return type(out)(*map(to_numpy, out)) if isinstance(out, tuple) else to_numpy(out)


def _collect(net, X, names):
    with autograd.predict_mode():
        outs = net.run(to_tensor(X), collect=names)
    return OrderedDict((k, to_numpy(v)) for k, v in outs.items())


def stage_outputs(net, X):
    """Every stage's output (eval mode) as NumPy, canonical NCHW / (N, F)."""
    return _collect(net, X, net.spec.stage_names())


def features(net, X):
    """The named taps of the table (3b, 4a, 4d, 5b for GoogLeNet) as NumPy NCHW."""
    return _collect(net, X, net.spec.features)


def layer_table(net, input_size=None):
    """Per-block rows (name, kind, out_shape, params, macs) measured on the built network."""
    X = np.zeros((1, net.spec.in_channels, net.input_size, net.input_size), ctx=_device())
    with autograd.predict_mode():
        return M.layer_table(net.spec, lambda q, x: net.block(q)(x), lambda a, x: net.aux[a](x), X,
                             lambda t: tuple(t.shape[1:]), lambda n: _params_of(net, n),
                             net.input_size)


# --------------------------------------------------------------------------- weights
def _tensors(net):
    """Canonical name -> the Gluon ``Parameter`` that holds it."""
    out = OrderedDict()
    for qname, m in net.param_layers.items():
        lin = m.conv if isinstance(m, ConvBlock) else m.linear
        out[f"{qname}.weight"] = lin.weight
        if lin.bias is not None:
            out[f"{qname}.bias"] = lin.bias
        if isinstance(m, ConvBlock) and m.bn is not None:
            for t, p in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "running_mean"),
                         ("running_var", "running_var")):
                out[f"{qname}.bn.{t}"] = getattr(m.bn, p)
    return out


def get_weights(net):
    """All tensors in canonical names and layouts (conv OIHW, dense (out, in): MXNet's own)."""
    return OrderedDict((k, to_numpy(p.data()).copy()) for k, p in _tensors(net).items())


def set_weights(net, weights):
    """Load canonical weights; checked in full first, so nothing is half-loaded."""
    weights = W.check(net.spec, weights, net.input_size)
    for name, p in _tensors(net).items():
        p.set_data(np.array(weights[name], ctx=_device()))
    return net


def init_weights(net, seed=0):
    """The recipe's initialisation (see :func:`common.weights.xavier_init`)."""
    return set_weights(net, W.xavier_init(net.spec, seed, net.input_size))


NATIVE_SUFFIX = ".params"


def save_native(net, path):
    """Gluon's own format: ``net.save_parameters(path)``."""
    net.save_parameters(path)
    return path


def load_native(net, path):
    net.load_parameters(path, ctx=_device())
    return net
