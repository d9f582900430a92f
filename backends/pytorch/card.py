"""PyTorch's card (:class:`backends.card.Card`): imports no framework."""
import os

from backends.card import LOOPBACK, Bench, Card, Launch
from common.serve.export import Format

NAME = "pytorch"
#: the c10d file store that the workers of one local run meet at (read by distribute.init)
STORE = "GOOGLENET_TORCH_STORE"


def launch(nproc, ports, workdir):
    """torchrun's variables for each worker, with gloo on the loopback interface."""
    return Launch([dict(RANK=str(r), WORLD_SIZE=str(nproc), LOCAL_RANK=str(r), LOCAL_WORLD_SIZE=str(nproc),
                        MASTER_ADDR=LOOPBACK, MASTER_PORT=str(ports[0]), GLOO_SOCKET_IFNAME="lo",
                        **{STORE: os.path.join(workdir, "torch-store")}) for r in range(nproc)])


def matmul():
    import torch

    def mm(a, b):
        c = torch.matmul(a, b)
        if c.is_cuda:
            torch.cuda.synchronize()
        return c
    return "torch " + torch.__version__, mm, None


CARD = Card(
    name=NAME, aliases=("torch",), module="torch",
    pip="pip install 'torch==2.13.0'   # or: pip install -e '.[pytorch]'",
    native_suffix=".pt",
    formats=(Format("torch-export", NAME, "file", "model.pt2", "torch.export.load",
                    "torch.export ExportedProgram (dynamic batch)"),
             Format("torchscript", NAME, "file", "model.torchscript.pt", "torch.jit.load",
                    "TorchScript, traced and frozen in eval mode")),
    onnx_opset=17,
    d2l_module="d2l.torch", d2l_needs_torchvision=True,
    launch=launch, launch_ports=lambda nproc: 1, matmul=matmul,
    bench=Bench(book_quote=32.5),
)
