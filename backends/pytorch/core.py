"""PyTorch: device, version, tensors, seeding."""
import base64

import numpy as np
import torch

from common import runtime
from .card import CARD

ENV = runtime.set_default_env(runtime.card_env(CARD))

NAME = "pytorch"

#: On a GPU float32 means float32, as on the CPU and in the other backends' defaults here:
#: PyTorch runs cuDNN convolutions in TF32 (10-bit mantissa) by default on Ampere and newer,
#: which moves results by ~1e-3 and breaks the equivalence tests' 1e-4.  Low precision is
#: asked for explicitly, with ``--amp`` (docs/performance.md).  GOOGLENET_FRAMEWORK_DEFAULTS=0
#: leaves PyTorch's own policy.
if torch.cuda.is_available() and runtime.enabled():
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def framework_version() -> str:
    return torch.__version__


def _device():
    return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")


def settings() -> dict:
    """What this backend set up for its framework (recorded in every run record)."""
    out = dict(env=dict(ENV), threads=torch.get_num_threads())
    if torch.cuda.is_available():
        out.update(tf32=dict(cudnn=torch.backends.cudnn.allow_tf32,
                             matmul=torch.backends.cuda.matmul.allow_tf32),
                   cudnn_benchmark=torch.backends.cudnn.benchmark)
    return out


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


def rng_state() -> dict:
    """The state of the generators dropout draws from (the CPU's, and every GPU's), JSON-able:
    saved by a checkpoint in the middle of an epoch (``common/train/loop.py``)."""
    def text(t):
        return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")
    out = dict(cpu=text(torch.get_rng_state()))
    if torch.cuda.is_available():
        out["cuda"] = [text(t) for t in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(state: dict) -> None:
    """Put back a state of :func:`rng_state`."""
    def tensor(text):
        return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)
    torch.set_rng_state(tensor(state["cpu"]))
    if torch.cuda.is_available() and state.get("cuda"):
        torch.cuda.set_rng_state_all([tensor(t) for t in state["cuda"]])
