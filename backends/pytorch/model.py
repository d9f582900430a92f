"""PyTorch: the table's layers as ``torch.nn`` modules; the rest is :class:`common.net.model.NetAPI`."""
import contextlib
import pickle
import re
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from common.net import model as M
from common.net.weights import WeightsError
from common.net.spec import BN_MOMENTUM, pair

from .core import _device, to_numpy, to_tensor


class ConvBlock(nn.Module):
    """``Conv`` record: conv, optional batch norm, optional ReLU."""

    def __init__(self, layer, in_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, layer.out, pair(layer.kernel), pair(layer.stride),
                              pair(layer.padding), bias=layer.bias)
        self.bn = (nn.BatchNorm2d(layer.out, eps=layer.eps, momentum=BN_MOMENTUM)
                   if layer.norm == "bn" else None)
        if self.bn is not None and not layer.scale:
            self.bn.weight.requires_grad_(False)       # Keras's scale=False: fixed at 1, not learnt
        self.relu = layer.act == "relu"

    def forward(self, X):
        X = self.conv(X)
        if self.bn is not None:
            X = self.bn(X)
        return F.relu(X) if self.relu else X


class DenseBlock(nn.Module):
    """``Dense`` record: linear, optional ReLU."""

    def __init__(self, layer, in_features):
        super().__init__()
        self.linear = nn.Linear(in_features, layer.out, bias=layer.bias)
        self.relu = layer.act == "relu"

    def forward(self, X):
        X = self.linear(X)
        return F.relu(X) if self.relu else X


class Concat(nn.Module):
    """A Concat (an Inception block): run the branches on one input, concatenate channels, ``act``."""

    def __init__(self, branches, act=None):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.relu = act == "relu"

    def forward(self, X):
        X = torch.cat([b(X) for b in self.branches], dim=1)
        return F.relu(X) if self.relu else X


class Residual(nn.Module):
    """``act(x + scale * body(x))``; the body is kept as ``branches[0]`` (the keys of a Concat)."""

    def __init__(self, body, scale, act):
        super().__init__()
        self.branches = nn.ModuleList([body])
        self.scale, self.relu = scale, act == "relu"

    def forward(self, X):
        X = X + self.scale * self.branches[0](X)
        return F.relu(X) if self.relu else X


class Affine(nn.Module):
    """A fixed per-channel ``x * scale + shift`` (not in the state dict: the table holds it)."""

    def __init__(self, layer):
        super().__init__()
        self.register_buffer("scale", torch.tensor(layer.scale).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", torch.tensor(layer.shift).view(1, -1, 1, 1), persistent=False)

    def forward(self, X):
        return X * self.scale + self.shift


class DownscaleDropout(nn.Module):
    """Paddle's ``downscale_in_infer`` dropout: training zeroes without rescaling, evaluation
    multiplies by ``1 - rate``."""

    def __init__(self, rate):
        super().__init__()
        self.rate = rate

    def forward(self, X):
        if self.training:
            return nn.functional.dropout(X, self.rate, True) * (1 - self.rate)
        return X * (1 - self.rate)


def _dropout(l):
    return nn.Dropout(l.rate) if l.mode == "upscale_in_train" else DownscaleDropout(l.rate)


#: the table's records -> PyTorch modules: ``make(layer, in_shape, name)``
LAYERS = {
    "conv": lambda l, shape, name: ConvBlock(l, shape[0]),
    "dense": lambda l, shape, name: DenseBlock(l, shape[0]),
    "maxpool": lambda l, shape, name: nn.MaxPool2d(pair(l.kernel), pair(l.stride), pair(l.padding),
                                                   ceil_mode=l.ceil),
    "avgpool": lambda l, shape, name: nn.AvgPool2d(pair(l.kernel), pair(l.stride), pair(l.padding),
                                                   count_include_pad=bool(l.count_pad)),
    "adaptive_avg": lambda l, shape, name: nn.AdaptiveAvgPool2d(pair(l.size)),
    "affine": lambda l, shape, name: Affine(l),
    "lrn": lambda l, shape, name: nn.LocalResponseNorm(l.size, l.alpha, l.beta, l.k),
    "gap": lambda l, shape, name: nn.AdaptiveAvgPool2d(1),
    "gmp": lambda l, shape, name: nn.AdaptiveMaxPool2d(1),
    "flatten": lambda l, shape, name: nn.Flatten(),
    "dropout": lambda l, shape, name: _dropout(l),
}
#: where PyTorch keeps the weight file's tensors: its own names and layouts
WEIGHT_NAMES = M.WeightNames(weight="weight", bias="bias",
                             bn=("weight", "bias", "running_mean", "running_var"),
                             bn_extra=("num_batches_tracked",))


class GoogLeNet(nn.Module):
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
        self.stages = nn.ModuleDict()                # registered as stages.b3.inception3a ...
        for st in spec.stages:
            self.stages[st.name] = nn.ModuleDict((n, blocks[f"{st.name}.{n}"]) for n, _ in st.layers)
        self.aux = nn.ModuleDict(aux)

    def block(self, qname):
        stage, name = qname.split(".")
        return self.stages[stage][name]

    def call_block(self, qname, X):
        return self.block(qname)(X)

    def call_aux(self, name, X):
        return self.aux[name](X)

    def forward(self, X):
        return M.run(self.spec, self.call_block, self.call_aux, X, training=self.training)


def _call(net, X, training):
    net.train(training)
    try:
        with torch.set_grad_enabled(training):
            return net(X)
    finally:
        net.eval()


@contextlib.contextmanager
def _evaluating(net):
    net.eval()
    with torch.no_grad():
        yield


def _write(t, a):
    with torch.no_grad():
        t.copy_(torch.from_numpy(a))


api = M.NetAPI(
    new=lambda spec, size: GoogLeNet(spec, size).to(_device()).eval(),
    call=_call, evaluating=_evaluating,
    count=lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad),
    to_tensor=to_tensor, to_canonical=to_numpy, names=WEIGHT_NAMES, read=to_numpy, write=_write)
