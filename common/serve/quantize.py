"""int8 inference: post-training static quantization of an exported ONNX model with ONNX
Runtime's quantization tools (``onnxruntime.quantization.quantize_static``), framework-free.

The recipe (docs/export.md, "int8"):

* **calibration on training images only**: :func:`calibration_batches` takes the
  *training* split and nothing else (a seeded sample of ``count`` images), prepared with
  :class:`common.inputs.data.Loader`'s arithmetic exactly as the network saw them in
  training (``x / 255``, then the run's normalisation); the test split is never read;
* **QOperator format, U8S8** by default (``format='qoperator'``: ``QLinearConv``,
  ``QLinearConcat``, uint8 ``MaxPool``, ``QLinearGlobalAveragePool``; uint8 activations, int8
  weights), **per-channel** weights.  Measured on the AMX Xeon, batch 1, 96x96, each model in
  its own process: float32 2.34 ms, QDQ S8S8 2.18 ms (the float max pools and concatenations
  between a dequantize and a quantize, and ONNX Runtime's per-operator costs, eat the int8
  gain at batch 1), QOperator U8S8 **1.05 ms**, QOperator S8S8 0.32x float32 (no fast kernels
  for int8 activations in that layout).  ``format='qdq'`` keeps ONNX Runtime's documented
  default (QDQ, S8S8: "the first choice" of its guide, and the layout other execution
  providers and tools read).  On x86-64 without VNNI the U8S8 kernels use ``VPMADDUBSW``,
  which can saturate, and the documented remedy is ``reduce_range`` (7-bit weights): so
  ``reduce_range`` is on exactly where the CPU that quantizes has no VNNI
  (:func:`needs_reduce_range`; the metadata records the choice);
* **MinMax** calibration (the activations' ranges over the calibration images);
* the graph is first prepared with ``quant_pre_process`` (shape inference and ONNX
  Runtime's basic optimisations, the documented pre-processing step);
* QDQ only: **one QDQ pair per consumer** (``DedicatedQDQPair``) with its own scale and zero-point
  initializers (:func:`unshare_quantize_params`).  An Inception block's input feeds three
  convolutions and a pool; with one shared ``DequantizeLinear`` ONNX Runtime (1.32) fused
  only 30 of the 57 convolutions of the batch-norm net into ``QLinearConv`` and left 27 as
  float convolutions between a dequantize and a quantize (measured: slower than float32
  at batch 1).  Dedicated pairs alone do not help, because the session's common-subexpression
  elimination merges the identical ``QuantizeLinear`` nodes again; with their own
  parameter names they stay apart and all 57 become ``QLinearConv`` in a plain
  ``InferenceSession`` (no session option needed, so any ONNX Runtime user gets it).
"""
from __future__ import annotations

import copy
import os
import tempfile
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence

import numpy as np

from ..inputs import data as D
from ..runtime import cpu_flags
from . import export as X

#: calibration images drawn from the training split (the ORT examples use a few hundred)
CALIBRATION_COUNT = 512
CALIBRATION_BATCH = 32
CALIBRATION_SEED = 0
#: the flags with which x86 int8 dot products do not saturate (VNNI); AMX-INT8 implies it
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def needs_reduce_range(flags=None) -> bool:
    """Whether to quantize weights to 7 bits: on an x86 CPU without VNNI, as ONNX Runtime's
    documentation advises for its ``VPMADDUBSW`` kernels (no such issue with VNNI or ARM)."""
    flags = cpu_flags() if flags is None else set(flags)
    if not flags or "avx2" not in flags:
        return False                             # not x86 with AVX2 (ARM, or unknown): no saturation
    return not any(f in flags for f in VNNI_FLAGS)


def calibration_indices(n_train: int, count: int = CALIBRATION_COUNT, seed: int = CALIBRATION_SEED) -> np.ndarray:
    """The rows of the training split used for calibration: ``count`` of ``n_train`` drawn
    without replacement by ``default_rng(seed)``, in increasing order (all of them if fewer)."""
    if n_train < 1:
        raise X.ExportError("calibration needs training images, and the training split is empty")
    if count >= n_train:
        return np.arange(n_train)
    return np.sort(np.random.default_rng(seed).choice(n_train, count, replace=False))


