"""TensorFlow's card (:class:`backends.card.Card`): imports no framework."""
import json

from backends.card import Bench, Card, Launch
from common.serve.export import Format

NAME = "tensorflow"


def launch(cluster):
    """``TF_CONFIG`` for each worker of this node: every worker of the run, at its node's
    address (TensorFlow's gRPC server listens on every address of its host: it takes only a
    port, docs/distributed.md)."""
    workers = {"worker": cluster.endpoints()}
    return Launch([dict(TF_CONFIG=json.dumps({"cluster": workers, "task": {"type": "worker",
                                                                           "index": cluster.rank(r)}}))
                   for r in range(cluster.nproc)])


def matmul():
    import tensorflow as tf
    return "tensorflow " + tf.__version__, lambda a, b: tf.linalg.matmul(a, b).numpy(), None


CARD = Card(
    name=NAME, aliases=("tf",), module="tensorflow",
    pip="pip install 'tensorflow-cpu==2.15.1'   # or: pip install -e '.[tensorflow]'",
    native_suffix=".weights.h5",
    formats=(Format("savedmodel", NAME, "folder", "saved_model", "tf.saved_model.load",
                    "TensorFlow SavedModel with an NCHW 'serving_default' signature"),
             Format("tflite", NAME, "file", "model.tflite", "tf.lite.Interpreter",
                    "TensorFlow Lite flatbuffer (dynamic batch)")),
    onnx_opset=17,
    d2l_module="d2l.tensorflow",
    launch=launch, launch_ports=lambda nproc: nproc, matmul=matmul,
    bench=Bench(book_quote=36.2, zoo=(("inception_v3", "keras_inception_v3", 75, 299),)),
)
