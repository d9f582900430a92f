"""Exported models, framework-free: the formats, the metadata that travels with every
artifact, the ONNX contract and the ONNX Runtime predictor.

Each backend writes its framework's serving formats and its ONNX file
(``backends/<framework>/export.py``); this module holds what is the same for all of them:

* :class:`Format`: a format, the backend that writes it, its default file or folder name
  and the runtime that serves it (:data:`ONNX` here; the others on the backends' cards);
* the **metadata** written beside every artifact (:func:`base_meta`, :func:`write_meta`,
  :func:`read_meta`): the model options, the NCHW input of the trained size, the class
  names, the input normalisation, the source run and the project's version, so that an
  artifact can be used without the run folder (``scripts/predict.py`` reads it).  A
  file artifact ``model.onnx`` gets ``model.onnx.json`` beside it; a folder artifact
  (SavedModel, Paddle, MXNet) gets ``googlenet.json`` inside it; ONNX files also carry it
  in their ``metadata_props``;
* one I/O contract for the four exporters' ONNX files (:func:`tidy_onnx`): input
  ``input`` float32 ``[batch, C, H, W]``, output ``logits`` ``[batch, classes]``,
  weights as initializers only;
* :func:`onnx_predictor`, an ONNX Runtime session as a function batch -> logits.

The export packages (onnx, onnxruntime, tf2onnx, paddle2onnx) are imported only inside
the functions that need them (:func:`require`), so importing a backend never imports them.
"""
from __future__ import annotations

import datetime
import importlib
import json
import os
import re
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import numpy as np

from ..inputs import data as D
from ..net import weights as W
from ..train import checkpoint
from ..train.checkpoint import write_json

DIST = "googlenet-four-frameworks"
#: the metadata's own format; bumped when a field changes meaning
SCHEMA = "googlenet-export/1"
#: the metadata file inside a folder artifact
META_FILE = "googlenet.json"
#: the pip line that installs every exporter and ONNX Runtime (pyproject.toml's ``export`` extra)
PIP_EXPORT = "pip install -e '.[export]'"
#: the export extra's pins (pyproject.toml), for the error that names a missing one
PINS = {"onnx": "onnx==1.17.0", "onnxruntime": "onnxruntime==1.32.0", "tf2onnx": "tf2onnx==1.17.0",
        "paddle2onnx": "paddle2onnx==2.1.0", "onnx_graphsurgeon": "onnx-graphsurgeon==0.6.1"}
#: the ONNX contract's names
INPUT, OUTPUT, BATCH = "input", "logits", "batch"


class ExportError(RuntimeError):
    """An artifact cannot be written or read: a missing exporter, a bad path, a broken file."""


@dataclass(frozen=True)
class Format:
    """An artifact format: who writes it, what it is called, what serves it."""
    name: str
    backend: Optional[str]        # None: every backend has an exporter (ONNX)
    layout: str                   # 'file' or 'folder'
    default_name: str
    runtime: str
    what: str
    #: an int8 format: the float32 format it is the quantized sibling of (``--int8`` turns that
    #: one into this one); it needs calibration images (``common/serve/quantize.py``)
    int8_of: Optional[str] = None


#: ONNX, which every backend's own exporter writes; each backend's serving formats are on its
#: card (``backends/<framework>/card.py``), and ``backends.config.FORMATS`` holds them all
ONNX = Format("onnx", None, "file", "model.onnx", "onnxruntime.InferenceSession",
              "ONNX, written by the backend's own exporter")
#: int8 ONNX: the backend's ONNX file quantized by ONNX Runtime's post-training static
#: quantization, calibrated on the run's training images (``common/serve/quantize.py``)
ONNX_INT8 = Format("onnx-int8", None, "file", "model.int8.onnx", "onnxruntime.InferenceSession",
                   "int8 ONNX (QOperator, or QDQ with --int8-format qdq): the backend's ONNX file, "
                   "post-training static quantization by "
                   "ONNX Runtime, calibrated on the run's training images", int8_of="onnx")