def calibration_batches(train: D.Split, count: int = CALIBRATION_COUNT, batch_size: int = CALIBRATION_BATCH,
                        mean=None, std=None, seed: int = CALIBRATION_SEED) -> List[np.ndarray]:
    """float32 NCHW batches of ``count`` **training** images (:func:`calibration_indices`),
    prepared by :class:`common.inputs.data.Loader` (``x / 255``, then ``(x - mean) / std``
    when the run normalised): the inputs the network saw in training, without augmentation.
    Takes the training split only, so the test split cannot reach the calibration."""
    idx = calibration_indices(len(train), count, seed)
    images = np.asarray(train.images[idx]) if len(idx) < len(train) else np.asarray(train.images)
    subset = D.Split(images, np.asarray(train.labels)[idx])
    norm = dict(mean=mean, std=std) if mean is not None else {}
    return [np.ascontiguousarray(x, np.float32)
            for x, _ in D.Loader(subset, batch_size, prefetch=0, **norm).epoch(0)]


#: training images held out of the calibration on which the export checks the int8 model
HELD_OUT = 256


@dataclass
class Calibration:
    """What an int8 export is calibrated and checked on, all from the training split:
    ``batches`` (the calibration images, prepared) and ``held_out`` (up to :data:`HELD_OUT`
    other training images, prepared the same way, for the export's check; empty when the
    calibration takes every training image), and ``describe`` for the metadata."""
    batches: List[np.ndarray]
    held_out: np.ndarray
    describe: dict


def calibration_from_train(train: D.Split, count: int = CALIBRATION_COUNT, mean=None, std=None,
                           seed: int = CALIBRATION_SEED, held_out: int = HELD_OUT, what: str = "") -> Calibration:
    """:class:`Calibration` from the **training split** (the only split it is given)."""
    idx = calibration_indices(len(train), count, seed)
    rest = np.setdiff1d(np.arange(len(train)), idx)[:held_out]
    batches = calibration_batches(train, count, mean=mean, std=std, seed=seed)
    check = np.zeros((0,) + batches[0].shape[1:], np.float32)
    if len(rest):
        sub = D.Split(np.asarray(train.images[rest]), np.asarray(train.labels)[rest])
        norm = dict(mean=mean, std=std) if mean is not None else {}
        check = np.concatenate([x for x, _ in D.Loader(sub, len(rest), prefetch=0, **norm).epoch(0)])
    return Calibration(batches, np.ascontiguousarray(check, np.float32), dict(
        split="train", data=what, training_examples=len(train), examples=int(len(idx)), seed=seed,
        rule=f"numpy.random.default_rng({seed}).choice(training examples, {count}, replace=False), sorted "
             f"(every training example when there are fewer)", prepared="common.inputs.data.Loader, no augmentation",
        held_out_for_the_check=int(len(rest))))


def _reader(batches: Sequence[np.ndarray], input_name: str):
    """An ``onnxruntime.quantization.CalibrationDataReader`` over ``batches``."""
    q = X.require("onnxruntime.quantization", "int8 quantization")

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self._it = iter(batches)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {input_name: x}

        def rewind(self):
            self._it = iter(batches)

    return Reader()


def unshare_quantize_params(model) -> int:
    """Give every ``QuantizeLinear`` node its own copy of its scale and zero point, in place
    (why: the module's docstring); returns how many nodes were changed."""
    g = model.graph
    init = {i.name: i for i in g.initializer}
    changed = 0
    for k, node in enumerate(g.node):
        if node.op_type != "QuantizeLinear":
            continue
        for j in range(1, len(node.input)):
            name = node.input[j]
            if name in init:
                t = copy.deepcopy(init[name])
                t.name = f"{name}__q{k}"
                g.initializer.append(t)
                node.input[j] = t.name
        changed += 1
    return changed


#: the operators between the classifier and the graph's output that are walked through to find it
PASS_THROUGH = ("Flatten", "Reshape", "Identity", "Squeeze", "Cast")
#: the classifier's operators (a Dense layer: Gemm, or MatMul then Add)
CLASSIFIER = ("Gemm", "MatMul", "Add")


#: ``Pad`` nodes stay float32 too: tf2onnx writes a ceil-mode max pool as a ``Pad`` with
#: value -inf before the pool, and the quantized pad value broke the graph (measured: top-1
#: agreement 8.6 % with the float32 model on the real subset; with the pads in float32, 100 %)


