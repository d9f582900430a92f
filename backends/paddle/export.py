"""PaddlePaddle: the serving format (``paddle.jit.save`` inference model) and ONNX (paddle2onnx).

* ``paddle``: ``paddle.jit.save`` with an explicit ``InputSpec`` (``input`` float32
  ``[None, C, H, W]``: a dynamic batch; without a spec Paddle cannot trace the network,
  Paddle#31098), in evaluation mode.  Paddle 3 writes the PIR program ``model.json``
  and the weights ``model.pdiparams`` into the artifact folder; serve them with Paddle
  Inference (``paddle.inference.Config(model.json, model.pdiparams)``), whose output is
  called ``fetch_name_0``, or load them with ``paddle.jit.load(folder/model)``.
* ONNX: paddle2onnx on a second inference model traced for it (opset 17).  paddle2onnx
  2.1.0 (the newest release) mis-converts some of the network's operators when they are
  written in Paddle 3's PIR format, so that second trace swaps them for equivalents
  (:func:`onnx_friendly`); the ``paddle`` artifact keeps the network's own layers.
"""
import contextlib
import io
import os
import tempfile

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle.static import InputSpec

from common.serve import export as X

from . import model as M
from .core import NAME, framework_version, settings
from backends.config import FORMATS as ALL_FORMATS
from .card import CARD

FORMATS = CARD.format_names
ONNX_OPSET = CARD.onnx_opset
#: the file prefix inside the artifact folder (model.json, model.pdiparams)
PREFIX = "model"
#: what Paddle Inference calls the network's output (PIR's fetch op)
FETCH_NAME = "fetch_name_0"


def _spec(net):
    return [InputSpec([None, net.spec.in_channels, net.input_size, net.input_size], "float32", name=X.INPUT)]


def _meta(net, path, format, meta, exporter, **facts):
    return X.artifact_meta(meta or X.net_meta(net.spec, net.input_size), format=ALL_FORMATS[format], backend=NAME,
                           path=path, framework_version=framework_version(), exporter=exporter, **facts)


def _save(net, prefix):
    net.eval()
    paddle.jit.save(net, prefix, input_spec=_spec(net))
    model_file = prefix + (".json" if os.path.exists(prefix + ".json") else ".pdmodel")
    return model_file, prefix + ".pdiparams"


def export(net, path, format=None, meta=None, calibration=None):
    """Write the network's Paddle inference model into the folder ``path`` (``model.json``
    + ``model.pdiparams``) and its metadata (``googlenet.json``) there.  Returns the metadata.
    ``calibration`` is for a card's own int8 format; this backend has none (ONNX's int8 is
    ``cli/export.py``'s)."""
    format = format or FORMATS[0]
    if format not in FORMATS:
        raise X.ExportError(f"the {NAME} backend writes {', '.join(FORMATS)} and ONNX, not {format!r}")
    os.makedirs(path, exist_ok=True)
    model_file, params_file = _save(net, os.path.join(path, PREFIX))
    meta = _meta(net, path, format, meta, f"paddle.jit.save with InputSpec (Paddle {paddle.__version__})",
                 output_name=FETCH_NAME, files=[os.path.basename(model_file), os.path.basename(params_file)],
                 prefix=PREFIX)
    return X.write_meta(path, meta)


