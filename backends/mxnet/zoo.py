"""Gluon's own model zoo (``mxnet.gluon.model_zoo.vision``), read into the table's canonical weights.

``MODELS``: the zoo models and the presets that reproduce them; ``layers(model)`` their conv /
dense layers in creation order and canonical layout (:class:`common.net.zoo.ZooLayer`);
``read(model, spec)`` the canonical weight dict; ``outputs(model, batch)`` the zoo model's own
evaluation-mode logits; ``randomize(model, seed)`` non-trivial batch-norm tensors and biases;
``count(model)`` the parameters as Gluon counts them (``collect_params``: running statistics
included).

Gluon facts: the model zoo is written for MXNet's legacy arrays, and the backend switches the
NumPy interface on (``npx.set_np()``, per thread): every function here runs the zoo in legacy
mode (:func:`legacy`).  A block registers its children in creation order; shapes are deferred until the
first forward (``make`` runs one); conv weights are OIHW, dense weights (out, in); a batch
norm with ``scale=False`` runs with ``fix_gamma`` (its gamma is read as 1).  The zoo's
preprocessing, as Gluon's documentation writes it: ``transforms.ToTensor`` then
``transforms.Normalize`` by ImageNet's mean and standard deviation.
"""
import contextlib
import functools

import mxnet as mx
import numpy as np
from mxnet.gluon import nn

from common.net import zoo as Z
from common.net.family import IMAGENET_MEAN, IMAGENET_STD
from common.net.spec import get_spec

NAME = "mxnet"


@contextlib.contextmanager
def _legacy_scope():
    with mx.util.np_array(False), mx.util.np_shape(False):
        yield


def legacy(func):
    """Run ``func`` with MXNet's legacy arrays and shapes, whatever ``npx.set_np()`` said."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with _legacy_scope():
            return func(*args, **kwargs)
    return wrapper


@legacy
def _made(constructor, size, seed=0):
    """A zoo model with its parameters created: initialised from ``seed``, shapes resolved by
    one forward."""
    mx.random.seed(int(seed))
    model = constructor()
    model.initialize()
    model(mx.nd.zeros((1, 3, size, size)))
    return model


@legacy
def _imagenet_preprocess(images):
    """``gluon.data.vision.transforms``: ``ToTensor()`` then ``Normalize(ImageNet mean, std)``, NCHW."""
    T = mx.gluon.data.vision.transforms
    x = T.ToTensor()(mx.nd.array(np.asarray(images, np.uint8), dtype=np.uint8))
    return T.Normalize(IMAGENET_MEAN, IMAGENET_STD)(x).asnumpy()


#: zoo name -> the model, its preset, its own preprocessing of 0-255 RGB (N, H, W, 3)
MODELS = {
    "inception_v3": Z.ZooModel("inception_v3", "gluon_inception_v3",
                               lambda seed=0: _made(mx.gluon.model_zoo.vision.inception_v3, 299, seed),
                               _imagenet_preprocess, 299),
}


def _walk(block):
    yield block
    for child in block._children.values():
        yield from _walk(child)


def _param_layers(model):
    kinds = ((nn.Conv2D, "conv"), (nn.Dense, "dense"), (nn.BatchNorm, "bn"))
    out = []
    for block in _walk(model):
        kind = next((k for cls, k in kinds if isinstance(block, cls)), None)
        if kind:
            out.append((block, kind))
    return out


def _np(p):
    return None if p is None else p.data().asnumpy()


def _tensors(block, kind):
    if kind in ("conv", "dense"):
        return dict(weight=_np(block.weight), bias=_np(block.bias))
    fixed = block._kwargs.get("fix_gamma", False)
    return dict(scale=None if fixed else _np(block.gamma), shift=_np(block.beta),
                mean=_np(block.running_mean), var=_np(block.running_var))


@legacy
def layers(model):
    """The model's conv / dense layers (each with its batch norm) in creation order, canonical."""
    return Z.attach_bn((kind, block.name, _tensors(block, kind)) for block, kind in _param_layers(model))


