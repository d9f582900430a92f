"""PaddlePaddle: device, version, tensors, seeding."""
import os
import warnings

import numpy as np

from common import runtime
from .card import CARD

_USER_THREADS = os.environ.get("OMP_NUM_THREADS")  # paddle sets it to 1 when imported
#: Before paddle is imported: MKL_DEBUG_CPU_TYPE=5 on AMD CPUs (MKL's AVX2 kernels instead of
#: its slow generic path; see common.runtime.card_env and card.env and docs/performance.md).
ENV = runtime.set_default_env(runtime.card_env(CARD))
with warnings.catch_warnings():  # paddle warns about a missing ccache on import
    warnings.simplefilter("ignore")
    import paddle

NAME = "paddle"


def framework_version() -> str:
    return paddle.__version__


def _device() -> str:
    if paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        return "gpu:0"
    return "cpu"


_DEVICE = _device()
paddle.set_device(_DEVICE)
# Paddle's CPU kernels use one thread unless told; the other three frameworks use every
# core.  Measured here: 15.8 -> 25 training examples/s on 2 cores (docs/performance.md).
# Workers of ``paddle.distributed.launch`` (which sets no OMP_NUM_THREADS) share the cores.
_THREADS = None
if _DEVICE == "cpu" and hasattr(paddle.base.core, "set_num_threads"):
    _THREADS = int(_USER_THREADS or max(1, (os.cpu_count() or 1) // int(os.environ.get("PADDLE_LOCAL_SIZE", "1"))))
    paddle.base.core.set_num_threads(_THREADS)


def settings() -> dict:
    """What this backend set up for its framework (recorded in every run record)."""
    return dict(env=dict(ENV), threads=_THREADS)


def device() -> str:
    """Where the backend computes: ``'gpu:0'`` when a GPU is present, else ``'cpu'``."""
    return _DEVICE


def to_tensor(X, dtype=None):
    """A NumPy batch (images NCHW float32, or integer labels) as a tensor on the device."""
    if isinstance(X, paddle.Tensor):
        return X
    X = np.ascontiguousarray(X)
    if np.issubdtype(X.dtype, np.floating):
        X = X.astype(np.float32, copy=False)
    elif dtype is None:
        X = X.astype(np.int64, copy=False)
    return paddle.to_tensor(X)


def to_numpy(t) -> np.ndarray:
    return t.detach().numpy()


def seed(n: int) -> None:
    """Seed the framework's own generator (dropout)."""
    paddle.seed(int(n))


def rng_state() -> list:
    """The state of the generators dropout draws from, JSON-able (through the states' pickle
    protocol; the Mersenne Twister's state, a list of character codes, as its text): saved
    by a checkpoint in the middle of an epoch (``common/train/loop.py``)."""
    out = []
    for g in paddle.get_rng_state():
        parts = list(g.__getstate__())
        out.append([bytes(p).decode("latin-1") if isinstance(p, list) else p for p in parts])
    return out


def set_rng_state(state: list) -> None:
    """Put back a state of :func:`rng_state`."""
    cls = type(paddle.get_rng_state()[0])
    gens = []
    for parts in state:
        g = cls.__new__(cls)
        g.__setstate__(tuple(list(p.encode("latin-1")) if isinstance(p, str) else p for p in parts))
        gens.append(g)
    paddle.set_rng_state(gens)
