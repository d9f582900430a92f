"""PaddlePaddle's card (:class:`backends.card.Card`): imports no framework."""
import os

from backends.card import Bench, Card, Launch
from common.serve.export import Format

NAME = "paddle"

D2L_MISSING = (
    "the book's d2l package has no Paddle module in the version this project pins (d2l 1.0.3 "
    "ships mxnet, torch, tensorflow and jax only). Only the Chinese edition's d2l 0.17.x "
    "(d2l-zh) has d2l/paddle.py, and it cannot be installed cleanly here: its metadata pins "
    "numpy 1.21.5 (MXNet 1.9.1 and TensorFlow 2.15 need the project's 1.23.5), it shares the "
    "top-level name 'd2l' with 1.0.3 (installing it replaces the other three modules), "
    "importing it silences every warning of the process, and its train_ch6 only runs on a "
    "GPU (evaluate_accuracy_gpu calls paddle.set_device('gpu:' + ...), 'gpu:u' on a CPU). "
    "Train with common.train.loop.fit(bk, net, train_iter, test_iter, Recipe(...), run_dir) or "
    "scripts/train.py --backend paddle instead: the same loop as train_ch6, made explicit "
    "(docs/book.md)")


def env(vendor):
    """Paddle's MKL takes a slow generic code path on AMD CPUs; ``MKL_DEBUG_CPU_TYPE=5``
    selects the AVX2 kernels (MKL reads it once, when it loads).  Intel CPUs are left
    alone: there MKL picks its best path itself."""
    return {"MKL_DEBUG_CPU_TYPE": "5"} if vendor == "AuthenticAMD" else {}


def launch(cluster):
    """``paddle.distributed.launch``'s variables for each worker of this node, gloo on this
    node's interface; the store (``PADDLE_MASTER``) on the master, at node 0's first port."""
    endpoints = ",".join(cluster.endpoints(1))
    mine = cluster.ports[cluster.node]
    return Launch([dict(PADDLE_TRAINER_ID=str(cluster.rank(r)), PADDLE_TRAINERS_NUM=str(cluster.world),
                        PADDLE_LOCAL_RANK=str(r), PADDLE_RANK_IN_NODE=str(r), PADDLE_TRAINER_ENDPOINTS=endpoints,
                        PADDLE_CURRENT_ENDPOINT=f"{cluster.addr}:{mine[1 + r]}",
                        PADDLE_MASTER=f"{cluster.hosts[0]}:{cluster.ports[0][0]}", PADDLE_DISTRI_BACKEND="gloo",
                        GLOO_SOCKET_IFNAME=cluster.iface) for r in range(cluster.nproc)])


def book_threads(paddle):
    """Our backend's thread count (Paddle runs one unless told), for the book's code."""
    paddle.base.core.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1))


def matmul():
    import paddle
    return "paddle " + paddle.__version__, lambda a, b: paddle.matmul(a, b).numpy(), None


CARD = Card(
    name=NAME, aliases=("paddlepaddle",), module="paddle",
    pip="pip install 'paddlepaddle==3.3.1'   # or: pip install -e '.[paddle]'",
    native_suffix=".pdparams",
    formats=(Format("paddle", NAME, "folder", "inference", "paddle.inference",
                    "Paddle inference model from paddle.jit.save with an InputSpec (model.json + model.pdiparams)"),),
    onnx_opset=17,
    d2l_module=None, d2l_missing=D2L_MISSING,
    env=env, launch=launch, launch_ports=lambda nproc: nproc + 1, matmul=matmul,
    bench=Bench(book_quote=8.0, settings_gain=1.8, book_env=True, book_after_import=book_threads,
                # Paddle's googlenet sizes its aux heads' dense layers for 224
                zoo=(("googlenet", "paddle_googlenet", 224, 224), ("inception_v3", "paddle_inception_v3", 75, 299))),
)
