"""The PaddlePaddle backend (``paddle.nn``)."""
from .core import NAME, device, framework_version, seed, to_numpy, to_tensor
from .model import (build, count_params, features, forward, get_weights, init_weights, layer_table,
                    set_weights, stage_outputs)
from .training import Trainer
