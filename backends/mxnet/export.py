"""MXNet: the serving format (``HybridBlock.export``: symbol JSON + params) and ONNX (mxnet.onnx).

* ``mxnet``: the network is hybridized and run once in predict mode (that traces the
  inference graph: no aux outputs), then ``HybridBlock.export`` writes
  ``model-symbol.json`` and ``model-0000.params`` into the artifact folder.  Load them
  with ``mx.gluon.SymbolBlock.imports(symbol, ['data'], params)`` **with NumPy semantics
  on** (``mx.npx.set_np()``, or ``mx.util.set_np(shape=True, array=False)`` for legacy
  NDArrays): the backend uses the book's NumPy interface, so the parameters are saved in
  NumPy shape semantics and MXNet refuses to load them otherwise.  The input is called
  ``data`` (Gluon's name).
* ONNX: ``mxnet.onnx`` (mx2onnx, shipped with MXNet 1.9.1, the last release) on the
  exported symbol, opset 13 (its translations stop there), after teaching it the two
  NumPy-interface operators it has no converter for (:func:`register_numpy_ops`).
"""
import os
import tempfile
import warnings

import mxnet as mx
import numpy as onp
from mxnet import autograd

from common.serve import export as X

from .core import NAME, framework_version, to_tensor
from backends.config import FORMATS as ALL_FORMATS
from .card import CARD

FORMATS = CARD.format_names
#: the newest opset mxnet.onnx (1.9.1) has translations for
ONNX_OPSET = CARD.onnx_opset
#: the file prefix and epoch inside the artifact folder: model-symbol.json, model-0000.params
PREFIX, EPOCH = "model", 0
#: what Gluon calls the exported symbol's input
INPUT_NAME = "data"


def _meta(net, path, format, meta, exporter, **facts):
    return X.artifact_meta(meta or X.net_meta(net.spec, net.input_size), format=ALL_FORMATS[format], backend=NAME,
                           path=path, framework_version=framework_version(), exporter=exporter, **facts)


def _files(prefix):
    return prefix + "-symbol.json", f"{prefix}-{EPOCH:04d}.params"


def _save(net, prefix):
    """Hybridize, trace the inference graph with one forward in predict mode, export."""
    net.hybridize()
    with autograd.predict_mode():
        net(to_tensor(onp.zeros((1, net.spec.in_channels, net.input_size, net.input_size), onp.float32)))
    net.export(prefix, epoch=EPOCH)
    return _files(prefix)


def export(net, path, format=None, meta=None):
    """Write the network's symbol and parameters into the folder ``path`` and its metadata
    (``googlenet.json``) there.  The network is left hybridized.  Returns the metadata."""
    format = format or FORMATS[0]
    if format not in FORMATS:
        raise X.ExportError(f"the {NAME} backend writes {', '.join(FORMATS)} and ONNX, not {format!r}")
    os.makedirs(path, exist_ok=True)
    files = _save(net, os.path.join(path, PREFIX))
    meta = _meta(net, path, format, meta, f"HybridBlock.export (MXNet {mx.__version__})",
                 input_name=INPUT_NAME, files=[os.path.basename(f) for f in files], prefix=PREFIX,
                 epoch=EPOCH, numpy_semantics=True)
    return X.write_meta(path, meta)


_registered = False


def register_numpy_ops():
    """Teach mxnet.onnx the NumPy-interface operators of the exported graph.

    mx2onnx has converters for the legacy operator names only; a graph traced under
    ``npx.set_np()`` holds ``_npx_relu`` and ``_npi_concatenate`` (whose axis attribute
    is ``axis``, legacy ``Concat``'s is ``dim``), and the export fails with "No conversion
    function registered for op type _npx_relu yet".  ``MXNetGraph.register`` is
    mx2onnx's own way to add converters; every other operator of the network
    (Convolution, Pooling, BatchNorm, LRN, Dropout, Flatten, FullyConnected) has one.
    """
    global _registered
    if _registered:
        return
    onnx = X.require("onnx", "ONNX export")
    from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph
    from mxnet.onnx.mx2onnx._op_translations._op_translations_opset12 import create_basic_op_node, get_inputs

    @MXNetGraph.register("_npx_relu", opset_version=12)
    def convert_npx_relu(node, **kwargs):
        return create_basic_op_node("Relu", node, kwargs)

    @MXNetGraph.register("_npi_concatenate", opset_version=12)
    def convert_npi_concatenate(node, **kwargs):
        name, inputs, attrs = get_inputs(node, kwargs)
        return [onnx.helper.make_node("Concat", inputs, [name], axis=int(attrs.get("axis", 0)), name=name)]
    _registered = True


def export_onnx(net, path, meta=None):
    """Write the network as ONNX with mxnet.onnx (opset :data:`ONNX_OPSET`, dynamic batch),
    in the project's I/O contract, and its metadata beside it.  Returns the metadata.

    ``mxnet.onnx.export_model`` would stamp the file with the installed onnx's newest opset
    (22 with onnx 1.17) although its translations stop at 13, which misdescribes operators
    whose signature changed since (Pad, Split, Reduce*); so the graph is built with
    ``MXNetGraph.create_onnx_graph_proto(opset_version=13)`` and stamped 13 here.
    """
    onnx = X.require("onnx", "ONNX export")
    register_numpy_ops()
    from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph
    meta = _meta(net, path, "onnx", meta, f"mxnet.onnx {mx.__version__} (with converters for "
                                          f"_npx_relu, _npi_concatenate), opset {ONNX_OPSET}")
    c, s = net.spec.in_channels, net.input_size
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, PREFIX)
        _save(net, prefix)
        # loading np-saved parameters needs NumPy semantics: the backend switched them on
        sym, args, aux = mx.model.load_checkpoint(prefix, EPOCH)
    graph = MXNetGraph().create_onnx_graph_proto(
        sym, {**args, **aux}, [(1, c, s, s)], [onnx.TensorProto.FLOAT], opset_version=ONNX_OPSET,
        dynamic=True, dynamic_input_shapes=[(None, c, s, s)])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", ONNX_OPSET)],
                                   producer_name="mxnet.onnx", producer_version=mx.__version__)
    return X.save_onnx(model, path, net.spec.num_classes, meta)


def predictor(path, format):
    """A function NCHW float32 batch -> logits (NumPy) that runs an exported symbol with
    MXNet's runtime alone (``mx.gluon.SymbolBlock.imports``, NumPy semantics on)."""
    if format != "mxnet":
        raise X.ExportError(f"the {NAME} runtime does not run {format!r} artifacts")
    mx.npx.set_np()
    symbol, params = _files(os.path.join(path, PREFIX))
    ctx = mx.cpu()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        block = mx.gluon.SymbolBlock.imports(symbol, [INPUT_NAME], params, ctx=ctx)

    def run(batch):
        return block(mx.np.array(onp.ascontiguousarray(batch, onp.float32), ctx=ctx)).asnumpy()
    return run