build, count_params, forward, stage_outputs, features, layer_table = (
    api.build, api.count_params, api.forward, api.stage_outputs, api.features, api.layer_table)
get_weights, set_weights, init_weights = api.get_weights, api.set_weights, api.init_weights
aux_outputs = api.aux_outputs

NATIVE_SUFFIX = ".pt"


def save_native(net, path):
    """PyTorch's own format: ``torch.save(net.state_dict(), path)``."""
    torch.save(net.state_dict(), path)
    return path


def _refused_global(e):
    found = re.search(r"GLOBAL ([\w.]+)", str(e))
    return found.group(1) if found else None


def safe_load(path, what="PyTorch file"):
    """``torch.load(path, map_location='cpu', weights_only=True)``: PyTorch's restricted
    unpickler, which rebuilds tensors and plain containers only, so the file cannot run code.
    A refused global, a damaged or a truncated file raises ``WeightsError`` (one line)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:            # pickle.UnpicklingError, RuntimeError (zip), EOFError ...
        refused = _refused_global(e) if isinstance(e, pickle.UnpicklingError) else None
        if refused:
            raise WeightsError(f"{path}: refusing to unpickle {refused}: a {what} holds tensors and "
                               f"plain containers only (a pickle that names anything else could "
                               f"run code)") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        first = first.split(". ")[0] if len(first) > 120 else first      # its first sentence
        raise WeightsError(f"{path}: not a readable {what} ({type(e).__name__}: {first})") from None


def read_native(path, spec, input_size=None):
    """The tensors of a ``.pt`` state dict, as canonical names and layouts (not yet checked:
    ``common.net.weights.read`` and ``set_weights`` check them); no network is built.

    Read by :func:`safe_load` (``torch.load(weights_only=True)``), so a ``.pt`` cannot run
    code.  A refused, damaged or truncated file raises ``WeightsError``.
    """
    state = safe_load(path, "PyTorch weight file")
    if not isinstance(state, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise WeightsError(f"{path}: not a PyTorch state dict (a dict of tensor names to tensors, "
                           f"as torch.save(net.state_dict()) writes), but a {type(state).__name__}")
    tensors = {k: (v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu()).numpy()
               for k, v in state.items()}
    return M.from_native(spec, WEIGHT_NAMES, M.module_key, tensors, input_size)


def load_native(net, path):
    """``set_weights(net, read_native(path, ...))``: checked in full before the network is touched."""
    return set_weights(net, read_native(path, net.spec, net.input_size))
