"""Four parallel backends, one public API.

Every backend subpackage (``backends.mxnet``, ``backends.pytorch``,
``backends.tensorflow``, ``backends.paddle``) exposes the same names; see
``docs/backend-api.md``.  Pick one with :func:`get_backend`, which honours
``GOOGLENET_BACKEND``.  Importing this package imports no framework.
"""
from __future__ import annotations

import importlib
import importlib.util

from common.switch import BACKENDS, FRAMEWORK_MODULE, BackendError, canonical, installed, missing_message, resolve

__all__ = ["get_backend", "BACKENDS", "BackendError", "installed", "resolve", "API", "EXPORT_API"]

#: The public names every backend module exposes (checked by the tests).
API = (
    "NAME", "framework_version", "device", "settings", "build", "count_params", "stage_outputs",
    "forward", "features", "layer_table", "init_weights", "get_weights", "set_weights",
    "Trainer", "to_tensor", "to_numpy", "seed", "rng_state", "set_rng_state", "save_native", "load_native",
    "read_native", "NATIVE_SUFFIX",
    "export",
)
#: The public names of every backend's ``export`` module (serving formats and ONNX; the
#: exporters' packages are imported inside its functions only).
EXPORT_API = ("FORMATS", "ONNX_OPSET", "export", "export_onnx", "predictor")


def get_backend(name: str = None):
    """The backend module for ``name`` (explicit > ``$GOOGLENET_BACKEND`` > ``pytorch``).

    Raises :class:`BackendError` for an unknown name (listing the valid ones) or for a
    backend whose framework is missing (naming the ``pip install`` to run).
    """
    name = resolve(name)
    # Note: in a process that uses both PyTorch and TensorFlow, import torch first
    # (tests/conftest.py does); choosing one backend imports no other framework.
    framework = FRAMEWORK_MODULE[name]
    try:
        return importlib.import_module(f"backends.{name}")
    except ImportError as e:
        if (e.name or "").split(".")[0] == framework or importlib.util.find_spec(framework) is None:
            raise BackendError(missing_message(name, e)) from None
        raise
