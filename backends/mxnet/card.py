"""MXNet's card (:class:`backends.card.Card`): imports no framework."""
from backends.card import Bench, Card, Launch
from common.serve.export import Format

NAME = "mxnet"


def launch(cluster):
    """The parameter server's variables (``DMLC_*``) for this node's processes: the workers,
    the scheduler on node 0 (the master, at its first port) and the one server on the last
    node (beside the scheduler on one node); each process at its node's address."""
    dmlc = dict(DMLC_PS_ROOT_URI=cluster.hosts[0], DMLC_PS_ROOT_PORT=str(cluster.ports[0][0]),
                DMLC_NUM_WORKER=str(cluster.world), DMLC_NUM_SERVER="1", DMLC_NODE_HOST=cluster.addr,
                DMLC_INTERFACE=cluster.iface)
    roles = [role for role, node in (("scheduler", 0), ("server", cluster.nnodes - 1)) if node == cluster.node]
    return Launch([dict(dmlc, DMLC_ROLE="worker") for _ in range(cluster.nproc)],
                  [(role, dict(dmlc, DMLC_ROLE=role)) for role in roles])


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
    bench=Bench(book_quote=18.4, memory_vs=("pytorch", 1.5),
                # Gluon's inception_v3 ends in a fixed 8x8 average pool: 299 only
                zoo=(("inception_v3", "gluon_inception_v3", 299, 299),)),
)
