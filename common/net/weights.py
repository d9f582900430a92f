"""The framework-neutral weight file and the recipe's initialisation.

A weight file is one ``.npz`` keyed by the table's layer names in canonical layouts
(see :func:`common.net.oracle.param_shapes`): conv ``(O, I, kH, kW)``, dense ``(out, in)``,
biases and batch-norm tensors 1-D.  Each backend converts to and from its own layouts
in ``get_weights`` / ``set_weights``; this module only checks and stores.

Every weight file, whatever its format, comes in through :func:`read`: the file is read
into canonical names and layouts first (the neutral ``.npz`` here, a framework's own file
by that backend's ``read_native``, which builds no network), then checked as a whole
(:func:`check`), and only then handed to a network.  No format is read in a way that can
run code: ``np.load(allow_pickle=False)`` here; docs/security.md for the others.
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
from collections import OrderedDict
from typing import Callable, Mapping, Optional

import numpy as np

from . import oracle
from .spec import Spec

__all__ = ["WeightsError", "WeightsMismatch", "check", "save", "load", "meta", "read", "load_any",
           "is_neutral", "xavier_init"]

META_KEY = "__meta__"


class WeightsError(ValueError):
    """A weight file cannot be read (damaged, truncated, not a weight file, or refused because
    reading it could run code), or its weights do not match the network's table."""


class WeightsMismatch(WeightsError):
    """The weights were read but do not fit the table: a tensor missing, of the wrong shape,
    not finite, or not part of the network."""


def check(spec: Spec, weights: Mapping[str, np.ndarray], input_size=None, *,
          allow_extra: bool = False) -> "OrderedDict[str, np.ndarray]":
    """Validate ``weights`` against the table; return them as float32 arrays in table order.

    Raises :class:`WeightsMismatch` naming the first tensor (in forward order) that is
    missing, of the wrong shape, not numeric or not finite, then the first one that is not
    part of the network (unless ``allow_extra``: those are dropped).  Nothing is modified.
    """
    expected = oracle.param_shapes(spec, input_size)
    out = OrderedDict()
    for name, shape in expected.items():
        if name not in weights:
            raise WeightsMismatch(f"layer {name!r}: missing from the weights (expected shape {shape})")
        arr = np.asarray(weights[name])
        if tuple(arr.shape) != tuple(shape):
            raise WeightsMismatch(f"layer {name!r}: shape {tuple(arr.shape)} does not match the "
                                  f"network's {tuple(shape)}")
        if arr.dtype.kind not in "fiub":
            raise WeightsMismatch(f"layer {name!r}: holds {arr.dtype} values, not numbers")
        if not np.all(np.isfinite(arr)):
            raise WeightsMismatch(f"layer {name!r}: contains NaN or infinite values")
        out[name] = arr.astype(np.float32, copy=False)
    extra = [k for k in weights if k not in expected and k != META_KEY]
    if extra and not allow_extra:
        raise WeightsMismatch(f"layer {extra[0]!r}: not part of the network "
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
    """Read a neutral weight file (unchecked: :func:`read` checks); returns an ordered dict
    (and its metadata with ``with_meta``).  ``allow_pickle=False``: an ``.npz`` holding
    pickled objects is refused, never unpickled."""
    try:
        with np.load(os.fspath(path), allow_pickle=False) as f:
            weights = OrderedDict((k, f[k]) for k in f.files if k != META_KEY)
            meta = json.loads(bytes(f[META_KEY]).decode()) if META_KEY in f.files else {}
    except FileNotFoundError:
        raise
    except Exception as e:  # zipfile.BadZipFile, ValueError, EOFError ...
        raise WeightsError(f"{path}: not a readable weight file ({e})") from None
    if not isinstance(meta, dict):
        raise WeightsError(f"{path}: not a readable weight file (its metadata is not a JSON object)")
    return (weights, meta) if with_meta else weights


def is_neutral(path: str) -> bool:
    """Whether ``path`` is a framework-neutral weight file (``.npz``); a framework's own
    format is told by its suffix (``backends.config.weight_format``)."""
    return os.fspath(path).endswith(".npz")


def meta(path: str) -> dict:
    """The metadata of a neutral weight file (``{}`` for a framework's own format)."""
    return load(path, with_meta=True)[1] if is_neutral(path) else {}


def read(path: str, spec: Spec, input_size=None, *, native: Optional[Callable] = None,
         allow_extra: bool = False) -> "OrderedDict[str, np.ndarray]":
    """The weights of a file in any format, checked against the table: the one front door.

    The file is read into canonical names and layouts without building or touching a
    network: a neutral ``.npz`` by :func:`load`, a framework's own file by ``native`` (the
    ``read_native(path, spec, input_size)`` of the backend its suffix names; the caller
    passes it, as this module imports no backend).  Then :func:`check` runs on the
    whole, so a file that does not fit raises :class:`WeightsMismatch` naming the first bad
    tensor in canonical terms; a damaged, truncated or refused file raises
    :class:`WeightsError`.  Returns float32 arrays in table order.
    """
    return check(spec, load_any(path, spec, input_size, native=native), input_size, allow_extra=allow_extra)


def load_any(path: str, spec: Spec, input_size=None, *,
             native: Optional[Callable] = None) -> "OrderedDict[str, np.ndarray]":
    """The tensors of a weight file in any format as canonical names and layouts, **not yet
    checked** (:func:`read` checks them; fine-tuning first replaces the classifiers whose
    classes differ, ``common.train.finetune.start_weights``).  Raises :class:`WeightsError`
    for a file that cannot be read or is refused, ``FileNotFoundError`` for a missing one."""
    path = os.fspath(path)
    if not is_neutral(path) and native is None:
        raise WeightsError(f"{path}: unknown weight format here; use .npz (framework-neutral), or read a "
                           f"framework's own file with its backend's read_native (backends.config.weight_format "
                           f"names it by suffix)")
    if not os.path.isfile(path):
        raise FileNotFoundError(errno.ENOENT, "no such weight file", path)
    return load(path) if is_neutral(path) else native(path, spec, input_size)


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