@legacy
def read(model, spec):
    """The canonical weight dict of table ``spec`` (a preset name or a Spec) from a Gluon model."""
    spec = get_spec(spec)
    return Z.canonical(spec, layers(model), zoo=f"Gluon {model.name}")


@legacy
def outputs(model, batch):
    """``{'logits': ...}``: the model's evaluation-mode output (outside ``autograd.record``:
    dropout off, batch norm from its running statistics) for a preprocessed NCHW batch."""
    return {"logits": model(mx.nd.array(np.asarray(batch, np.float32))).asnumpy()}


def _measure(model, batch, bns):
    """Running statistics := the batch's (a training step's forward and backward with momentum 0:
    MXNet's batch norm updates its running statistics in the backward pass)."""
    momenta = [bn._kwargs["momentum"] for bn in bns]
    for bn in bns:
        bn._kwargs["momentum"] = 0.0
    try:
        with mx.autograd.record(train_mode=True):
            out = model(mx.nd.array(np.asarray(batch, np.float32)))
        out.backward()
        mx.nd.waitall()
    finally:
        for bn, m in zip(bns, momenta):
            bn._kwargs["momentum"] = m


@legacy
def randomize(model, seed=0, batch=None):
    """Random biases and batch-norm tensors around ``batch``'s statistics
    (:func:`common.net.zoo.randomize`), so that a swapped tensor shows."""
    found = _param_layers(model)
    bns = [block for block, kind in found if kind == "bn"]

    def write_bn(block):
        def write(d):
            for p, key in ((block.gamma, "scale"), (block.beta, "shift"), (block.running_mean, "mean"),
                           (block.running_var, "var")):
                if d[key] is not None:
                    p.set_data(mx.nd.array(d[key]))
        return write

    Z.randomize(seed, [(block.bias.shape[0], lambda a, b=block: b.bias.set_data(mx.nd.array(a)))
                       for block, kind in found if kind != "bn" and block.bias is not None],
                [(lambda b=b: (_np(b.running_mean), _np(b.running_var)), not b._kwargs.get("fix_gamma", False),
                  write_bn(b)) for b in bns],
                (lambda: _measure(model, batch, bns)) if batch is not None else None)
    return model


#: the suffix of the zoo's own weight files
SUFFIX = ".params"


@legacy
def save(model, path):
    """The zoo model's weights in the zoo's own published format (``save_parameters``)."""
    model.save_parameters(path)


@legacy
def count(model):
    """Parameters as Gluon counts them (``collect_params``: running statistics included)."""
    return int(sum(p.data().size for p in model.collect_params().values()))


# --------------------------------------------------------------------------- the benchmark's peer
@legacy
def bench_peer(name, input_size, num_classes=1000, lr=0.1, seed=0):
    """Gluon's model-zoo ``name`` trained as Gluon's documentation shows: ``initialize``,
    ``hybridize(static_alloc=True, static_shape=True)``, ``gluon.Trainer('sgd')``,
    ``autograd.record`` + ``backward`` + ``trainer.step``, legacy NDArrays; inference in
    predict mode.  (train(X, y) -> loss, infer(X) -> logits, what it is)."""
    mx.random.seed(int(seed))
    model = getattr(mx.gluon.model_zoo.vision, name)(classes=num_classes)
    model.initialize(mx.init.Xavier())
    model.hybridize(static_alloc=True, static_shape=True)
    trainer = mx.gluon.Trainer(model.collect_params(), "sgd", {"learning_rate": lr})
    ce = mx.gluon.loss.SoftmaxCrossEntropyLoss()

    @legacy
    def train(X, y):
        x, t = mx.nd.array(X), mx.nd.array(y)
        with mx.autograd.record():
            loss = ce(model(x), t)
        loss.backward()
        trainer.step(len(X))
        return float(loss.mean().asscalar())

    @legacy
    def infer(X):
        return model(mx.nd.array(X)).asnumpy()
    return train, infer, f"mxnet.gluon.model_zoo.vision.{name}, hybridized (mxnet {mx.__version__})"
