"""MXNet's card (:class:`backends.card.Card`): imports no framework."""
from backends.card import LOOPBACK, Bench, Card, Launch
from common.serve.export import Format

NAME = "mxnet"


def launch(nproc, ports, workdir):
    """The parameter server's variables (``DMLC_*``): a scheduler and one server beside the
    workers, every one on 127.0.0.1 through ``lo``."""
    dmlc = dict(DMLC_PS_ROOT_URI=LOOPBACK, DMLC_PS_ROOT_PORT=str(ports[0]), DMLC_NUM_WORKER=str(nproc),
                DMLC_NUM_SERVER="1", DMLC_NODE_HOST=LOOPBACK, DMLC_INTERFACE="lo")
    return Launch([dict(dmlc, DMLC_ROLE="worker") for _ in range(nproc)],
                  [(role, dict(dmlc, DMLC_ROLE=role)) for role in ("scheduler", "server")])


def matmul():
    import mxnet as mx
    return "mxnet " + mx.__version__, lambda a, b: mx.nd.dot(a, b).wait_to_read(), mx.nd.array


CARD = Card(
    name=NAME, aliases=("mx",), module="mxnet",
    pip="pip install 'mxnet==1.9.1' 'numpy==1.23.5'   # or: pip install -e '.[mxnet]'",
    native_suffix=".params",
    formats=(Format("mxnet", NAME, "folder", "symbol", "mx.gluon.SymbolBlock.imports",
                    "MXNet HybridBlock.export: model-symbol.json + model-0000.params"),),
    onnx_opset=13,
    d2l_module="d2l.mxnet",
    launch=launch, launch_ports=lambda nproc: 1, matmul=matmul,
    bench=Bench(book_quote=18.4, memory_vs=("pytorch", 1.5)),
)
