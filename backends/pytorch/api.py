"""The public API of the pytorch backend: what ``backends.get_backend('pytorch')`` returns."""
from .core import (NAME, device, framework_version, rng_state, seed, set_rng_state, settings, to_numpy,
                   to_tensor)
from .model import (NATIVE_SUFFIX, aux_outputs, build, count_params, features, forward, get_weights,
                    init_weights, layer_table, load_native, read_native, save_native, set_weights,
                    stage_outputs)
from . import distribute, model  # model: its NetAPI (model.api) for tools that need more
from .card import CARD
from .training import Trainer
from . import export  # serving formats and ONNX: export.FORMATS, export.export, export.export_onnx, export.predictor

#: backends.API, spelled out (tests/test_backends.py checks the two are the same)
__all__ = ["NAME", "CARD", "framework_version", "device", "settings", "build", "count_params", "stage_outputs",
           "forward", "features", "aux_outputs", "layer_table", "init_weights", "get_weights", "set_weights", "Trainer",
           "to_tensor", "to_numpy", "seed", "rng_state", "set_rng_state", "save_native", "load_native",
           "read_native", "NATIVE_SUFFIX", "distribute", "export", "model"]