#: the formats ONNX Runtime serves
ONNX_FORMATS = (ONNX.name, ONNX_INT8.name)
#: file suffix -> format, to tell the format from an output path (longest suffix first)
SUFFIXES = {".int8.onnx": "onnx-int8", ".onnx": "onnx", ".pt2": "torch-export", ".int8.pt": "torchscript-int8",
            ".pt": "torchscript", ".torchscript": "torchscript", ".tflite": "tflite"}


def format_from_path(path: str) -> Optional[str]:
    """The format a file name implies (``model.onnx`` -> ``'onnx'``), or None."""
    low = path.lower().rstrip("/\\")
    for suffix, name in SUFFIXES.items():
        if low.endswith(suffix):
            return name
    return None


# --------------------------------------------------------------------------- packages
def require(module: str, what: str):
    """Import an export package, or raise :class:`ExportError` naming the pip install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        pin = PINS.get(module.split(".")[0], module.split(".")[0])
        raise ExportError(f"{what} needs the {module.split('.')[0]!r} package, which is not installed "
                          f"({e}). Install the exporters with: {PIP_EXPORT}   (or: pip install '{pin}')"
                          ) from None


def project_version() -> str:
    """The project's version: pyproject.toml beside this checkout, else the installed one."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "pyproject.toml")
    try:
        with open(path) as f:
            m = re.search(r'^version\s*=\s*"([^"]+)"', f.read(), re.M)
        if m:
            return m.group(1)
    except OSError:
        pass
    try:
        from importlib.metadata import version
        return version(DIST)
    except Exception:
        return "unknown"


# --------------------------------------------------------------------------- metadata
def base_meta(model: dict, classes=None, dataset: Optional[dict] = None, source: Optional[dict] = None) -> dict:
    """The metadata every artifact of one model shares (the backend adds its format's part).

    ``model``: the run's model options (``preset``, ``in_channels``, ``num_classes``,
    ``input_size``, ...); ``classes``: the class names (default ``class 0`` ...);
    ``dataset``: the run record's dataset entry (``name``, ``normalize``, ``mean``,
    ``std``); ``source``: where the weights came from (run, checkpoint, epoch, accuracy).
    """
    model = dict(model)
    c, s, k = int(model.get("in_channels") or 1), int(model["input_size"]), model.get("num_classes") or 10
    classes = list(classes) if classes else [f"class {i}" for i in range(k)]
    if len(classes) != k:
        raise ExportError(f"{len(classes)} class names for a network with {k} classes")
    dataset = dict(dataset or {})
    normalize = bool(dataset.get("normalize"))
    mean = [float(v) for v in dataset.get("mean", [])] if normalize else None
    std = [float(v) for v in dataset.get("std", [])] if normalize else None
    if normalize and (len(mean) != c or len(std) != c):
        raise ExportError(f"the run's normalisation has {len(mean)} means for {c} input channels")
    return dict(
        schema=SCHEMA,
        project=dict(name=DIST, version=project_version()),
        model=model,
        input=dict(name=INPUT, shape=[None, c, s, s], layout="NCHW", dtype="float32"),
        output=dict(name=OUTPUT, shape=[None, k], what="logits; softmax gives the class probabilities"),
        classes=classes,
        preprocessing=dict(
            channels=c, size=s, colour="grey (Pillow 'L')" if c == 1 else "RGB (Pillow 'RGB')",
            resize="common.inputs.data.resize: bilinear, half-pixel centres, antialiased when shrinking "
                   "(PIL's rule), rounded to uint8; non-square pictures are squashed",
            scale="x / 255", normalize=normalize, mean=mean, std=std,
            formula="(x / 255 - mean) / std" if normalize else "x / 255"),
        dataset=dict(name=dataset.get("name", "fashion-mnist")),
        source=dict(source or {}),
    )


def net_meta(spec, input_size) -> dict:
    """Metadata of a bare network (no run): its table's options, generic class names."""
    return base_meta(dict(preset=spec.name, in_channels=spec.in_channels, num_classes=spec.num_classes,
                          input_size=input_size))


