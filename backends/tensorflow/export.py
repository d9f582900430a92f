"""TensorFlow: the serving formats (SavedModel, TFLite) and ONNX (tf2onnx).

Every artifact is the network in inference mode (logits only), **NCHW** input of the
trained size with a dynamic batch, like the other three frameworks' artifacts: the
serving function transposes to the NHWC the network computes in, and tf2onnx's optimiser
removes the transposes again (its ONNX graph is NCHW throughout).

* ``savedmodel``: a ``tf.Module`` that holds only the network's variables and the
  ``serving_default`` signature ``input`` float32 ``[None, C, H, W]`` -> ``{'logits':
  [None, classes]}``.  Attaching the Keras model itself would also work, but then
  ``tf.saved_model.save`` traces every Keras layer's call for Keras metadata (50-120 s
  instead of 3-10 s here) for nothing a server needs.  Load with
  ``tf.saved_model.load(path).signatures['serving_default']`` or serve with TF Serving.
* ``tflite``: the same signature converted by ``tf.lite.TFLiteConverter``; the batch
  stays dynamic (``shape_signature`` ``[-1, C, H, W]``: call ``resize_tensor_input``).
* ONNX: ``tf2onnx.convert.from_function`` on the serving function, opset 17, traced with
  the layers' constant tensors written into the graph (:func:`constants_inlined`).
"""
import contextlib
import os
import tempfile

import numpy as np
import tensorflow as tf

from common.serve import export as X

from .core import NAME, framework_version
from backends.config import FORMATS as ALL_FORMATS
from .card import CARD

FORMATS = CARD.format_names
ONNX_OPSET = CARD.onnx_opset
SIGNATURE = "serving_default"


def serving_module(net):
    """A ``tf.Module`` holding the network's variables and its NCHW serving function
    ``serve(input) -> {'logits': ...}`` (also the ``serving_default`` signature)."""
    c, s = net.spec.in_channels, net.input_size

    @tf.function(input_signature=[tf.TensorSpec([None, c, s, s], tf.float32, name=X.INPUT)])
    def serve(input):                     # noqa: A002  (the name is the signature's input key)
        return {X.OUTPUT: net(tf.transpose(input, (0, 2, 3, 1)), training=False)}

    module = tf.Module()
    module.params = list(net.variables)   # what the function captures: saved, nothing else
    module.serve = serve
    return module


def _meta(net, path, format, meta, exporter, **facts):
    return X.artifact_meta(meta or X.net_meta(net.spec, net.input_size), format=ALL_FORMATS[format], backend=NAME,
                           path=path, framework_version=framework_version(), exporter=exporter, **facts)


def export(net, path, format=None, meta=None, calibration=None):
    """Write the network's serving artifact ``format`` (one of :data:`FORMATS`; default the
    first) at ``path``, and its metadata beside it.  Returns the metadata.
    ``calibration`` is for a card's own int8 format; this backend has none (ONNX's int8 is
    ``cli/export.py``'s)."""
    format = format or FORMATS[0]
    if format not in FORMATS:
        raise X.ExportError(f"the {NAME} backend writes {', '.join(FORMATS)} and ONNX, not {format!r}")
    module = serving_module(net)
    if format == "savedmodel":
        meta = _meta(net, path, format, meta, f"tf.saved_model.save (TensorFlow {tf.__version__})",
                     signature=SIGNATURE)
        tf.saved_model.save(module, path, signatures={SIGNATURE: module.serve})
    else:
        meta = _meta(net, path, format, meta, f"tf.lite.TFLiteConverter (TensorFlow {tf.__version__})",
                     signature=SIGNATURE)
        with tempfile.TemporaryDirectory() as tmp:   # the converter reads a SavedModel
            tf.saved_model.save(module, tmp, signatures={SIGNATURE: module.serve})
            flat = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=[SIGNATURE]).convert()
        with open(path, "wb") as f:
            f.write(flat)
    return X.write_meta(path, meta)


@contextlib.contextmanager
def constants_inlined(net):
    """While tf2onnx traces the serving function, hold the layers' constant tensors as NumPy
    arrays; everything is restored after.

    A tensor made eagerly when a layer is built (the :class:`~common.net.spec.Affine` layer's
    scale and shift, the adaptive pool's averaging matrices) is *captured* by a
    ``tf.function``: the traced graph gets a placeholder for it, which ``tf.saved_model``
    saves with its value but which ``tf2onnx.convert.from_function`` lists as one more graph
    input (3 inputs instead of 1 for torchvision's GoogLeNet with ``transform_input``).
    A NumPy array is written into the graph as a ``Const`` instead: the same numbers."""
    swapped = []
    for layer in [net, *net.submodules]:
        for name, value in list(vars(layer).items()):
            if isinstance(value, tf.Tensor) and not isinstance(value, tf.Variable):
                swapped.append((layer, name, value))
    for layer, name, value in swapped:
        object.__setattr__(layer, name, value.numpy())
    try:
        yield
    finally:
        for layer, name, value in swapped:
            object.__setattr__(layer, name, value)


def export_onnx(net, path, meta=None):
    """Write the network as ONNX with tf2onnx (``from_function`` on the serving function,
    opset :data:`ONNX_OPSET`, the layers' constants inlined: :func:`constants_inlined`), in
    the project's I/O contract, and its metadata beside it.  Returns the metadata."""
    X.require("onnx", "ONNX export")
    tf2onnx = X.require("tf2onnx", "ONNX export from TensorFlow")
    meta = _meta(net, path, "onnx", meta, f"tf2onnx.convert.from_function {tf2onnx.__version__}, "
                                          f"opset {ONNX_OPSET} (TensorFlow {tf.__version__})")
    with constants_inlined(net):
        module = serving_module(net)
        model, _ = tf2onnx.convert.from_function(module.serve, input_signature=module.serve.input_signature,
                                                 opset=ONNX_OPSET)
    return X.save_onnx(model, path, net.spec.num_classes, meta)


def predictor(path, format):
    """A function NCHW float32 batch -> logits (NumPy) that runs an exported artifact with
    TensorFlow's runtime alone (``tf.saved_model.load`` / ``tf.lite.Interpreter``)."""
    if format == "savedmodel":
        loaded = tf.saved_model.load(path)
        serve = loaded.signatures[SIGNATURE]

        def run(batch):
            _ = loaded                                     # the signature needs its owner alive
            return serve(**{X.INPUT: tf.constant(np.ascontiguousarray(batch, np.float32))})[X.OUTPUT].numpy()
        return run
    if format == "tflite":
        interpreter = tf.lite.Interpreter(model_path=os.fspath(path))
        inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        shape = [None]

        def run(batch):
            batch = np.ascontiguousarray(batch, np.float32)
            if shape[0] != batch.shape:                    # the batch is dynamic: resize first
                interpreter.resize_tensor_input(inp["index"], list(batch.shape))
                interpreter.allocate_tensors()
                shape[0] = batch.shape
            interpreter.set_tensor(inp["index"], batch)
            interpreter.invoke()
            return interpreter.get_tensor(out["index"]).copy()
        return run
    raise X.ExportError(f"the {NAME} runtime does not run {format!r} artifacts")
