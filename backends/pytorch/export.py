"""PyTorch: the serving formats (``torch.export`` ``.pt2``, TorchScript) and ONNX.

Every artifact is the network in evaluation mode (logits only, no aux outputs), NCHW input
of the trained size with a dynamic batch, on the CPU; its metadata is written beside it
(``common.serve.export``) and also packed into the ``.pt2`` / TorchScript archive as
``googlenet.json`` (``extra_files``).

* ``torch-export``: ``torch.export.export`` with a dynamic batch dimension, saved with
  ``torch.export.save``; load with ``torch.export.load(path).module()``.
* ``torchscript``: ``torch.jit.trace`` then ``torch.jit.freeze`` (batch norm folded into
  the convolutions); load with ``torch.jit.load``.  ``torch.jit.script`` cannot compile
  the network (its forward walks the Python table, ``common.net.model.run``); tracing records
  that walk, which is fixed in evaluation mode.  Both are deprecated in torch 2.13 in
  favour of ``torch.export``, which is why that format comes first.
* ``torchscript-int8``: PyTorch's own int8 path, ``torch.ao`` FX graph mode post-training
  static quantization with the engine's default recipe (``get_default_qconfig_mapping('x86')``:
  per-channel symmetric int8 weights, uint8 activations with histogram observers and
  ``reduce_range``), calibrated on the run's training images (``common/serve/quantize.py``'s
  :class:`Calibration`), then traced and frozen as ``torchscript``; it runs fbgemm/oneDNN int8
  kernels (``quantized::conv2d_relu``...).  The FX API is deprecated in torch 2.13 in favour of
  torchao's PT2E, which is not installed beside the pinned torch (docs/export.md).
* ONNX: the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``, opset
  17).  The default dynamo exporter needs ``onnxscript`` >= 0.6, whose ``onnx_ir`` needs
  ``ml_dtypes`` >= 0.5, which TensorFlow 2.15 refuses (docs/export.md).  It has no
  adaptive average pooling whose output size does not divide the input's: such a pool is
  traced as two matrix products while exporting (:func:`onnx_friendly`).
"""
import contextlib
import copy
import json
import warnings

import numpy as np
import torch

from common.serve import export as X

from .core import NAME, framework_version
from backends.config import FORMATS as ALL_FORMATS
from .card import CARD

FORMATS = CARD.format_names
INT8_FORMATS = CARD.int8_names
ONNX_OPSET = CARD.onnx_opset
#: the largest batch the ``.pt2``'s dynamic batch dimension admits
MAX_BATCH = 4096


def _eval_cpu(net):
    """The network in evaluation mode on the CPU (a copy if it lives on a GPU)."""
    if any(p.device.type != "cpu" for p in net.parameters()):
        net = copy.deepcopy(net).cpu()
    return net.eval()


def _example(net, n=2):
    # batch 2: torch.export specialises a dimension whose example size is 0 or 1
    return torch.zeros(n, net.spec.in_channels, net.input_size, net.input_size)


def _meta(net, path, format, meta, exporter, **facts):
    return X.artifact_meta(meta or X.net_meta(net.spec, net.input_size), format=ALL_FORMATS[format], backend=NAME,
                           path=path, framework_version=framework_version(), exporter=exporter, **facts)