def artifact_meta(base: dict, *, format: Format, backend: str, path: str, framework_version: str,
                  exporter: str, input_name: str = INPUT, output_name: str = OUTPUT, **extra) -> dict:
    """``base`` (:func:`base_meta`) completed with one artifact's facts."""
    meta = json.loads(json.dumps(base))                 # a deep copy, JSON types only
    meta.update(format=format.name, backend=backend, framework_version=framework_version, exporter=exporter,
                artifact=os.path.basename(os.path.normpath(path)), runtime=format.runtime,
                created=datetime.datetime.now().astimezone().isoformat(timespec="seconds"), **extra)
    meta["input"]["name"], meta["output"]["name"] = input_name, output_name
    return meta


def meta_path(artifact: str) -> str:
    """Where an artifact's metadata lives: ``googlenet.json`` inside a folder artifact,
    ``<file>.json`` beside a file artifact."""
    artifact = os.path.normpath(artifact)
    return os.path.join(artifact, META_FILE) if os.path.isdir(artifact) else artifact + ".json"


def write_meta(artifact: str, meta: dict) -> dict:
    write_json(meta_path(artifact), meta)
    return meta


def read_meta(artifact: str) -> dict:
    """The metadata of an artifact (file or folder); :class:`ExportError` if it has none."""
    path = meta_path(artifact)
    try:
        with open(path) as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise ExportError(f"{artifact} has no metadata ({os.path.basename(path)} is missing): "
                          f"export it with scripts/export.py, which writes it") from None
    except (OSError, ValueError) as e:
        raise ExportError(f"{path}: not readable metadata ({e})") from None
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA or not isinstance(meta.get("format"), str):
        raise ExportError(f"{path}: not the metadata of an exported GoogLeNet (schema {SCHEMA})")
    return meta


def find_artifact(path: str) -> Optional[Tuple[str, dict]]:
    """(artifact path, its metadata) if ``path`` is an exported artifact (or its metadata
    file), else None."""
    path = os.path.normpath(path)
    if path.endswith(".json") and os.path.isfile(path):
        if os.path.basename(path) == META_FILE:
            path = os.path.dirname(path) or "."
        elif os.path.exists(path[:-5]):
            path = path[:-5]
    if os.path.exists(meta_path(path)):
        return path, read_meta(path)
    return None


def source_of(run_dir: str, checkpoint_dir: str, run: dict, state: Optional[dict] = None) -> dict:
    """The ``source`` entry of the metadata for a run's checkpoint."""
    state = state or {}
    return dict(run=os.path.abspath(run_dir), checkpoint=os.path.abspath(checkpoint_dir),
                trained_with=run.get("backend"), framework_version=run.get("framework_version"),
                recipe=run.get("recipe_name"), epoch=state.get("epoch"),
                test_acc=run.get("test_acc"), data_dir=run.get("data_dir"))


