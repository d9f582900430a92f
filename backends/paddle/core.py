"""PaddlePaddle: device, version, tensors, seeding."""
import warnings

import numpy as np

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
