"""Paddle's own model zoo (``paddle.vision.models``), read into the table's canonical weights.

``MODELS``: the zoo models and the presets that reproduce them; ``layers(model)`` their conv /
dense layers in creation order and canonical layout (:class:`common.net.zoo.ZooLayer`);
``read(model, spec)`` the canonical weight dict; ``outputs(model, batch)`` the zoo model's own
evaluation-mode logits (and GoogLeNet's two aux outputs); ``randomize(model, seed)``
non-trivial batch-norm tensors and biases; ``count(model)`` the parameters as Paddle counts
them (batch-norm statistics are parameters there).

Paddle facts: ``sublayers()`` lists layers in creation order; conv weights are OIHW, a
``Linear``'s weight is (in, out); batch norm keeps ``_mean`` and ``_variance``.  GoogLeNet
returns ``(out, out1, out2)`` in every mode, ``out1`` from the head on 4a (the table's
``aux1``), ``out2`` from the head on 4d (``aux2``).  The zoo's preprocessing, as Paddle's
documentation writes it: ``ToTensor`` ([0, 1] CHW) then ``Normalize`` by ImageNet's mean and
standard deviation.
"""
import numpy as np
import paddle

from common.net import zoo as Z
from common.net.family import IMAGENET_MEAN, IMAGENET_STD
from common.net.spec import get_spec

NAME = "paddle"


def _seeded(constructor):
    def make(seed=0):
        paddle.seed(int(seed))
        return constructor()
    return make


def _imagenet_preprocess(images):
    """``paddle.vision.transforms``: ``ToTensor()`` then ``Normalize(ImageNet mean, std)``, NCHW."""
    T = paddle.vision.transforms
    to_tensor, normalize = T.ToTensor(), T.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return np.stack([normalize(to_tensor(np.asarray(im, np.uint8))).numpy() for im in images])


#: what GoogLeNet returns, ``(out, out1, out2)``, in the table's names
GOOGLENET_OUTPUTS = ("logits", "aux1", "aux2")
#: zoo name -> the model, its preset, its own preprocessing of 0-255 RGB (N, H, W, 3), its outputs
MODELS = {
    "googlenet": Z.ZooModel("googlenet", "paddle_googlenet", _seeded(paddle.vision.models.googlenet),
                            _imagenet_preprocess, 224, GOOGLENET_OUTPUTS),
    "inception_v3": Z.ZooModel("inception_v3", "paddle_inception_v3",
                               _seeded(paddle.vision.models.inception_v3), _imagenet_preprocess, 299),
}


def _param_layers(model):
    kinds = {paddle.nn.Conv2D: "conv", paddle.nn.Linear: "dense", paddle.nn.BatchNorm2D: "bn"}
    return [(name, layer, kinds[type(layer)]) for name, layer in model.named_sublayers()
            if type(layer) in kinds]


def _np(p):
    return None if p is None else p.numpy()


def _tensors(layer, kind):
    if kind == "conv":
        return dict(weight=layer.weight.numpy(), bias=_np(layer.bias))
    if kind == "dense":
        return dict(weight=layer.weight.numpy().T, bias=_np(layer.bias))
    c = layer._mean.shape[0]
    return dict(scale=_np(layer.weight), shift=np.zeros(c, np.float32) if layer.bias is None else layer.bias.numpy(),
                mean=layer._mean.numpy(), var=layer._variance.numpy())


def layers(model):
    """The model's conv / dense layers (each with its batch norm) in creation order, canonical."""
    return Z.attach_bn((kind, name, _tensors(layer, kind)) for name, layer, kind in _param_layers(model))


def read(model, spec):
    """The canonical weight dict of table ``spec`` (a preset name or a Spec) from a Paddle model."""
    spec = get_spec(spec)
    return Z.canonical(spec, layers(model), zoo=f"Paddle {type(model).__name__}")


