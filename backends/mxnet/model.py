"""MXNet: the table's layers as Gluon ``HybridBlock`` s; the rest is :class:`common.net.model.NetAPI`."""
import warnings
from types import MappingProxyType

import mxnet as mx
from mxnet import autograd, np
from mxnet.gluon import nn

from common.net import model as M
from common.net.weights import WeightsError
from common.net import oracle
from common.net.spec import BN_MOMENTUM, SpecError, outputs_type, pair

from .core import _device, to_numpy, to_tensor


def relu(F, X):
    """The table's ReLU as Gluon's ``Activation`` operator, the book's: with oneDNN it runs as an
    eltwise primitive on the convolutions' blocked layout (``npx.relu`` is MXNet's own kernel on
    the plain layout: two reorders per ReLU, 0.92x the book's training and inference here,
    docs/performance.md).  oneDNN's ReLU maps NaN to 0 (``max(x, 0)``), unlike the other three
    frameworks, so a NaN input shows only in the gradient: the Trainer checks it (training.py)."""
    return F.npx.activation(X, act_type="relu")


class ConvBlock(nn.HybridBlock):
    """``Conv`` record: conv, optional batch norm, optional ReLU."""

    def __init__(self, layer, in_channels, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.conv = nn.Conv2D(layer.out, pair(layer.kernel), pair(layer.stride), pair(layer.padding),
                                  use_bias=layer.bias, in_channels=in_channels)
            # Gluon's momentum is the weight of the running value: 1 - PyTorch's; scale=False
            # keeps gamma at 1, not learnt (Keras's scale=False)
            self.bn = (nn.BatchNorm(momentum=1 - BN_MOMENTUM, epsilon=layer.eps, scale=layer.scale,
                                    in_channels=layer.out)
                       if layer.norm == "bn" else None)
        self.relu = layer.act == "relu"

    def hybrid_forward(self, F, X):
        X = self.conv(X)
        if self.bn is not None:
            X = self.bn(X)
        return relu(F, X) if self.relu else X


class DenseBlock(nn.HybridBlock):
    """``Dense`` record: linear, optional ReLU (no implicit flatten: the table has ``Flatten``)."""

    def __init__(self, layer, in_features, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.linear = nn.Dense(layer.out, use_bias=layer.bias, flatten=False, in_units=in_features)
        self.relu = layer.act == "relu"

    def hybrid_forward(self, F, X):
        X = self.linear(X)
        return relu(F, X) if self.relu else X


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
    """A Concat (an Inception block): run the branches on one input, concatenate channels, ``act``."""

    def __init__(self, branches, act=None, **kwargs):
        super().__init__(**kwargs)
        self.branches = branches
        for i, b in enumerate(branches):
            self.register_child(b, f"branch{i + 1}")
        self.relu = act == "relu"

    def hybrid_forward(self, F, X):
        # the legacy ``Concat`` operator (oneDNN's concat on the blocked layout), not
        # ``np.concatenate`` (MXNet's own kernel on the plain layout: a reorder per branch)
        X = F.concat(*[b(X).as_nd_ndarray() for b in self.branches], dim=1).as_np_ndarray()
        return relu(F, X) if self.relu else X


class Residual(nn.HybridBlock):
    """``act(x + scale * body(x))``; the body is registered as ``branch1`` (a Concat's names)."""

    def __init__(self, body, scale, act, **kwargs):
        super().__init__(**kwargs)
        self.body, self.scale, self.relu = body, scale, act == "relu"
        self.register_child(body, "branch1")

    def hybrid_forward(self, F, X):
        X = X + self.scale * self.body(X)
        return relu(F, X) if self.relu else X


class AdaptiveAvgPool(nn.HybridBlock):
    """PyTorch's adaptive average pooling: MXNet's ``contrib.AdaptiveAvgPooling2D`` (a legacy
    operator, its array passed through ``as_nd_ndarray``), which bins as PyTorch does."""

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        self.size = pair(layer.size)

    def hybrid_forward(self, F, X):
        return F.contrib.AdaptiveAvgPooling2D(X.as_nd_ndarray(), output_size=self.size).as_np_ndarray()


class Affine(nn.HybridBlock):
    """A fixed per-channel ``x * scale + shift``, one channel at a time (no constant arrays,
    which Gluon would save among the parameters)."""

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.shift = layer.scale, layer.shift

    def hybrid_forward(self, F, X):
        return F.np.concatenate([X[:, c:c + 1] * s + b for c, (s, b) in enumerate(zip(self.scale, self.shift))],
                                axis=1)


class DownscaleDropout(nn.HybridBlock):
    """Paddle's ``downscale_in_infer`` dropout: training zeroes without rescaling, evaluation
    multiplies by ``1 - rate``."""

    def __init__(self, rate, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate

    def hybrid_forward(self, F, X):
        if autograd.is_training():
            X = F.npx.dropout(X, p=self.rate)
        return X * (1 - self.rate)


def _maxpool(l, shape):
    """Gluon's max pool; ceil mode is its ``'full'`` convention, which lacks PyTorch's rule that
    the last window starts inside the input: refused where the two differ."""
    if l.ceil:
        full = tuple(-(-(n + 2 * p - k) // s) + 1 for n, k, s, p in
                     zip(shape[1:], pair(l.kernel), pair(l.stride), pair(l.padding)))
        if full != tuple(oracle._window(l, shape)[2:]):
            raise SpecError(f"a ceil-mode max pool of {pair(l.kernel)}/{pair(l.stride)} padding "
                            f"{pair(l.padding)} on {shape[1:]}: MXNet's 'full' convention gives {full}, "
                            f"PyTorch's ceil mode fewer; MXNet cannot build it")
    extra = tuple(max(0, k - (n + 2 * p)) for n, k, p in zip(shape[1:], pair(l.kernel), pair(l.padding)))
    pool = nn.MaxPool2D(pair(l.kernel), pair(l.stride), pair(l.padding), ceil_mode=l.ceil)
    return WidePool(pool, extra) if any(extra) else pool


class WidePool(nn.HybridBlock):
    """A max pool whose window is wider than its (padded) input map, which MXNet's ``Pooling``
    refuses and PyTorch, TensorFlow and Paddle take (a ceil-mode window that overhangs a small
    map): the map is padded on the bottom and right with -inf up to the window first, which
    never wins, so the result is theirs."""

    def __init__(self, pool, extra, **kwargs):
        super().__init__(**kwargs)
        self.pool, self.extra = pool, extra

    def hybrid_forward(self, F, X):
        eh, ew = self.extra
        X = F.np.pad(X, ((0, 0), (0, 0), (0, eh), (0, ew)), mode="constant", constant_values=float("-inf"))
        return self.pool(X)


#: the table's records -> Gluon blocks: ``make(layer, in_shape, name)``
LAYERS = {
    "conv": lambda l, shape, name: ConvBlock(l, shape[0]),
    "dense": lambda l, shape, name: DenseBlock(l, shape[0]),
    # MXNet's max pool pads with -inf; floor ('valid') rounding by default
    "maxpool": lambda l, shape, name: _maxpool(l, shape),
    "avgpool": lambda l, shape, name: nn.AvgPool2D(pair(l.kernel), pair(l.stride), pair(l.padding),
                                                   count_include_pad=bool(l.count_pad)),
    "adaptive_avg": lambda l, shape, name: AdaptiveAvgPool(l),
    "affine": lambda l, shape, name: Affine(l),
    "lrn": lambda l, shape, name: LRN(l),
    "gap": lambda l, shape, name: nn.GlobalAvgPool2D(),
    "gmp": lambda l, shape, name: nn.GlobalMaxPool2D(),
    "flatten": lambda l, shape, name: nn.Flatten(),
    "dropout": lambda l, shape, name: nn.Dropout(l.rate) if l.mode == "upscale_in_train" else DownscaleDropout(l.rate),
}
#: where Gluon keeps the weight file's tensors: its own names and layouts
WEIGHT_NAMES = M.WeightNames(weight="weight", bias="bias",
                             bn=("gamma", "beta", "running_mean", "running_var"))


def _chain(qname, blocks):
    seq = nn.HybridSequential()
    seq.add(*blocks)
    return seq


class GoogLeNet(nn.HybridBlock):
    """GoogLeNet from a :class:`common.net.spec.Spec`.

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
                spec, input_size, LAYERS, lambda q, branches, act: Concat(branches, act), _chain,
                lambda q, body, scale, act: Residual(body, scale, act))
        for qname, block in self.blocks.items():
            self.register_child(block, qname.replace(".", "_"))
        for name, head in self.aux.items():
            self.register_child(head, name)
        # A read-only view: Gluon warns about plain dicts of blocks that are not its children.
        self.param_layers = MappingProxyType(param_layers)
        self._traced_training = None

    def block(self, qname):
        return self.blocks[qname]

    def call_block(self, qname, X):
        return self.blocks[qname](X)

    def call_aux(self, name, X):
        return self.aux[name](X)

    def hybrid_forward(self, F, X):
        out = M.run(self.spec, self.call_block, self.call_aux, X, training=autograd.is_training())
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


def _new(spec, input_size):
    net = GoogLeNet(spec, input_size)
    net.initialize(ctx=_device())          # every shape is known: nothing is deferred
    return net


def _call(net, X, training):
    with autograd.train_mode() if training else autograd.predict_mode():
        return net(X)


def _count(block):
    return sum(p.data().size for p in block.collect_params().values() if p.grad_req != "null")


api = M.NetAPI(
    new=_new, call=_call, evaluating=lambda net: autograd.predict_mode(), count=_count,
    to_tensor=to_tensor, to_canonical=to_numpy, names=WEIGHT_NAMES,
    read=lambda p: p.data().asnumpy(), write=lambda p, a: p.set_data(np.array(a, ctx=_device())))
build, count_params, forward, stage_outputs, features, layer_table = (
    api.build, api.count_params, api.forward, api.stage_outputs, api.features, api.layer_table)
get_weights, set_weights, init_weights = api.get_weights, api.set_weights, api.init_weights
aux_outputs = api.aux_outputs

NATIVE_SUFFIX = ".params"


def save_native(net, path):
    """Gluon's own format: ``net.save_parameters(path)``."""
    net.save_parameters(path)
    return path


def _native_key(place, sub, attr):
    """The ``save_parameters`` name of a tensor: the child names :class:`GoogLeNet`
    registers (``b3_inception3a``, ``aux1``), then Gluon's structural names
    (``branch2.0``, ``aux1.1``) + ``.conv.weight``, ``.bn.gamma`` ..."""
    return M.module_key(place, sub, attr, aux="{head}.{step}", block="{stage}_{block}",
                        branch=".branch{branch1}.{step}")


def read_native(path, spec, input_size=None):
    """The tensors of a Gluon ``.params`` file, as canonical names and layouts (not yet
    checked: ``common.net.weights.read`` and ``set_weights`` check them); no network is built.

    Read with ``mx.nd.load``: MXNet's own binary format of named arrays (no pickle), so a
    ``.params`` file holds data only.  A damaged or truncated file raises ``WeightsError``.
    """
    try:
        loaded = mx.nd.load(str(path))
    except FileNotFoundError:
        raise
    except Exception as e:            # MXNetError on a damaged or truncated file
        lines = [l.strip() for l in str(e).splitlines() if l.strip()]
        # MXNet's message is a C++ traceback; its last line says what failed
        why = lines[-1].replace("MXNetError: ", "") if lines else ""
        raise WeightsError(f"{path}: not a readable MXNet parameter file ({type(e).__name__}: "
                           f"{why})") from None
    if not isinstance(loaded, dict):
        raise WeightsError(f"{path}: not a Gluon parameter file (its arrays have no names; "
                           f"Gluon's save_parameters names every array)")
    tensors = {k: v.asnumpy() for k, v in loaded.items()}
    return M.from_native(spec, WEIGHT_NAMES, _native_key, tensors, input_size)


def load_native(net, path):
    """``set_weights(net, read_native(path, ...))``: checked in full before the network is touched."""
    return set_weights(net, read_native(path, net.spec, net.input_size))
