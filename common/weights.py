"""The framework-neutral weight file and the recipe's initialisation.

A weight file is one ``.npz`` keyed by the table's layer names in canonical layouts
(see :func:`common.oracle.param_shapes`): conv ``(O, I, kH, kW)``, dense ``(out, in)``,
biases and batch-norm tensors 1-D.  Each backend converts to and from its own layouts
in ``get_weights`` / ``set_weights``; this module only checks and stores.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections import OrderedDict
from typing import Dict, Mapping

import numpy as np

from . import oracle
from .spec import Spec

__all__ = ["WeightsError", "check", "save", "load", "xavier_init"]

META_KEY = "__meta__"


class WeightsError(ValueError):
    """A weight dict or file does not match the network's table."""


def check(spec: Spec, weights: Mapping[str, np.ndarray], input_size=None) -> "OrderedDict[str, np.ndarray]":
    """Validate ``weights`` against the table; return them as float32 arrays in table order.

    Raises :class:`WeightsError` naming the first layer (in forward order) whose tensor is
    missing, unexpected or of the wrong shape.  Nothing is modified.
    """
    expected = oracle.param_shapes(spec, input_size)
    out = OrderedDict()
    for name, shape in expected.items():
        if name not in weights:
            raise WeightsError(f"layer {name!r}: missing from the weights (expected shape {shape})")
        arr = np.asarray(weights[name])
        if tuple(arr.shape) != tuple(shape):
            raise WeightsError(f"layer {name!r}: shape {tuple(arr.shape)} does not match the "
                               f"network's {tuple(shape)}")
        if not np.all(np.isfinite(arr)):
            raise WeightsError(f"layer {name!r}: contains NaN or infinite values")
        out[name] = arr.astype(np.float32, copy=False)
    extra = [k for k in weights if k not in expected and k != META_KEY]
    if extra:
        raise WeightsError(f"layer {extra[0]!r}: not part of the network "
                           f"({len(extra)} unexpected tensor(s))")
    return out


def save(path: str, weights: Mapping[str, np.ndarray], **meta) -> str:
    """Write a weight file atomically (a temporary file, then a rename)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    arrays = {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}
    arrays[META_KEY] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=directory)
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load(path: str, with_meta: bool = False):
    """Read a weight file; returns an ordered dict (and its metadata with ``with_meta``)."""
    try:
        with np.load(os.fspath(path), allow_pickle=False) as f:
            weights = OrderedDict((k, f[k]) for k in f.files if k != META_KEY)
            meta = json.loads(bytes(f[META_KEY]).decode()) if META_KEY in f.files else {}
    except FileNotFoundError:
        raise
    except Exception as e:  # zipfile.BadZipFile, ValueError, EOFError ...
        raise WeightsError(f"{path}: not a readable weight file ({e})") from None
    return (weights, meta) if with_meta else weights


def xavier_init(spec: Spec, seed: int = 0, input_size=None) -> "OrderedDict[str, np.ndarray]":
    """The recipe's initial weights, identical for every backend.

    Xavier-uniform (Glorot) conv and dense weights, ``U(-a, a)`` with
    ``a = sqrt(6 / (fan_in + fan_out))``, ``fan_in = I*kH*kW``, ``fan_out = O*kH*kW``;
    zero biases; batch norm: scale 1, shift 0, running mean 0, running variance 1.
    Drawn in table order from ``numpy.random.default_rng(seed)``.
    """
    rng = np.random.default_rng(seed)
    out = OrderedDict()
    for name, shape in oracle.param_shapes(spec, input_size).items():
        if name.endswith(".weight") and len(shape) >= 2:
            receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
            fan_in, fan_out = shape[1] * receptive, shape[0] * receptive
            a = np.sqrt(6.0 / (fan_in + fan_out))
            out[name] = rng.uniform(-a, a, size=shape).astype(np.float32)
        elif name.endswith(("bn.weight", "running_var")):
            out[name] = np.ones(shape, np.float32)
        else:
            out[name] = np.zeros(shape, np.float32)
    return out
