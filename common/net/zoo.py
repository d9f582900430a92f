"""A framework's own model zoo, read into the table's canonical weights (framework-free).

Each backend's ``zoo.py`` lists the zoo models its framework ships (:class:`ZooModel`: a
constructor with random weights, the preset of the table that reproduces it, the zoo's own
preprocessing) and reads a zoo model's layers, in the zoo's creation order, as
:class:`ZooLayer` s in canonical layouts.  :func:`canonical` matches them one by one with
the table's conv / dense records in construction order (:func:`common.net.model.places`),
checks every shape and which tensors each side has, and returns the framework-neutral
weight dict, so that a zoo model's weights (random here, ImageNet's later) load into the
table's network on every backend.  A zoo whose layers do not line up with the table raises
:class:`ZooMismatch`, one line naming the first pair that differs: the zoo's layer and ours.

Where the order of a zoo's layers is not its creation order (a Keras functional model lists
its layers by depth), its reader restores that order before calling :func:`canonical`; the
table lists aux heads last, so a zoo that creates its heads among the blocks (torchvision)
moves them last too.
A dense layer after a flatten of a map larger than 1x1 takes the features in channels-first
order here; the reader of a channels-last zoo permutes its columns first.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import oracle
from .model import places
from .spec import Spec, iter_param_layers
from .weights import WeightsMismatch, check

__all__ = ["ZooModel", "ZooLayer", "ZooMismatch", "canonical", "attach_bn", "zoo_count", "randomize",
           "bn_draw", "bias_draw", "preprocess"]


class ZooMismatch(WeightsMismatch):
    """A zoo model's layers do not line up with the table of its preset."""


@dataclass(frozen=True)
class ZooModel:
    """One model of a framework's zoo: ``make(seed)`` builds it with the zoo's own random
    initialisation drawn from ``seed`` (no download), ``preset`` names the table that
    reproduces it, ``input_size`` the size it is built for, ``preprocess(images)`` the zoo's own
    preprocessing of raw 0-255 RGB images ``(N, H, W, 3)`` into the zoo model's input;
    ``outputs`` names what the model returns in evaluation mode, in the table's terms
    (``'logits'``, then the aux heads' names where it returns them too)."""
    name: str
    preset: str
    make: Callable
    preprocess: Callable
    input_size: int
    outputs: Tuple[str, ...] = ("logits",)


@dataclass(frozen=True)
class ZooLayer:
    """A conv or dense layer of a zoo model in canonical layout: conv weight (O, I, kH, kW),
    dense weight (out, in); ``bias`` the layer's own; the batch norm that follows a conv as
    ``scale`` (``None`` where the zoo keeps none), ``shift``, ``mean``, ``var``.  ``name`` is
    the zoo's own name of the layer, for messages."""
    name: str
    kind: str
    weight: np.ndarray
    bias: Optional[np.ndarray] = None
    scale: Optional[np.ndarray] = None
    shift: Optional[np.ndarray] = None
    mean: Optional[np.ndarray] = None
    var: Optional[np.ndarray] = None

    @property
    def has_bn(self) -> bool:
        return self.var is not None

    def describe(self) -> str:
        parts = [f"{self.kind} {tuple(np.shape(self.weight))}"] + ["bias"] * (self.bias is not None)
        if self.has_bn:
            parts.append("batch norm" + ("" if self.scale is not None else " without scale"))
        return f"{self.name!r} ({', '.join(parts)})"


def _ours(qname, record, shapes) -> str:
    parts = [f"{record.kind} {shapes[f'{qname}.weight']}"] + ["bias"] * bool(record.bias)
    if getattr(record, "norm", None) == "bn":
        parts.append("batch norm" + ("" if record.scale else " without scale"))
    return f"{qname!r} ({', '.join(parts)})"


def _difference(zl: ZooLayer, record, shape) -> Optional[str]:
    """Why a zoo layer cannot fill a record, or ``None`` when it can."""
    if zl.kind != record.kind:
        return "another kind of layer"
    if tuple(np.shape(zl.weight)) != tuple(shape):
        return "weight shapes differ"
    if (zl.bias is not None) != bool(record.bias):
        return "only one of them has a bias"
    bn = getattr(record, "norm", None) == "bn"
    if zl.has_bn != bn:
        return "only one of them has batch norm"
    if bn and zl.scale is None and record.scale:
        return "the zoo's batch norm has no scale, ours learns one"
    if bn and zl.scale is not None and not record.scale and not np.all(np.asarray(zl.scale) == 1):
        return "the zoo's batch norm learns a scale, ours fixes it at 1"
    return None