# --------------------------------------------------------------------------- ONNX
# Over the complexity limit on purpose: one step per difference between the four exporters' ONNX
# files.
def tidy_onnx(model, num_classes: int, meta: Optional[dict] = None):  # noqa: C901
    """Give an exporter's ONNX model the project's I/O contract, in place, and check it.

    The exporters' raw conventions differ: tf2onnx calls the batch ``unk__NNN``;
    paddle2onnx calls the output ``fetch_name_0`` and the batch ``DynamicDimension.0``;
    mxnet.onnx calls the input ``data``, writes unknown dimensions as 0 and lists every
    weight as a graph input too (which also stops ONNX Runtime from folding them).  After
    this: input ``input`` ``[batch, C, H, W]``, output ``logits`` ``[batch, classes]``,
    weights only as initializers; ``meta`` goes into ``metadata_props`` (key
    ``googlenet``).
    """
    onnx = require("onnx", "ONNX export")
    g = model.graph
    inits = {i.name for i in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    if len(inputs) != len(g.input):
        del g.input[:]
        g.input.extend(inputs)
    if len(g.input) != 1 or len(g.output) != 1:
        raise ExportError(f"the exported graph has {len(g.input)} inputs and {len(g.output)} outputs, "
                          f"not one of each")
    for old, new in ((g.input[0].name, INPUT), (g.output[0].name, OUTPUT)):
        if old == new:
            continue
        for node in g.node:
            node.input[:] = [new if x == old else x for x in node.input]
            node.output[:] = [new if x == old else x for x in node.output]
        for v in g.value_info:
            if v.name == old:
                v.name = new
    g.input[0].name, g.output[0].name = INPUT, OUTPUT
    for v in (g.input[0], g.output[0]):
        dims = v.type.tensor_type.shape.dim
        dims[0].Clear()
        dims[0].dim_param = BATCH
        for d in dims[1:]:
            if d.HasField("dim_value") and d.dim_value == 0:
                d.Clear()
    out = g.output[0].type.tensor_type.shape.dim
    if len(out) == 2 and not out[1].HasField("dim_value"):
        out[1].dim_value = int(num_classes)    # mxnet.onnx's Dense(flatten=False) ends in a computed reshape
    if meta is not None:
        embed_meta(model, meta)
    onnx.checker.check_model(model)
    return model


def embed_meta(model, meta: dict):
    """Put ``meta`` into an ONNX model's ``metadata_props`` (key ``googlenet``), in place."""
    props = {p.key: p.value for p in model.metadata_props}
    props["googlenet"] = json.dumps(meta)
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    return model


def save_onnx(model, path: str, num_classes: int, meta: dict) -> dict:
    """Tidy ``model`` (:func:`tidy_onnx`), write it to ``path`` and its metadata beside it."""
    onnx = require("onnx", "ONNX export")
    meta = dict(meta, onnx_opset={o.domain or "ai.onnx": o.version for o in model.opset_import},
                onnx_ir_version=model.ir_version)
    tidy_onnx(model, num_classes, meta)
    onnx.save(model, path)
    return write_meta(path, meta)


def onnx_predictor(path: str, threads: Optional[int] = None) -> Callable[[np.ndarray], np.ndarray]:
    """A function NCHW float32 batch -> logits, running ``path`` in ONNX Runtime (CPU)."""
    ort = require("onnxruntime", "Running an ONNX file")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = options.inter_op_num_threads = int(threads)
    try:
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ExportError(f"{path}: ONNX Runtime cannot load it ({type(e).__name__}: "
                          f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})") from None
    name = session.get_inputs()[0].name
    return lambda X: session.run(None, {name: np.ascontiguousarray(X, np.float32)})[0]


# --------------------------------------------------------------------------- runs
def probe_batch(channels: int, size: int, n: int = 4, seed: int = 123) -> np.ndarray:
    """A batch of ``n`` real-looking NCHW float32 pictures in [0, 1]: smooth blobs and
    stripes on a dark background, resized with :func:`common.inputs.data.resize` like the
    training data, for checking an artifact against the eager model."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:28, 0:28] / 27.0
    out = []
    for _ in range(n * channels):
        cy, cx, w = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.35)
        blob = np.exp(-((r - cy) ** 2 + (c - cx) ** 2) / (2 * w * w))
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (rng.uniform(2, 5) * r + rng.uniform(0, 1)))
        img = 255 * blob * (0.6 + 0.4 * stripes) + rng.normal(0, 8, (28, 28))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    images = D.resize(np.stack(out), size).reshape(n, channels, size, size)
    return images.astype(np.float32) / np.float32(255)



def make_run(run_dir: str, weights, model: dict, dataset: Optional[dict] = None, backend: Optional[str] = None,
             **record) -> str:
    """A minimal run folder around given weights (``run.json`` + ``checkpoint/`` with
    ``weights.npz`` and ``state.json``): what ``scripts/export.py`` and
    ``scripts/predict.py`` read from a training run.  For benchmarks and tests."""
    model = dict(model)
    ckpt = os.path.join(run_dir, checkpoint.CHECKPOINT)
    os.makedirs(ckpt, exist_ok=True)
    W.save(os.path.join(ckpt, "weights.npz"), weights, backend=backend, spec=model.get("preset"),
           input_size=model.get("input_size"))
    write_json(os.path.join(ckpt, checkpoint.STATE), dict(epoch=0))
    dataset = dict(dataset or dict(name="fashion-mnist", classes=list(D.CLASSES), normalize=False))
    write_json(os.path.join(run_dir, "run.json"), dict(dict(backend=backend, model=model, dataset=dataset,
                                                            recipe=dict(resize=model.get("input_size"))),
                                                       **record))
    return run_dir
