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
  exported symbol, opset 13 (its translations stop there), after teaching it the
  NumPy-interface operators it has no converter for (:func:`register_numpy_ops`); an
  operator it still cannot convert is one error naming the table's layer.
"""
import json
import os
import tempfile
import warnings

import mxnet as mx
import numpy as onp
from mxnet import autograd

from common.net.spec import iter_blocks, walk
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


def export(net, path, format=None, meta=None, calibration=None):
    """Write the network's symbol and parameters into the folder ``path`` and its metadata
    (``googlenet.json``) there.  The network is left hybridized.  Returns the metadata.
    ``calibration`` is for a card's own int8 format; this backend has none (ONNX's int8 is
    ``cli/export.py``'s)."""
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


def _scalar(op):
    """A converter of a NumPy-interface ``<op>_scalar`` operator through mx2onnx's own helper
    for the legacy ``_mul_scalar`` / ``_plus_scalar`` ..."""
    from mxnet.onnx.mx2onnx._op_translations._op_translations_opset12 import scalar_op_helper
    return lambda node, **kwargs: scalar_op_helper(node, op, **kwargs)


#: the NumPy-interface operators of the exported graphs without an mx2onnx converter, and
#: the ONNX operator each is: the Affine layer and Paddle's dropout multiply and add
#: scalars, a Residual adds two arrays
_BASIC = {"_npx_relu": "Relu", "_npi_add": "Add", "_npi_subtract": "Sub", "_npi_multiply": "Mul"}
_SCALAR = {"_npi_multiply_scalar": "Mul", "_npi_add_scalar": "Add", "_npi_subtract_scalar": "Sub",
           "_npi_true_divide_scalar": "Div"}
#: node name -> (input shape, output shape) of the graph being converted (at batch 1), for the
#: converters that need a static shape (:func:`_shapes`)
_SHAPES = {}