def quantize(net, batches):
    """``net`` (evaluation mode, CPU) quantized to int8 by ``torch.ao``'s FX graph mode
    post-training static quantization, calibrated on ``batches`` (NCHW float32 arrays); returns
    (the quantized ``GraphModule``, the settings for the metadata)."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    engine = torch.backends.quantized.engine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                      # the FX API's deprecation notice
        mapping = get_default_qconfig_mapping(engine)
        prepared = prepare_fx(copy.deepcopy(net), mapping, (_example(net),))
        with torch.no_grad():
            for b in batches:
                prepared(torch.from_numpy(np.ascontiguousarray(b, np.float32)))
        quantized = convert_fx(prepared)
        act, weight = mapping.global_qconfig.activation(), mapping.global_qconfig.weight()
    kind = {torch.quint8: "uint8", torch.qint8: "int8"}
    described = [f"{type(o).__name__}(dtype={o.dtype}, qscheme={o.qscheme}, reduce_range={o.reduce_range})"
                 for o in (act, weight)]
    return quantized, dict(method="torch.ao.quantization.quantize_fx (prepare_fx, calibrate, convert_fx)",
                           engine=engine, activations=kind[act.dtype], weights=kind[weight.dtype],
                           qconfig=f"get_default_qconfig_mapping({engine!r})",
                           activation_observer=described[0], weight_observer=described[1])


def export(net, path, format=None, meta=None, calibration=None):
    """Write the network's serving artifact ``format`` (one of :data:`FORMATS` or
    :data:`INT8_FORMATS`, which needs ``calibration``, a :class:`common.serve.quantize.Calibration`;
    default the first) at ``path``, and its metadata beside it
    (:func:`common.serve.export.base_meta`'s ``meta`` completed with the format's facts).
    Returns the metadata."""
    format = format or FORMATS[0]
    if format not in FORMATS + INT8_FORMATS:
        raise X.ExportError(f"the {NAME} backend writes {', '.join(FORMATS + INT8_FORMATS)} and ONNX, not {format!r}")
    net = _eval_cpu(net)
    x = _example(net)
    facts = {}
    if format in INT8_FORMATS:
        if calibration is None:
            raise X.ExportError(f"the {format} format is calibrated on training images: give calibration")
        net, settings = quantize(net, calibration.batches)
        facts = dict(quantization=dict(settings, calibration=calibration.describe))
    if format == "torch-export":
        meta = _meta(net, path, format, meta, f"torch.export.export (torch {torch.__version__})",
                     max_batch=MAX_BATCH)
        batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        with torch.no_grad():
            program = torch.export.export(net, (x,), dynamic_shapes=({0: batch},))
        torch.export.save(program, path, extra_files={X.META_FILE: json.dumps(meta)})
    else:
        int8 = "torch.ao FX int8; " if facts else ""
        meta = _meta(net, path, format, meta, f"{int8}torch.jit.trace + torch.jit.freeze (torch {torch.__version__})",
                     **facts)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")                  # trace's deprecation notice
            module = torch.jit.freeze(torch.jit.trace(net, x))
        module.save(path, _extra_files={X.META_FILE: json.dumps(meta)})
    return X.write_meta(path, meta)


def bins(n, out):
    """PyTorch's adaptive-pooling matrix ``(out, n)``: row i averages cells floor(i*n/out)
    .. ceil((i+1)*n/out) - 1."""
    m = torch.zeros(out, n)
    for i in range(out):
        lo, hi = (i * n) // out, -(-((i + 1) * n) // out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


class BinnedAvgPool(torch.nn.Module):
    """``nn.AdaptiveAvgPool2d`` for one input size as two matrix products (rows of the map,
    then its columns): the same averages, in ONNX ``MatMul`` s."""

    def __init__(self, rows, cols):
        super().__init__()
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols.t().contiguous(), persistent=False)

    def forward(self, X):
        return torch.matmul(self.rows, torch.matmul(X, self.cols))


def _uneven_pools(net):
    """[(parent, child name, pool, BinnedAvgPool)] for the network's adaptive average pools
    whose output size does not divide their input size (their input sizes measured with one
    forward pass)."""
    found = [(parent, name, child) for parent in net.modules() for name, child in parent.named_children()
             if isinstance(child, torch.nn.AdaptiveAvgPool2d)]
    shapes, hooks = {}, [pool.register_forward_pre_hook(lambda m, i: shapes.__setitem__(id(m), i[0].shape[-2:]))
                         for _, _, pool in found]
    try:
        with torch.no_grad():
            net(_example(net, 1))
    finally:
        for h in hooks:
            h.remove()
    out = []
    for parent, name, pool in found:
        if id(pool) not in shapes:
            continue                                        # an aux head's: not in the evaluation graph
        (h, w), (ho, wo) = shapes[id(pool)], [v or n for v, n in zip(_pair(pool.output_size), shapes[id(pool)])]
        if h % ho or w % wo:
            out.append((parent, name, pool, BinnedAvgPool(bins(h, ho), bins(w, wo))))
    return out


def _pair(v):
    return (v, v) if isinstance(v, int) or v is None else tuple(v)


@contextlib.contextmanager
def onnx_friendly(net):
    """While ``torch.onnx.export`` traces the network, swap every adaptive average pool whose
    output size does not divide its input's (torch.onnx: "Unsupported: ONNX export of
    operator adaptive_avg_pool2d, output size that are not factor of input size") for
    :class:`BinnedAvgPool`; restored afterwards.  Torchvision's GoogLeNet's 4x4 pools sit in
    its aux heads, which evaluation leaves out: only user tables reach this."""
    swapped = _uneven_pools(net)
    for parent, name, _, binned in swapped:
        setattr(parent, name, binned)
    try:
        yield
    finally:
        for parent, name, pool, _ in swapped:
            setattr(parent, name, pool)


def export_onnx(net, path, meta=None):
    """Write the network as ONNX with PyTorch's own exporter (the TorchScript-based one,
    opset :data:`ONNX_OPSET`), in the project's I/O contract (:func:`common.serve.export.tidy_onnx`),
    and its metadata beside it.  Returns the metadata."""
    onnx = X.require("onnx", "ONNX export")
    net = _eval_cpu(net)
    meta = _meta(net, path, "onnx", meta, f"torch.onnx.export, TorchScript-based (dynamo=False), "
                                          f"opset {ONNX_OPSET} (torch {torch.__version__})")
    with torch.no_grad(), warnings.catch_warnings(), onnx_friendly(net):
        warnings.simplefilter("ignore")                      # the exporter's deprecation notice
        torch.onnx.export(net, (_example(net),), path, dynamo=False, opset_version=ONNX_OPSET,
                          input_names=[X.INPUT], output_names=[X.OUTPUT],
                          dynamic_axes={X.INPUT: {0: X.BATCH}, X.OUTPUT: {0: X.BATCH}})
    return X.save_onnx(onnx.load(path), path, net.spec.num_classes, meta)


def predictor(path, format):
    """A function NCHW float32 batch -> logits (NumPy) that runs an exported artifact with
    PyTorch's runtime alone (``torch.export.load`` / ``torch.jit.load``), not this project's
    model code."""
    if format == "torch-export":
        module = torch.export.load(path).module()
    elif format in ("torchscript",) + INT8_FORMATS:
        module = torch.jit.load(path, map_location="cpu")
    else:
        raise X.ExportError(f"the {NAME} runtime does not run {format!r} artifacts")

    def run(batch):
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(batch, np.float32))).numpy()
    return run

