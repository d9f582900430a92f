"""The backend switch and the registry of the backends' cards: which framework runs the network.

Precedence: an explicit name (argument or ``--backend``) > the environment variable
``GOOGLENET_BACKEND`` > the default, ``pytorch``.  Names are case-insensitive and
surrounding blanks are ignored; an empty value counts as unset.  Like Keras 3's backend
config, this is the one place that resolves the backend; every fact about a framework is
on its card (``backends/<framework>/card.py``).  Imports no framework.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Dict, Optional

from common.serve.export import ONNX, ONNX_INT8, ExportError, Format
from common.net.weights import WeightsError, is_neutral

from .card import Card
from .mxnet import CARD as _MXNET
from .paddle import CARD as _PADDLE
from .pytorch import CARD as _PYTORCH
from .tensorflow import CARD as _TENSORFLOW

#: every backend, in canonical order (a new backend: its folder, and one entry here)
CARDS: Dict[str, Card] = {c.name: c for c in (_MXNET, _PYTORCH, _TENSORFLOW, _PADDLE)}

ENV_VAR = "GOOGLENET_BACKEND"
DEFAULT = _PYTORCH.name
BACKENDS = tuple(CARDS)
ALIASES = {alias: c.name for c in CARDS.values() for alias in c.aliases}
#: the module each backend imports, and the pip command that provides it
FRAMEWORK_MODULE = {n: c.module for n, c in CARDS.items()}
PIP = {n: c.pip for n, c in CARDS.items()}
#: a framework's own weight-file suffix -> its backend
NATIVE_SUFFIXES = {c.native_suffix: n for n, c in CARDS.items()}
#: every serving format: ONNX (every backend's exporter writes it) and each backend's own
FORMATS: Dict[str, Format] = {f.name: f for f in (ONNX, ONNX_INT8) + sum((c.formats + c.int8_formats
                                                                           for c in CARDS.values()), ())}
#: float32 format -> its int8 sibling (what ``--int8`` makes of it)
INT8: Dict[str, str] = {f.int8_of: f.name for f in FORMATS.values() if f.int8_of}


class BackendError(RuntimeError):
    """An unknown backend name, or a backend whose framework is not installed."""


def canonical(name: str) -> str:
    """The canonical backend name for ``name`` or an alias; raises :class:`BackendError`."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in BACKENDS:
        valid = ", ".join(BACKENDS)
        aliases = ", ".join(f"{a} -> {c}" for a, c in ALIASES.items())
        raise BackendError(f"unknown backend {name!r}. Valid backends: {valid} "
                           f"(aliases: {aliases}); set {ENV_VAR} or pass --backend.")
    return key


def resolve(name: Optional[str] = None) -> str:
    """Pick the backend: explicit ``name`` > ``$GOOGLENET_BACKEND`` > ``pytorch``."""
    if name is not None and name.strip():
        return canonical(name)
    env = os.environ.get(ENV_VAR, "")
    if env.strip():
        return canonical(env)
    return DEFAULT


def is_installed(name: str) -> bool:
    """Whether the framework of backend ``name`` can be imported (without importing it)."""
    return importlib.util.find_spec(FRAMEWORK_MODULE[canonical(name)]) is not None


def installed() -> list:
    """The backends whose framework is installed, in canonical order."""
    return [b for b in BACKENDS if is_installed(b)]


def missing_message(name: str, error: Exception = None) -> str:
    name = canonical(name)
    msg = (f"the {name} backend needs the {FRAMEWORK_MODULE[name]!r} package, which is not "
           f"installed (or failed to import). Install it with:\n    {PIP[name]}")
    if error is not None:
        msg += f"\n(import error: {error})"
    return msg


def format_of(name: str) -> Format:
    """The format called ``name`` (case and ``_``/``-`` ignored); ``ExportError`` lists the valid ones."""
    key = name.strip().lower().replace("_", "-")
    key = {"torch.export": "torch-export", "pt2": "torch-export", "saved-model": "savedmodel",
           "int8": "onnx-int8", "onnx-int8": "onnx-int8"}.get(key, key)
    if key not in FORMATS:
        raise ExportError(f"unknown format {name!r}; choose one of {', '.join(FORMATS)}")
    return FORMATS[key]


def weight_format(path: str) -> Optional[str]:
    """The backend whose own weight format ``path``'s suffix names (``.pt``: ``'pytorch'``,
    ``.weights.h5``: ``'tensorflow'``, ``.params``: ``'mxnet'``, ``.pdparams``: ``'paddle'``),
    ``None`` for the neutral ``.npz``; any other suffix raises ``WeightsError``."""
    path = os.fspath(path)
    for suffix, name in NATIVE_SUFFIXES.items():
        if path.endswith(suffix):
            return name
    if is_neutral(path):
        return None
    raise WeightsError(f"{path}: unknown weight format; use .npz (framework-neutral), "
                       + ", ".join(NATIVE_SUFFIXES))