# --------------------------------------------------------------------------- for paddle2onnx
class BandLRN(paddle.nn.Layer):
    """``nn.LocalResponseNorm`` (PyTorch's definition, which Paddle's follows) without a
    pad operator: the sum of x^2 over each channel window is a 1x1 convolution with a fixed
    0/1 band matrix.  Exact to float32 rounding; used only while tracing for paddle2onnx."""

    def __init__(self, lrn, channels):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = lrn.size, lrn.alpha, lrn.beta, lrn.k
        c = np.arange(channels)
        d = c[None, :] - c[:, None]                           # input channel - output channel
        band = ((d >= -(self.size // 2)) & (d <= (self.size - 1) // 2)).astype("float32")
        self.register_buffer("band", paddle.to_tensor(band[:, :, None, None]))

    def forward(self, x):
        s = F.conv2d(x * x, self.band)
        return x / paddle.pow(self.k + (self.alpha / self.size) * s, self.beta)


def _bins(n, out):
    """The adaptive-pooling matrix ``(out, n)``: row i averages cells floor(i*n/out) ..
    ceil((i+1)*n/out) - 1 (Paddle's bins, as PyTorch's)."""
    m = np.zeros((out, n), "float32")
    for i in range(out):
        lo, hi = (i * n) // out, -(-((i + 1) * n) // out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


class BinnedAvgPool(paddle.nn.Layer):
    """``nn.AdaptiveAvgPool2D`` for one input size as two matrix products (rows of the map,
    then its columns); used only while tracing for paddle2onnx."""

    def __init__(self, h, w, ho, wo):
        super().__init__()
        self.register_buffer("rows", paddle.to_tensor(_bins(h, ho)))
        self.register_buffer("cols", paddle.to_tensor(_bins(w, wo).T.copy()))

    def forward(self, x):
        return paddle.matmul(self.rows, paddle.matmul(x, self.cols))


def _input_shapes(net, kinds):
    """[(parent layer, child name, layer, its input's shape)] of the network's sublayers of
    the given classes that the evaluation forward runs (measured with one forward pass)."""
    found = [(parent, name, child) for parent in net.sublayers(include_self=True)
             for name, child in parent.named_children() if isinstance(child, kinds)]
    if not found:
        return []
    shapes, hooks = {}, []
    for _, _, layer in found:
        hooks.append(layer.register_forward_pre_hook(
            lambda l, inputs: shapes.__setitem__(id(l), list(inputs[0].shape))))
    try:
        with paddle.no_grad():
            net(paddle.zeros([1, net.spec.in_channels, net.input_size, net.input_size]))
    finally:
        for h in hooks:
            h.remove()
    return [(parent, name, layer, shapes[id(layer)]) for parent, name, layer in found if id(layer) in shapes]


def _swaps(net):
    """[(parent, child name, layer, its stand-in)]: every LRN, and every adaptive average pool
    whose output size does not divide its input's."""
    out = []
    for parent, name, layer, shape in _input_shapes(net, (paddle.nn.LocalResponseNorm, paddle.nn.AdaptiveAvgPool2D)):
        if isinstance(layer, paddle.nn.LocalResponseNorm):
            out.append((parent, name, layer, BandLRN(layer, shape[1])))
            continue
        size = layer._output_size
        ho, wo = (size, size) if isinstance(size, int) else size
        (h, w) = shape[2:]
        ho, wo = ho or h, wo or w
        if h % ho or w % wo:
            out.append((parent, name, layer, BinnedAvgPool(h, w, ho, wo)))
    return out


@contextlib.contextmanager
def onnx_friendly(net):
    """While tracing for paddle2onnx 2.1.0, swap the operators it converts wrongly from
    Paddle 3's PIR program for equivalents it converts right; everything is restored after.

    * **ReLU**: the backend's ReLU is ``hardtanh(x, 0, inf)`` (it keeps NaN, see
      ``backends/paddle/model.py``).  paddle2onnx's hardtanh mapper reads the attributes
      ``min``/``max`` but PIR calls them ``t_min``/``t_max``: it silently keeps its defaults
      and writes ``Clip(x, -1, 1)`` (logits off by 28-50).  ``F.relu`` is the same function
      on every number that is not NaN; ``ConvBlock``, ``DenseBlock``, ``Concat`` and
      ``Residual`` look ``relu`` up in ``backends.paddle.model`` when called, so it is
      swapped there.
    * **LRN**: ``nn.LocalResponseNorm`` pads x^2 with ``pad3d``, whose PIR attribute
      ``pad_value`` the mapper reads as ``value``: the ONNX ``Pad`` gets an uninitialised
      constant (NaN or 1e30 logits, changing from run to run).  :class:`BandLRN` needs no pad.
    * **Adaptive average pooling** to a size that does not divide the input's (a 4x4 pool
      of a 14x14 map): paddle2onnx writes an ``AveragePool`` of one fixed window, silently
      wrong (logits off by 5e-2 in a test).  :class:`BinnedAvgPool` computes it as two
      matrix products.  Torchvision's GoogLeNet has such pools only in its aux heads, which
      evaluation leaves out.
    """
    saved, swapped = M.relu, _swaps(net)
    M.relu = F.relu
    for parent, name, _, stand_in in swapped:
        setattr(parent, name, stand_in)
    try:
        yield
    finally:
        M.relu = saved
        for parent, name, layer, _ in swapped:
            setattr(parent, name, layer)


def _fold_constants(model):
    """Constant folding with polygraphy (paddle2onnx's default optimiser), never installing
    anything: paddle2onnx's own call sets ``POLYGRAPHY_AUTOINSTALL_DEPS=1``, and polygraphy
    then runs ``pip install onnx_graphsurgeon`` inside the user's environment when it is
    missing.  Here the auto-install is off and a missing package leaves the model unfolded
    (ONNX Runtime folds it when it loads it, to the same numbers).  Returns (model, note)."""
    os.environ["POLYGRAPHY_AUTOINSTALL_DEPS"] = "0"
    try:
        with contextlib.redirect_stdout(io.StringIO()):      # polygraphy's progress and colour notices
            from polygraphy import config
            config.AUTOINSTALL_DEPS = False
            from polygraphy.backend.onnx import fold_constants
            folded = fold_constants(model)
    except Exception as e:                 # ImportError of onnx_graphsurgeon, or a folding failure
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        return model, f"not folded ({type(e).__name__}: {first})"
    return folded, "folded with polygraphy"


def export_onnx(net, path, meta=None):
    """Write the network as ONNX with paddle2onnx (opset :data:`ONNX_OPSET`) from an
    inference model traced with :func:`onnx_friendly`, in the project's I/O contract, and
    its metadata beside it.  Returns the metadata."""
    onnx = X.require("onnx", "ONNX export")
    p2o = X.require("paddle2onnx", "ONNX export from Paddle")
    meta = _meta(net, path, "onnx", meta, f"paddle2onnx {p2o.__version__}, opset {ONNX_OPSET} "
                                          f"(Paddle {paddle.__version__}; ReLU and LRN swapped while tracing)")
    with tempfile.TemporaryDirectory() as tmp:
        with onnx_friendly(net):
            model_file, params_file = _save(net, os.path.join(tmp, PREFIX))
        try:
            # save_file=None: the ONNX bytes come back without paddle2onnx's optimiser (see _fold_constants)
            raw = p2o.export(model_file, params_file, save_file=None, opset_version=ONNX_OPSET,
                             auto_upgrade_opset=False, enable_onnx_checker=True)
        except Exception as e:              # paddle2onnx logs its own failure, then returns nothing
            raise X.ExportError(f"paddle2onnx could not convert the network ({type(e).__name__}: {e}); "
                                f"its log above says why") from None
    if not raw:
        raise X.ExportError("paddle2onnx could not convert the network; its log above says why")
    model, folding = _fold_constants(onnx.load_from_string(raw))
    return X.save_onnx(model, path, net.spec.num_classes, dict(meta, constant_folding=folding))


def predictor(path, format):
    """A function NCHW float32 batch -> logits (NumPy) that runs an exported inference model
    with Paddle Inference alone (``paddle.inference.create_predictor``, CPU, oneDNN on as
    by default).  Its math library runs on one thread unless told, as Paddle itself does:
    it gets the backend's thread count (every core, or ``OMP_NUM_THREADS``), measured
    1.7x faster at batch 64 on 2 cores (docs/performance.md)."""
    if format != "paddle":
        raise X.ExportError(f"the {NAME} runtime does not run {format!r} artifacts")
    import paddle.inference as pi
    prefix = os.path.join(path, PREFIX)
    model_file = prefix + (".json" if os.path.exists(prefix + ".json") else ".pdmodel")
    config = pi.Config(model_file, prefix + ".pdiparams")
    config.disable_gpu()
    config.disable_glog_info()
    config.set_cpu_math_library_num_threads(settings()["threads"] or os.cpu_count() or 1)
    p = pi.create_predictor(config)
    inp = p.get_input_handle(p.get_input_names()[0])
    out = p.get_output_handle(p.get_output_names()[0])

    def run(batch):
        batch = np.ascontiguousarray(batch, np.float32)
        inp.reshape(list(batch.shape))
        inp.copy_from_cpu(batch)
        p.run()
        return out.copy_to_cpu()
    return run
