"""The public API of the paddle backend: what ``backends.get_backend('paddle')`` returns."""
from .core import (NAME, device, framework_version, rng_state, seed, set_rng_state, settings, to_numpy,
                   to_tensor)
from .model import (NATIVE_SUFFIX, build, count_params, features, forward, get_weights,
                    init_weights, layer_table, load_native, read_native, save_native, set_weights,
                    stage_outputs)
from . import distribute, model  # model: its NetAPI (model.api) for tools that need more
from .card import CARD
from .training import Trainer
from . import export  # serving formats and ONNX: export.FORMATS, export.export, export.export_onnx, export.predictor

from backends import API

__all__ = list(API)
