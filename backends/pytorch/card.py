"""PyTorch's card (:class:`backends.card.Card`): imports no framework."""
import os

from backends.card import Bench, Card, Launch
from common.serve.export import Format

NAME = "pytorch"
#: the c10d file store that the workers of one local run meet at (read by distribute.init)
STORE = "GOOGLENET_TORCH_STORE"


#: what torchrun (torch.distributed.elastic) sets in every worker: --max-restarts, and how many
#: times the worker group was restarted so far
MAX_RESTARTS, RESTARTS = "TORCHELASTIC_MAX_RESTARTS", "TORCHELASTIC_RESTART_COUNT"


def launch(cluster):
    """torchrun's variables for each worker of this node, gloo on this node's interface.  One
    node: the workers meet at a c10d file store in the run's ``workers/`` folder (no TCP
    store); several: at rank 0's TCP store on the master (``env://``), as under torchrun."""
    store = {STORE: os.path.join(cluster.workdir, "torch-store")} if cluster.nnodes == 1 else {}
    return Launch([dict(RANK=str(cluster.rank(r)), WORLD_SIZE=str(cluster.world), LOCAL_RANK=str(r),
                        LOCAL_WORLD_SIZE=str(cluster.nproc), GROUP_RANK=str(cluster.node),
                        MASTER_ADDR=cluster.hosts[0], MASTER_PORT=str(cluster.ports[0][0]),
                        GLOO_SOCKET_IFNAME=cluster.iface, **store) for r in range(cluster.nproc)])


def elastic():
    """Whether torchrun may restart this worker (``--max-restarts`` above 0).  Not only a worker
    it restarted (``TORCHELASTIC_RESTART_COUNT`` above 0): on several nodes, a node whose
    workers were healthy restarts them for the new rendezvous with its count unchanged, and
    every worker of the new group must continue from the same checkpoint."""
    try:
        return int(os.environ.get(MAX_RESTARTS) or 0) > 0 or int(os.environ.get(RESTARTS) or 0) > 0
    except ValueError:
        return False


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
    int8_formats=(Format("torchscript-int8", NAME, "file", "model.int8.pt", "torch.jit.load",
                         "int8 TorchScript: torch.ao FX post-training static quantization (the x86 engine's "
                         "default recipe), calibrated on the run's training images, traced and frozen",
                         int8_of="torchscript"),),
    onnx_opset=17,
    d2l_module="d2l.torch", d2l_needs_torchvision=True,
    launch=launch, launch_ports=lambda nproc: 1, matmul=matmul, elastic=elastic,
    bench=Bench(book_quote=32.5,
                # torchvision's Inception v3 trains its aux head, whose 5x5 pool and 5x5 conv need 299
                zoo=(("googlenet", "tv_googlenet", 64, 224), ("inception_v3", "tv_inception_v3", 299, 299))),
)
