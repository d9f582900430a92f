"""Four parallel backends, one public API.

Every backend folder (``backends/mxnet``, ``backends/pytorch``, ``backends/tensorflow``,
``backends/paddle``) holds the same modules: ``card`` (the framework's facts, imports no
framework), ``api`` (the public names below), ``core``, ``model``, ``training``,
``distribute``, ``export`` and ``book`` (the book's own code).  :mod:`backends.config`
collects the cards and resolves the backend; pick one with :func:`get_backend`, which
honours ``GOOGLENET_BACKEND``.  Importing this package imports no framework.
"""
from __future__ import annotations

import importlib
import importlib.util

from .config import (BACKENDS, CARDS, BackendError, canonical, installed, missing_message,
                     resolve)

__all__ = ["get_backend", "BACKENDS", "CARDS", "BackendError", "canonical", "installed",
           "resolve", "API", "EXPORT_API", "DISTRIBUTE_API"]

#: The public names every backend's API exposes (checked by the tests).
API = (
    "NAME", "CARD", "framework_version", "device", "settings", "build", "count_params", "stage_outputs",
    "forward", "features", "aux_outputs", "layer_table", "init_weights", "get_weights", "set_weights",
    "Trainer", "to_tensor", "to_numpy", "seed", "rng_state", "set_rng_state", "save_native", "load_native",
    "read_native", "NATIVE_SUFFIX",
    "distribute", "export",
)
#: The public names of every backend's ``export`` module (serving formats and ONNX; the
#: exporters' packages are imported inside its functions only).
EXPORT_API = ("FORMATS", "ONNX_OPSET", "export", "export_onnx", "predictor")
#: The public names of every backend's ``distribute`` module (its ``__all__``): whether this
#: process was started as one worker of several, the :class:`common.train.distributed.World` of
#: the framework's engine, and the network wrapped for it (or unchanged).
DISTRIBUTE_API = ("launched", "init", "wrap")


def get_backend(name: str = None):
    """The backend API module for ``name`` (explicit > ``$GOOGLENET_BACKEND`` > ``pytorch``).

    Raises :class:`BackendError` for an unknown name (listing the valid ones) or for a
    backend whose framework is missing (naming the ``pip install`` to run).
    """
    name = resolve(name)
    # Note: in a process that uses both PyTorch and TensorFlow, import torch first
    # (tests/conftest.py does); choosing one backend imports no other framework.
    framework = CARDS[name].module
    try:
        return importlib.import_module(f"backends.{name}.api")
    except ImportError as e:
        if (e.name or "").split(".")[0] == framework or importlib.util.find_spec(framework) is None:
            raise BackendError(missing_message(name, e)) from None
        raise
