"""MXNet: device, version, tensors, seeding.

Like the book, the backend uses MXNet's NumPy interface (``mxnet.np`` / ``npx``,
switched on with ``npx.set_np()``), so it shares one process with the book's own
MXNet code (``backends/mxnet/book.py``).  ``set_np`` holds per thread:
run the networks from the thread that imported this module.
"""
import os

from common import runtime
from .card import CARD

ENV = runtime.set_default_env(runtime.card_env(CARD))
import mxnet as mx  # noqa: E402
import numpy as onp  # noqa: E402
from mxnet import np, npx  # noqa: E402

npx.set_np()

NAME = "mxnet"


def framework_version() -> str:
    return mx.__version__


def _device():
    return mx.gpu(0) if mx.context.num_gpus() > 0 else mx.cpu()


def settings() -> dict:
    """What this backend set up for its framework (recorded in every run record)."""
    return dict(env=dict(ENV), threads=int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1))


def device() -> str:
    """Where the backend computes: ``'gpu(0)'`` when a GPU is present, else ``'cpu'``."""
    d = _device()
    return str(d) if d.device_type == "gpu" else "cpu"


def to_tensor(X, dtype=None):
    """A NumPy batch (images NCHW float32, or integer labels) as an ``mxnet.np`` array on the device."""
    if isinstance(X, mx.nd.NDArray):            # mxnet.np.ndarray is a subclass
        X = X if isinstance(X, np.ndarray) else X.as_np_ndarray()
        return X.as_in_ctx(_device())
    X = onp.asarray(X)
    if onp.issubdtype(X.dtype, onp.floating):
        X = X.astype(onp.float32, copy=False)
    elif dtype is None:
        X = X.astype(onp.int32, copy=False)   # the loss picks with int32 labels (as the book's loaders)
    else:
        X = X.astype(dtype, copy=False)
    return np.array(X, dtype=X.dtype, ctx=_device())


def to_numpy(t) -> onp.ndarray:
    return t.asnumpy()


def seed(n: int) -> None:
    """Seed the framework's own generator (dropout), on every device."""
    mx.random.seed(int(n))


def rng_state() -> None:
    """None: MXNet has no call that reads its generator's state, so a checkpoint inside an epoch
    cannot hold it (``common/train/loop.py`` says what that changes: the dropout masks of the rest
    of that epoch)."""
    return None


def set_rng_state(state) -> None:
    """Nothing to put back (:func:`rng_state` saves nothing)."""