def canonical(spec: Spec, layers: Sequence[ZooLayer], input_size=None,
              zoo: str = "zoo model") -> "OrderedDict[str, np.ndarray]":
    """The canonical weight dict of ``spec`` from a zoo model's conv / dense layers, listed in
    the zoo's creation order, matched in order with the table's records (aux heads last).

    Raises :class:`ZooMismatch` naming the first pair that differs (kind, weight shape, bias,
    batch norm and its scale), or the first layer one side has and the other lacks.  The
    result is checked as a whole (:func:`common.net.weights.check`)."""
    shapes = oracle.param_shapes(spec, input_size)
    records = dict(iter_param_layers(spec))
    ours = list(places(spec))
    layers = list(layers)
    out = OrderedDict()
    for i, (qname, zl) in enumerate(zip(ours, layers)):
        record = records[qname]
        why = _difference(zl, record, shapes[f"{qname}.weight"])
        if why:
            raise ZooMismatch(f"{zoo} layer {i} {zl.describe()} does not match the table's "
                              f"{_ours(qname, record, shapes)}: {why}")
        out[f"{qname}.weight"] = zl.weight
        if record.bias:
            out[f"{qname}.bias"] = zl.bias
        if zl.has_bn:
            tensors = dict(weight=zl.scale, bias=zl.shift, running_mean=zl.mean, running_var=zl.var)
            for t in oracle.bn_tensors(record):
                out[f"{qname}.bn.{t}"] = tensors[t]
    if len(layers) != len(ours):
        n = min(len(layers), len(ours))
        if len(layers) > n:
            raise ZooMismatch(f"{zoo} layer {n} {layers[n].describe()} has no counterpart in the table "
                              f"{spec.name!r} ({len(ours)} conv / dense records, the zoo has {len(layers)})")
        raise ZooMismatch(f"{zoo} has no layer for the table's {_ours(ours[n], records[ours[n]], shapes)} "
                          f"({len(ours)} conv / dense records, the zoo has {len(layers)})")
    return check(spec, out, input_size)


def attach_bn(items: Iterable[tuple]) -> list:
    """:class:`ZooLayer` s from a zoo's layers in creation order, ``(kind, name, tensors)`` with
    ``kind`` ``'conv'``, ``'dense'`` or ``'bn'`` and ``tensors`` a dict of canonical arrays
    (``weight``, ``bias``; for batch norm ``scale``, ``shift``, ``mean``, ``var``): each
    batch norm belongs to the conv created just before it (torchvision's, Paddle's and
    Gluon's conv-BN-ReLU blocks)."""
    out = []
    for kind, name, tensors in items:
        if kind == "bn":
            if not out or out[-1].kind != "conv" or out[-1].has_bn:
                raise ZooMismatch(f"batch norm {name!r} follows no conv of its own")
            prev = out.pop()
            out.append(ZooLayer(prev.name, prev.kind, prev.weight, prev.bias, **tensors))
        else:
            out.append(ZooLayer(name, kind, **tensors))
    return out


def zoo_count(spec: Spec, input_size=None) -> int:
    """The parameter count of the zoo model that ``spec`` reproduces, as its framework counts
    it: the oracle's trainable parameters, aux heads included, plus the batch-norm running
    statistics where the preset's config says ``counts_bn_statistics``."""
    n = oracle.analyze(spec, input_size).params_with_aux
    return n + (oracle.bn_statistics(spec, input_size) if spec.config.get("counts_bn_statistics") else 0)


def bn_draw(rng: np.random.Generator, mean, var, scale: bool = True) -> Mapping[str, np.ndarray]:
    """Non-trivial batch-norm tensors for a test, around a layer's running statistics (a random
    initialisation leaves mean 0 and variance 1, which would hide a swapped mean and variance;
    statistics the zoo measured on a batch keep the signal alive through the net): scale in
    [0.5, 1.5], shift N(0, 0.2^2), mean moved by N(0, 0.2^2) standard deviations, variance
    times [0.5, 2]; float32.  ``scale=False``: no scale."""
    f = np.float32
    mean, var = np.asarray(mean, np.float64), np.asarray(var, np.float64)
    n = mean.shape[0]
    return dict(scale=rng.uniform(0.5, 1.5, n).astype(f) if scale else None,
                shift=rng.normal(0, 0.2, n).astype(f),
                mean=(mean + rng.normal(0, 0.2, n) * np.sqrt(var)).astype(f),
                var=(var * rng.uniform(0.5, 2.0, n)).astype(f))


def randomize(seed, biases, bns, measure=None):
    """Non-trivial tensors for a zoo model in a test, the same draws for every framework: every
    bias (``biases``: ``(size, write)`` pairs, in creation order) from :func:`bias_draw`; then,
    after ``measure()`` (the running statistics set to a batch's, so that the signal reaches
    the logits), every batch norm (``bns``: ``(read, has_scale, write)``, ``read()`` giving its
    running mean and variance, ``write(tensors)`` taking :func:`bn_draw`'s dict) from
    :func:`bn_draw`.  A framework's ``randomize`` says only how to read and write its tensors."""
    rng = np.random.default_rng(seed)
    for n, write in biases:
        write(bias_draw(rng, n))
    if measure is not None and bns:
        measure()
    for read, has_scale, write in bns:
        write(bn_draw(rng, *read(), has_scale))


def bias_draw(rng: np.random.Generator, n: int) -> np.ndarray:
    """A non-zero bias for a test (frameworks start biases at 0): N(0, 0.1^2), float32."""
    return rng.normal(0, 0.1, n).astype(np.float32)


def preprocess(images, mean, std) -> np.ndarray:
    """Raw 0-255 RGB ``(N, H, W, C)`` -> ``(x / 255 - mean) / std`` per channel, float32 NCHW
    (computed in float64, rounded once): a preset's ``spec.config`` preprocessing."""
    x = np.asarray(images, np.float64) / 255.0
    x = (x - np.asarray(mean, np.float64)) / np.asarray(std, np.float64)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)