def outputs(model, batch):
    """The model's evaluation-mode outputs for a preprocessed NCHW batch: ``{'logits': ...}``,
    and for GoogLeNet ``'aux1'`` and ``'aux2'`` (the table's names of its heads)."""
    model.eval()
    with paddle.no_grad():
        out = model(paddle.to_tensor(np.asarray(batch, np.float32)))
    if not isinstance(out, (tuple, list)):
        return {"logits": out.numpy()}
    return dict(zip(GOOGLENET_OUTPUTS, (o.numpy() for o in out)))


def _measure(model, batch, bns):
    """Running statistics := the batch's (a training-mode forward with momentum 0)."""
    momenta = [bn._momentum for bn in bns]
    for bn in bns:
        bn._momentum = 0.0
    model.train()
    try:
        with paddle.no_grad():
            model(paddle.to_tensor(np.asarray(batch, np.float32)))
    finally:
        model.eval()
        for bn, m in zip(bns, momenta):
            bn._momentum = m


def randomize(model, seed=0, batch=None):
    """Random biases and batch-norm tensors around ``batch``'s statistics
    (:func:`common.net.zoo.randomize`), so that a swapped tensor shows."""
    found = _param_layers(model)
    bns = [layer for _, layer, kind in found if kind == "bn"]

    def write_bn(layer):
        def write(d):
            for p, key in ((layer.weight, "scale"), (layer.bias, "shift"), (layer._mean, "mean"),
                           (layer._variance, "var")):
                if p is not None:
                    p.set_value(d[key])
        return write

    Z.randomize(seed, [(layer.bias.shape[0], layer.bias.set_value) for _, layer, kind in found
                       if kind != "bn" and layer.bias is not None],
                [(lambda b=b: (b._mean.numpy(), b._variance.numpy()), b.weight is not None, write_bn(b))
                 for b in bns],
                (lambda: _measure(model, batch, bns)) if batch is not None else None)
    return model


#: the suffix of the zoo's own weight files
SUFFIX = ".pdparams"


def save(model, path):
    """The zoo model's weights in the zoo's own published format (``paddle.save(state_dict)``)."""
    paddle.save(model.state_dict(), path)


def count(model):
    """Parameters as Paddle counts them (``parameters()``: batch-norm statistics included)."""
    return int(sum(int(np.prod(p.shape)) for p in model.parameters()))


# --------------------------------------------------------------------------- the benchmark's peer
def bench_peer(name, input_size, num_classes=1000, lr=0.1, seed=0):
    """``paddle.vision.models.<name>`` trained with a plain dynamic-mode loop as Paddle's
    documentation shows (``paddle.optimizer.SGD``, ``F.cross_entropy``, ``backward``,
    ``step``, ``clear_grad``; GoogLeNet's two aux outputs weighted 0.3 as the Trainer's),
    Paddle's settings as it ships (this process imports no backend); inference in ``eval()``
    under ``no_grad``.  (train(X, y) -> loss, infer(X) -> logits, what it is)."""
    paddle.seed(int(seed))
    model = getattr(paddle.vision.models, name)(num_classes=num_classes)
    opt = paddle.optimizer.SGD(learning_rate=lr, parameters=model.parameters())
    ce = paddle.nn.functional.cross_entropy

    def train(X, y):
        model.train()
        x, t = paddle.to_tensor(X), paddle.to_tensor(y)
        out = model(x)
        heads = list(out) if isinstance(out, (list, tuple)) else [out]
        loss = ce(heads[0], t) + 0.3 * sum(ce(h, t) for h in heads[1:]) if len(heads) > 1 else ce(heads[0], t)
        loss.backward()
        opt.step()
        opt.clear_grad()
        return float(loss)

    def infer(X):
        model.eval()
        with paddle.no_grad():
            out = model(paddle.to_tensor(X))
            return (out[0] if isinstance(out, (list, tuple)) else out).numpy()
    return train, infer, f"paddle.vision.models.{name} (paddle {paddle.__version__})"