def register_numpy_ops():
    """Teach mxnet.onnx the NumPy-interface operators of the exported graph.

    mx2onnx has converters for the legacy operator names only; a graph traced under
    ``npx.set_np()`` holds ``_npx_relu`` and ``_npi_concatenate`` (whose axis attribute
    is ``axis``, legacy ``Concat``'s is ``dim``), and the export fails with "No conversion
    function registered for op type _npx_relu yet".  ``MXNetGraph.register`` is
    mx2onnx's own way to add converters.  The family's members add the scalar arithmetic
    of the ``Affine`` layer and of Paddle's ``downscale_in_infer`` dropout
    (``_npi_multiply_scalar``, ``_npi_add_scalar``), the ``_npx_reshape`` that NumPy
    slicing leaves, a Residual's ``_npi_add``, and adaptive average pooling to more than
    one cell (mx2onnx's own converter knows 1x1 only).  Every other operator of the network
    (Convolution, Pooling, BatchNorm, LRN, Dropout, Flatten, FullyConnected, slice) has one.
    """
    global _registered
    if _registered:
        return
    onnx = X.require("onnx", "ONNX export")
    from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph
    from mxnet.onnx.mx2onnx._op_translations._op_translations_opset12 import create_basic_op_node, get_inputs

    for name, op in _BASIC.items():
        MXNetGraph.register(name, opset_version=12)(
            lambda node, _op=op, **kwargs: create_basic_op_node(_op, node, kwargs))
    for name, op in _SCALAR.items():
        MXNetGraph.register(name, opset_version=12)(_scalar(op))

    @MXNetGraph.register("_npi_concatenate", opset_version=12)
    def convert_npi_concatenate(node, **kwargs):
        name, inputs, attrs = get_inputs(node, kwargs)
        return [onnx.helper.make_node("Concat", inputs, [name], axis=int(attrs.get("axis", 0)), name=name)]

    @MXNetGraph.register("_npx_reshape", opset_version=12)
    def convert_npx_reshape(node, **kwargs):
        """``npx.reshape`` to the shape it produced, the batch kept dynamic (``0``: copy)."""
        name, inputs, attrs = get_inputs(node, kwargs)
        code = attrs.get("newshape", "")
        if not code.strip("( )").startswith("-2"):
            raise NotImplementedError(f"npx.reshape {code} changes the batch dimension")
        shape = onnx.numpy_helper.from_array(onp.array((0,) + _shape(name)[1][1:], onp.int64), name + "_shape")
        kwargs["initializer"].append(shape)
        return [onnx.helper.make_node("Reshape", [inputs[0], name + "_shape"], [name], name=name)]

    @MXNetGraph.register("_contrib_AdaptiveAvgPooling2D", opset_version=13)
    def convert_adaptive_avg_pool(node, **kwargs):
        """Adaptive average pooling as PyTorch bins it: an ``AveragePool`` where the output
        divides the input, otherwise two ``MatMul`` s by the averaging matrices (rows of the
        map, then its columns), for the input size the network is built for."""
        name, inputs, _ = get_inputs(node, kwargs)
        (_, _, h, w), (_, _, ho, wo) = _shape(name)
        if h % ho == 0 and w % wo == 0:
            return [onnx.helper.make_node("AveragePool", inputs, [name], name=name, kernel_shape=(h // ho, w // wo),
                                          strides=(h // ho, w // wo))]
        rows, cols = name + "_rows", name + "_cols"
        kwargs["initializer"].extend([onnx.numpy_helper.from_array(_bins(h, ho), rows),
                                      onnx.numpy_helper.from_array(_bins(w, wo).T.copy(), cols)])
        return [onnx.helper.make_node("MatMul", [inputs[0], cols], [name + "_c"], name=name + "_c"),
                onnx.helper.make_node("MatMul", [rows, name + "_c"], [name], name=name)]
    _registered = True


def _bins(n, out):
    """PyTorch's adaptive-pooling matrix ``(out, n)``: row i averages cells floor(i*n/out)
    .. ceil((i+1)*n/out) - 1."""
    m = onp.zeros((out, n), onp.float32)
    for i in range(out):
        lo, hi = (i * n) // out, -(-((i + 1) * n) // out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def _shapes(sym, data_shape):
    """node name -> (its first input's shape, its output's shape) for every operator of the
    graph, at ``data_shape``."""
    internals = sym.get_internals()
    _, shapes, _ = internals.infer_shape(**{INPUT_NAME: data_shape})
    out = dict(zip(internals.list_outputs(), (tuple(s) for s in shapes)))
    nodes = json.loads(sym.tojson())["nodes"]

    def output(i, k):
        n = nodes[i]
        return out.get(n["name"] if n["op"] == "null" else f"{n['name']}_output" + (str(k) if k else ""))
    return {n["name"]: (output(*n["inputs"][0][:2]) if n["inputs"] else None, output(i, 0))
            for i, n in enumerate(nodes) if n["op"] != "null"}


def _shape(name):
    if name not in _SHAPES:
        raise NotImplementedError(f"no shape known for the node {name}")
    return _SHAPES[name]


def table_names(net):
    """Gluon block prefix -> the table's qualified name of the layer it builds (stages and
    aux heads; composites' layers through their branches)."""
    names = {}
    for _, qname, layer in iter_blocks(net.spec):
        for sub_name, _, path in walk(qname, layer):
            block = net.blocks[qname]
            for i, j in path:
                block = list(block._children.values())[i][j]
            names[block.prefix] = sub_name
    return names


def layer_of(net, node_name):
    """The table's layer whose Gluon block made the graph node ``node_name`` (the longest
    block prefix of the node's name), or None."""
    prefixes = [p for p in table_names(net) if node_name.startswith(p)]
    return table_names(net)[max(prefixes, key=len)] if prefixes else None


def _convert(net, sym, params, c, s):
    """mx2onnx's graph, or :class:`ExportError` naming the table's layer it cannot convert."""
    from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph
    onnx = X.require("onnx", "ONNX export")
    _SHAPES.clear()
    _SHAPES.update(_shapes(sym, (1, c, s, s)))
    nodes = json.loads(sym.tojson())["nodes"]
    failed = []
    convert = MXNetGraph.convert_layer

    def convert_layer(node, **kwargs):
        failed[:] = [node]
        return convert(node, **kwargs)
    try:
        MXNetGraph.convert_layer = staticmethod(convert_layer)
        return MXNetGraph().create_onnx_graph_proto(
            sym, params, [(1, c, s, s)], [onnx.TensorProto.FLOAT], opset_version=ONNX_OPSET,
            dynamic=True, dynamic_input_shapes=[(None, c, s, s)])
    except (AttributeError, NotImplementedError, KeyError, ValueError, AssertionError) as e:
        why = str(e).strip().splitlines()[0].rstrip(".") if str(e).strip() else type(e).__name__
        what = "the network"
        if failed:
            node = failed[0]
            layer = layer_of(net, node["name"]) if node["name"] in {n["name"] for n in nodes} else None
            where = f"the layer {layer}" if layer else f"the graph node {node['name']}"
            what = f"{where} (MXNet operator {node['op']})"
        raise X.ExportError(f"mxnet.onnx cannot convert {what}: {why}; export it with another backend "
                            f"(--backend pytorch) or in MXNet's own format (--format mxnet)") from None
    finally:
        MXNetGraph.convert_layer = staticmethod(convert)
        _SHAPES.clear()


def export_onnx(net, path, meta=None):
    """Write the network as ONNX with mxnet.onnx (opset :data:`ONNX_OPSET`, dynamic batch),
    in the project's I/O contract, and its metadata beside it.  Returns the metadata.

    ``mxnet.onnx.export_model`` would stamp the file with the installed onnx's newest opset
    (22 with onnx 1.17) although its translations stop at 13, which misdescribes operators
    whose signature changed since (Pad, Split, Reduce*); so the graph is built with
    ``MXNetGraph.create_onnx_graph_proto(opset_version=13)`` and stamped 13 here.  An
    operator it cannot convert is an :class:`~common.serve.export.ExportError` naming the
    table's layer.
    """
    onnx = X.require("onnx", "ONNX export")
    register_numpy_ops()
    meta = _meta(net, path, "onnx", meta, f"mxnet.onnx {mx.__version__} (with converters for the NumPy "
                                          f"interface's operators), opset {ONNX_OPSET}")
    c, s = net.spec.in_channels, net.input_size
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, PREFIX)
        _save(net, prefix)
        # loading np-saved parameters needs NumPy semantics: the backend switched them on
        sym, args, aux = mx.model.load_checkpoint(prefix, EPOCH)
    graph = _convert(net, sym, {**args, **aux}, c, s)
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