def classifier_nodes(model) -> List[str]:
    """The names of the nodes of the final classifier (the Gemm, or MatMul + Add, that makes
    the logits, found by walking back from the graph's output through reshapes).  They stay
    float32: an int8 output would round every logit to a step of (logit range) / 255, which
    hides the small margins between classes (measured on a model with logits up to 800:
    the int8 output flattened one class's logits to equal values)."""
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    out, names = g.output[0].name, []
    node = producer.get(out)
    while node is not None and node.op_type in PASS_THROUGH:
        node = producer.get(node.input[0])
    while node is not None and node.op_type in CLASSIFIER:
        names.append(node.name)
        if node.op_type in ("Gemm", "MatMul"):
            break
        node = next((producer[i] for i in node.input if i in producer), None)
    return names


def name_nodes(model) -> int:
    """Name every unnamed node (``<op>_<index>``, unique), in place, so that the quantizer's
    lists of nodes can name them; returns how many were named."""
    taken = {n.name for n in model.graph.node if n.name}
    named = 0
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
            named += 1
    return named


#: the int8 ONNX layouts :func:`quantize` writes (``--int8-format``): ``qoperator`` (the default:
#: quantized operators, uint8 activations) and ``qdq`` (QuantizeLinear/DequantizeLinear pairs
#: around float operators, int8 activations)
INT8_FORMATS = ("qoperator", "qdq")


def quantize(float_path: str, out_path: str, batches: Iterable[np.ndarray], *, per_channel: bool = True,
             reduce_range: Optional[bool] = None, format: str = INT8_FORMATS[0]) -> dict:
    """Write the int8 model of the float ONNX file ``float_path`` to ``out_path`` in ``format``
    (:data:`INT8_FORMATS`), calibrated on ``batches``; returns the settings used (for the
    metadata)."""
    onnx = X.require("onnx", "int8 quantization")
    q = X.require("onnxruntime.quantization", "int8 quantization")
    shape_inference = X.require("onnxruntime.quantization.shape_inference", "int8 quantization")
    if format not in INT8_FORMATS:
        raise X.ExportError(f"unknown int8 format {format!r}; choose one of {', '.join(INT8_FORMATS)}")
    qdq = format == "qdq"
    batches = list(batches)
    reduce_range = needs_reduce_range() if reduce_range is None else bool(reduce_range)
    activations = q.QuantType.QInt8 if qdq else q.QuantType.QUInt8
    with tempfile.TemporaryDirectory() as tmp:
        pre, raw = os.path.join(tmp, "pre.onnx"), os.path.join(tmp, "int8.onnx")
        shape_inference.quant_pre_process(float_path, pre)
        prepared = onnx.load(pre)
        if name_nodes(prepared):                 # mxnet.onnx leaves some nodes unnamed
            onnx.save(prepared, pre)
        name = prepared.graph.input[0].name
        keep = classifier_nodes(prepared) + [n.name for n in prepared.graph.node if n.op_type == "Pad"]
        q.quantize_static(pre, raw, _reader(batches, name),
                          quant_format=q.QuantFormat.QDQ if qdq else q.QuantFormat.QOperator,
                          activation_type=activations, weight_type=q.QuantType.QInt8,
                          per_channel=per_channel, reduce_range=reduce_range,
                          calibrate_method=q.CalibrationMethod.MinMax,
                          nodes_to_exclude=keep, extra_options=dict(DedicatedQDQPair=True) if qdq else {})
        model = onnx.load(raw)
    unshared = unshare_quantize_params(model) if qdq else 0
    onnx.checker.check_model(model)
    onnx.save(model, out_path)
    ops = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return dict(method="onnxruntime.quantization.quantize_static", format="QDQ" if qdq else "QOperator",
                activations="int8" if qdq else "uint8", weights="int8", per_channel=per_channel,
                reduce_range=reduce_range, calibrate_method="MinMax", dedicated_qdq_pairs=qdq,
                quantize_nodes_unshared=unshared, kept_float32=keep,
                calibration_examples=int(sum(len(b) for b in batches)), ops=ops)


def agreement(float_logits: np.ndarray, int8_logits: np.ndarray) -> dict:
    """How the int8 model's logits compare with float32's: the fraction of examples with the
    same top-1 class, the largest |difference| relative to max(1, max |float logit|)."""
    a, b = np.asarray(float_logits), np.asarray(int8_logits)
    scale = max(1.0, float(np.abs(a).max()))
    return dict(top1_agreement=float((a.argmax(1) == b.argmax(1)).mean()), examples=int(len(a)),
                max_diff=float(np.abs(a - b).max()), relative_max_diff=float(np.abs(a - b).max()) / scale)
