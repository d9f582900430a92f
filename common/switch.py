"""The backend switch: which framework runs the network.

Precedence: an explicit name (argument or ``--backend``) > the environment variable
``GOOGLENET_BACKEND`` > the default, ``pytorch``.  Names are case-insensitive and
surrounding blanks are ignored; an empty value counts as unset.  This module imports
no framework.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Optional

ENV_VAR = "GOOGLENET_BACKEND"
DEFAULT = "pytorch"
BACKENDS = ("mxnet", "pytorch", "tensorflow", "paddle")
ALIASES = {"mx": "mxnet", "torch": "pytorch", "tf": "tensorflow", "paddlepaddle": "paddle"}
#: the module each backend imports, and the pip command that provides it
#: (CPU builds; docs/install.md gives the GPU builds of the same versions).
FRAMEWORK_MODULE = {"mxnet": "mxnet", "pytorch": "torch", "tensorflow": "tensorflow", "paddle": "paddle"}
PIP = {
    "mxnet": "pip install 'mxnet==1.9.1' 'numpy==1.23.5'   # or: pip install -e '.[mxnet]'",
    "pytorch": "pip install 'torch==2.13.0'   # or: pip install -e '.[pytorch]'",
    "tensorflow": "pip install 'tensorflow-cpu==2.15.1'   # or: pip install -e '.[tensorflow]'",
    "paddle": "pip install 'paddlepaddle==3.3.1'   # or: pip install -e '.[paddle]'",
}


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
