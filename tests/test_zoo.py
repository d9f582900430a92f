"""Proof against each framework's own model zoo (#26).

Each zoo model a framework ships (``backends/<framework>/zoo.py``: Keras's InceptionV3 and
InceptionResNetV2, Paddle's googlenet and inception_v3, Gluon's inception_v3) is built with random weights, its
batch norms given non-trivial statistics, scale and shift (drawn around the statistics of the
test batch, so that the images reach the logits), and run on two random 0-255 images with the
zoo's own preprocessing.  Its weights, read into the table's canonical names
(:mod:`common.net.zoo`), load into the net the preset's table builds on every backend, which
sees the same images preprocessed by the preset's ``spec.config`` mean and std.  Both are
checked against the float64 reference of the table (``tests.numerics.Reference``) within the
bound of a float32 computation: the tolerance is derived, not picked.  And each zoo model's
own parameter count, as its framework counts it, is the oracle's (plus batch-norm statistics
where the preset's config says the framework counts them) and the anchor's published count.

The weights are read from the file the zoo's own save call writes, in the format the zoo
publishes its ImageNet weights in (Keras ``save_weights`` HDF5, ``paddle.save`` of the state dict,
Gluon's ``save_parameters``, ``torch.save`` of the state dict), by the project's framework-free
readers (:mod:`common.net.zoofiles`, :mod:`common.net.pretrained`), which also tell the source
from the file; they are checked equal, bit for bit, to the weights read from the model in
memory.  torchvision does not import beside the CPU PyTorch pinned here: its model classes,
vendored from torchvision 0.29.1 (``tests/vendor/torchvision``), stand in for its package, with
its ``ToTensor`` + ``Normalize`` written out.

Each zoo model is built, run and read once per session (``_case``), then reused by every
backend: about 100 seconds for the whole file on a 2-core CPU.
"""
import dataclasses
import importlib
import os
import importlib.util

import numpy as np
import pytest

from backends.config import BACKENDS, FRAMEWORK_MODULE
from common.net import oracle, pretrained as PT, weights as W, zoo as Z
from common.net.model import places
from common.net.spec import get_spec, iter_param_layers
from tests.conftest import backend_or_skip
from tests.numerics import U, Reference, check

#: every zoo model of every framework: (framework, zoo name)
ALL_ZOOS = [("paddle", "googlenet"), ("tensorflow", "inception_v3"), ("paddle", "inception_v3"),
            ("mxnet", "inception_v3"), ("tensorflow", "inception_resnet_v2"),
            ("pytorch", "googlenet"), ("pytorch", "inception_v3")]   # torchvision's: where it imports
LONG = os.environ.get("GOOGLENET_LONG", "") not in ("", "0")
#: Inception-ResNet-v2 (13 G mult-adds, its float64 reference the slowest of all) and
#: torchvision's Inception v3 (a fourth v3, ~40 s) under GOOGLENET_LONG=1; CI proves the other
#: v3s and both GoogLeNets
ZOOS = ALL_ZOOS if LONG else [z for z in ALL_ZOOS if z not in (("tensorflow", "inception_resnet_v2"),
                                                                ("pytorch", "inception_v3"))]
SEED = 26
_CACHE = {}


def _zoo_module(framework):
    if importlib.util.find_spec(FRAMEWORK_MODULE[framework]) is None:
        pytest.skip(f"{framework} is not installed")
    backend_or_skip(framework)          # the framework loads as the backend loads it (torch first)
    return importlib.import_module(f"backends.{framework}.zoo")


#: the zoo file of each (framework, name): the ImageNet source whose format it is in
SOURCES = {("paddle", "googlenet"): "paddle.googlenet", ("tensorflow", "inception_v3"): "keras.inception_v3",
           ("paddle", "inception_v3"): "paddle.inception_v3", ("mxnet", "inception_v3"): "gluon.inception_v3",
           ("tensorflow", "inception_resnet_v2"): "keras.inception_resnet_v2",
           ("pytorch", "googlenet"): "torchvision.googlenet", ("pytorch", "inception_v3"): "torchvision.inception_v3"}


