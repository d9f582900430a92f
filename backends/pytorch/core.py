"""PyTorch: device, version, tensors, seeding."""
import numpy as np
import torch

from common import runtime

ENV = runtime.set_default_env(runtime.framework_env("pytorch"))

NAME = "pytorch"


def framework_version() -> str:
    return torch.__version__


def _device():
    return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")


def settings() -> dict:
    """What this backend set up for its framework (recorded in every run record)."""
    return dict(env=dict(ENV), threads=torch.get_num_threads())


def device() -> str:
    """Where the backend computes: ``'cuda:0 (<GPU name>)'`` when a GPU is present, else ``'cpu'``."""
    d = _device()
    return f"{d} ({torch.cuda.get_device_name(0)})" if d.type == "cuda" else "cpu"


def to_tensor(X, dtype=None):
    """A NumPy batch (images NCHW float32, or integer labels) as a tensor on the device."""
    if isinstance(X, torch.Tensor):
        return X.to(_device())
    X = np.asarray(X)
    t = torch.from_numpy(np.ascontiguousarray(X))
    if t.is_floating_point():
        t = t.float()
    elif dtype is None:
        t = t.long()
    return t.to(_device())


def to_numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy()


def seed(n: int) -> None:
    """Seed the framework's own generator (dropout)."""
    torch.manual_seed(int(n))
