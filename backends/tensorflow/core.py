"""TensorFlow: device, version, tensors, seeding.  Images are NHWC inside, NCHW outside."""
import os

import numpy as np

from common import runtime
from .card import CARD

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")   # keep TensorFlow's start-up chatter quiet
ENV = runtime.set_default_env(runtime.card_env(CARD))
import tensorflow as tf  # noqa: E402

NAME = "tensorflow"
#: the launcher's share of the cores for each worker (common/launch.py); TensorFlow's pools
#: do not read OMP_NUM_THREADS, so they are sized here, before the runtime starts
THREADS = os.environ.get("GOOGLENET_THREADS")
if THREADS:
    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(THREADS))
        tf.config.threading.set_inter_op_parallelism_threads(int(THREADS))
    except RuntimeError:          # the runtime already runs (imported late): settings() tells
        pass


def framework_version() -> str:
    return tf.__version__


def settings() -> dict:
    """What this backend set up for its framework (recorded in every run record)."""
    return dict(env=dict(ENV), threads=tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count(),
                inter_op_threads=tf.config.threading.get_inter_op_parallelism_threads() or os.cpu_count())


def device() -> str:
    """Where the backend computes: ``'/GPU:0'`` when a GPU is visible, else ``'cpu'``."""
    return "/GPU:0" if tf.config.list_physical_devices("GPU") else "cpu"


def to_tensor(X, dtype=None):
    """A NumPy batch as a tensor: images NCHW float32 become NHWC float32, integer labels int32."""
    if isinstance(X, (tf.Tensor, tf.Variable)):
        return X
    X = np.asarray(X)
    if np.issubdtype(X.dtype, np.floating):
        X = X.astype(np.float32, copy=False)
        if X.ndim == 4:
            X = X.transpose(0, 2, 3, 1)
        return tf.constant(np.ascontiguousarray(X))
    return tf.constant(X, dtype=dtype or tf.int32)


def to_numpy(t) -> np.ndarray:
    return t.numpy() if hasattr(t, "numpy") else np.asarray(t)


def nchw(t) -> np.ndarray:
    """A tensor as NumPy in canonical order: NHWC maps become NCHW, other ranks unchanged."""
    a = to_numpy(t)
    return a.transpose(0, 3, 1, 2) if a.ndim == 4 else a


def seed(n: int) -> None:
    """Seed the framework's own generator (dropout)."""
    tf.random.set_seed(int(n))


def rng_state() -> None:
    """None: Keras's dropout draws from stateful random ops whose state TensorFlow does not
    expose, so a checkpoint inside an epoch cannot hold it (``common/train/loop.py`` says what that
    changes: the dropout masks of the rest of that epoch)."""
    return None


def set_rng_state(state) -> None:
    """Nothing to put back (:func:`rng_state` saves nothing)."""