def _vendored(zm):
    """torchvision's zoo entries built from its vendored model classes (tests/vendor), with its
    ``ToTensor`` (``x / 255`` in float32) and ``Normalize`` (``(x - mean) / std`` in float32)."""
    import torch
    from tests.vendor.torchvision import googlenet as G, inception as I

    def make(cls):
        def build(seed=0):
            torch.manual_seed(int(seed))
            return cls(aux_logits=True, init_weights=True).eval()
        return build

    def preprocess(images):
        x = torch.from_numpy(np.asarray(images, np.uint8)).permute(0, 3, 1, 2).float().div(255)
        mean = torch.tensor(PT.IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(PT.IMAGENET_STD).view(1, 3, 1, 1)
        return x.sub(mean).div(std).numpy()

    classes = {"googlenet": G.GoogLeNet, "inception_v3": I.Inception3}
    return {k: dataclasses.replace(e, make=make(classes[k]), preprocess=preprocess) for k, e in zm.MODELS.items()}


def _zoo_models(framework):
    """(the zoo module, its models); torchvision's from its vendored classes where its package does
    not import (it cannot beside the CPU PyTorch pinned here: docs/family.md)."""
    zm = _zoo_module(framework)
    needs = getattr(zm, "REQUIRES", None)
    if needs:
        try:
            importlib.import_module(needs)
        except Exception:                # ImportError, or OSError / RuntimeError of its compiled ops
            return zm, _vendored(zm)
    return zm, zm.MODELS


def _zoo_ids(case):
    return f"{case[0]}-{case[1]}"


class Case:
    """One zoo model, run once per session: its canonical weights, the two images preprocessed
    both ways, its own outputs, and the float64 reference (with bounds) for both inputs."""

    def __init__(self, framework, name, tmp):
        zm, models = _zoo_models(framework)
        entry = models[name]
        self.spec = spec = get_spec(entry.preset)
        s = entry.input_size
        self.images = np.random.default_rng(SEED).integers(0, 256, (2, s, s, 3), dtype=np.uint8)
        batch = entry.preprocess(self.images)
        model = zm.randomize(entry.make(SEED), SEED, batch)
        self.count = zm.count(model)
        self.zoo_out = zm.outputs(model, batch)
        self.memory_weights = zm.read(model, spec)
        self.file = os.path.join(tmp, f"{framework}-{name}{zm.SUFFIX}")
        zm.save(model, self.file)                        # the zoo's own save call, its published format
        del model
        self.source, self.weights = PT.read(self.file)  # our reader: the source told by the content
        self.zoo_X = np.asarray(batch, np.float32)
        if self.zoo_X.shape[-1] == 3 and self.zoo_X.shape[1] != 3:           # NHWC zoo: as NCHW
            self.zoo_X = np.ascontiguousarray(self.zoo_X.transpose(0, 3, 1, 2))
        cfg = spec.config
        self.X = Z.preprocess(self.images, cfg["mean"], cfg["std"])
        self.ours = self._reference(self.X)
        self.zoos = self.ours if np.array_equal(self.X, self.zoo_X) else self._reference(self.zoo_X)
        self.outputs = entry.outputs

    def _reference(self, X):
        ref = Reference(self.spec, self.weights)
        logits, bound = ref.forward(X)
        out = {"logits": (logits, bound)}
        if self.spec.aux:
            values, bounds = ref.aux_outputs()
            out.update({k: (values[k], bounds[k]) for k in values})
        return out


def _case(framework, name):
    if (framework, name) not in _CACHE:
        import tempfile
        _CACHE[(framework, name)] = Case(framework, name, _CACHE.setdefault("tmp", tempfile.mkdtemp()))
    return _CACHE[(framework, name)]


@pytest.fixture(scope="module", autouse=True)
def _files():
    yield
    import shutil
    if "tmp" in _CACHE:
        shutil.rmtree(_CACHE.pop("tmp"), ignore_errors=True)


# --------------------------------------------------------------------------- the zoo models
@pytest.mark.parametrize("framework", sorted({f for f, _ in ALL_ZOOS}))
def test_every_zoo_model_is_proven(framework):
    zm = _zoo_module(framework)
    assert sorted(zm.MODELS) == sorted(n for f, n in ALL_ZOOS if f == framework)
    for entry in zm.MODELS.values():
        get_spec(entry.preset)                 # a preset of the family


@pytest.mark.parametrize("case", ZOOS, ids=_zoo_ids)
def test_the_zoos_own_file_reads_as_its_model(case):
    """The file the zoo's own save call wrote, read without its framework: the source is told
    from the content, and every tensor equals, bit for bit, the one read from the model in
    memory (so the logits on every backend below are the file's)."""
    c = _case(*case)
    assert c.source.name == SOURCES[case]
    assert list(c.weights) == list(c.memory_weights)
    for k, v in c.memory_weights.items():
        assert np.array_equal(c.weights[k], v), k


@pytest.mark.parametrize("case", ZOOS, ids=_zoo_ids)
def test_zoo_counts_its_parameters_as_the_oracle(case):
    """The framework's own count = the oracle's (+ BN statistics where the preset's config says
    the framework counts them) = the anchor's published count."""
    c = _case(*case)
    cfg = c.spec.config
    assert c.count == Z.zoo_count(c.spec)
    assert c.count == (cfg["params_aux"] if c.spec.aux else cfg["params"])
    stats = 2 * sum(s[0] for k, s in oracle.param_shapes(c.spec).items() if k.endswith("running_mean"))
    assert c.count == oracle.analyze(c.spec).params_with_aux + (stats if cfg.get("counts_bn_statistics") else 0)


@pytest.mark.parametrize("case", ZOOS, ids=_zoo_ids)
def test_zoo_preprocessing_is_the_presets(case):
    """The zoo's own preprocessing of the images is the preset's mean / std, to float32 rounding:
    a few roundings of at most U each, of ``x / 255``, the mean and their difference over the std."""
    c = _case(*case)
    cfg = c.spec.config
    mean = np.asarray(cfg["mean"]).reshape(1, -1, 1, 1)
    std = np.asarray(cfg["std"]).reshape(1, -1, 1, 1)
    x = c.images.transpose(0, 3, 1, 2) / 255.0
    bound = 8 * U * (x + np.abs(mean)) / std
    check(c.zoo_X, c.X, bound, f"{case}: the zoo's preprocessing")


@pytest.mark.parametrize("case", ZOOS, ids=_zoo_ids)
def test_zoo_outputs_are_the_tables(case):
    """The zoo model's own evaluation-mode outputs = the float64 reference of the table with the
    weights read from it, within the float32 bound; and the images reach the logits."""
    c = _case(*case)
    assert sorted(c.zoo_out) == sorted(c.outputs)
    for key in c.outputs:
        want, bound = c.zoos[key]
        ratio = check(c.zoo_out[key], want, bound, f"{case} zoo {key}")
        print(f"{case} zoo {key}: max |diff| / bound = {ratio:.3g}")
    # the two images move the logits by far more than the bound (a check that would not see the
    # input is no check: dead ReLUs, or batch-norm shifts drowning the signal); random-noise images
    # look alike after the global pool, so their logits part by ~100 bounds (Paddle's v3), not more
    logits, bound = c.ours["logits"]
    assert np.abs(logits[0] - logits[1]).max() > 10 * bound.max(), "the images barely reach the logits"


@pytest.mark.parametrize("case", ZOOS, ids=_zoo_ids)
@pytest.mark.parametrize("backend", BACKENDS)
def test_zoo_weights_on_every_backend(case, backend):
    """The zoo's weights in the table's net on each backend, fed the preset's preprocessing:
    logits (and aux heads' outputs, evaluation mode) = the float64 reference within its bound."""
    bk = backend_or_skip(backend)
    c = _case(*case)
    net = bk.build(c.spec, weights=c.weights)
    got = {"logits": bk.forward(net, c.X), **bk.aux_outputs(net, c.X)}
    assert sorted(got) == sorted(c.ours)
    for key, out in got.items():
        want, bound = c.ours[key]
        ratio = check(out, want, bound, f"{case} on {backend}: {key}")
        print(f"{case} on {backend} {key}: max |diff| / bound = {ratio:.3g}")


# --------------------------------------------------------------------------- the reader itself
def _layers(spec, w, names=None):
    """A zoo's layers from a weight dict, in the table's construction order."""
    records = dict(iter_param_layers(spec))
    out = []
    for i, q in enumerate(places(spec)):
        r = records[q]
        bn = {}
        if getattr(r, "norm", None) == "bn":
            bn = dict(scale=w.get(f"{q}.bn.weight"), shift=w[f"{q}.bn.bias"], mean=w[f"{q}.bn.running_mean"],
                      var=w[f"{q}.bn.running_var"])
        out.append(Z.ZooLayer((names or {}).get(q, f"layer{i}"), r.kind, w[f"{q}.weight"],
                              w.get(f"{q}.bias"), **bn))
    return out


@pytest.mark.parametrize("preset", ["d2l", "bn", "keras_inception_v3"])
def test_canonical_round_trip(preset):
    spec = get_spec(preset)
    w = W.xavier_init(spec, 1)
    got = Z.canonical(spec, _layers(spec, w))
    assert list(got) == list(w) and all(np.array_equal(got[k], w[k]) for k in w)


def test_a_mismatch_names_the_zoos_layer_and_ours():
    spec = get_spec("bn")
    layers = _layers(spec, W.xavier_init(spec, 1))
    layers[3], layers[4] = layers[4], layers[3]
    with pytest.raises(Z.ZooMismatch) as e:
        Z.canonical(spec, layers)
    msg = str(e.value)
    assert msg == ("zoo model layer 3 'layer4' (conv (96, 192, 1, 1), batch norm) does not match the table's "
                   "'b3.inception3a.p1_1' (conv (64, 192, 1, 1), batch norm): weight shapes differ")


def test_missing_and_extra_layers():
    spec = get_spec("d2l")
    layers = _layers(spec, W.xavier_init(spec, 1))
    with pytest.raises(Z.ZooMismatch, match=r"has no layer for the table's 'head.dense1'"):
        Z.canonical(spec, layers[:-1])
    with pytest.raises(Z.ZooMismatch, match=r"layer \d+ 'extra' .* has no counterpart"):
        Z.canonical(spec, layers + [Z.ZooLayer("extra", "dense", np.zeros((10, 10), np.float32))])


def test_bias_and_batch_norm_must_agree():
    spec = get_spec("bn")
    w = W.xavier_init(spec, 1)
    layers = _layers(spec, w)
    first = layers[0]
    no_scale = Z.ZooLayer(first.name, "conv", first.weight, shift=first.shift, mean=first.mean, var=first.var)
    with pytest.raises(Z.ZooMismatch, match="the zoo's batch norm has no scale, ours learns one"):
        Z.canonical(spec, [no_scale] + layers[1:])
    biased = Z.ZooLayer(first.name, "conv", first.weight, np.zeros(64, np.float32), first.scale, first.shift,
                        first.mean, first.var)
    with pytest.raises(Z.ZooMismatch, match="only one of them has a bias"):
        Z.canonical(spec, [biased] + layers[1:])
    keras = get_spec("keras_inception_v3")
    kl = _layers(keras, W.xavier_init(keras, 1))
    scaled = Z.ZooLayer(kl[0].name, "conv", kl[0].weight, scale=np.full(32, 2, np.float32), shift=kl[0].shift,
                        mean=kl[0].mean, var=kl[0].var)
    with pytest.raises(Z.ZooMismatch, match="learns a scale, ours fixes it at 1"):
        Z.canonical(keras, [scaled] + kl[1:])


def test_attach_bn_pairs_each_batch_norm_with_its_conv():
    bn = dict(scale=np.ones(2), shift=np.zeros(2), mean=np.zeros(2), var=np.ones(2))
    got = Z.attach_bn([("conv", "c", dict(weight=np.zeros((2, 1, 1, 1)))), ("bn", "b", bn),
                       ("dense", "d", dict(weight=np.zeros((3, 2)), bias=np.zeros(3)))])
    assert [(z.name, z.kind, z.has_bn) for z in got] == [("c", "conv", True), ("d", "dense", False)]
    with pytest.raises(Z.ZooMismatch, match="'b' follows no conv"):
        Z.attach_bn([("dense", "d", dict(weight=np.zeros((3, 2)))), ("bn", "b", bn)])


@pytest.mark.parametrize("preset", ["paddle_googlenet", "keras_inception_v3", "paddle_inception_v3",
                                    "gluon_inception_v3"])
def test_zoo_count_is_the_published_one(preset):
    spec = get_spec(preset)
    cfg = spec.config
    assert Z.zoo_count(spec) == (cfg["params_aux"] if spec.aux else cfg["params"])
