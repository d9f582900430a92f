"""Chapter 8's exercise 3: the book's AlexNet, VGG-11 and NiN from the table against the book's own
code (``backends/<fw>/book.py``: d2l 1.0.3's PyTorch, TensorFlow and MXNet tabs, d2l-zh's Paddle
tab), each framework counting the book's net its own way, and every backend building the table.

Cheap on purpose (the nets are large at 224): the book's lazy PyTorch layers get their shapes on
the ``meta`` device (no number computed), Keras infers its shapes, Paddle's layers are created
under ``paddle.LazyGuard`` (shapes, no values); only Gluon runs its one forward pass at 224 (its
deferred shapes need it).  The table-built nets are counted at 224 built with ``seed=None`` and
run once each at their smallest input.
"""
import os

import numpy as np
import pytest

from backends.config import FRAMEWORK_MODULE
from common.net import classic, oracle, spec as S
from common.net.classic import VGG11

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESETS = ("d2l_alexnet", "d2l_vgg11", "d2l_nin")

#: The book's printed layer summaries (d2l 1.0.3, the PyTorch tab's ``layer_summary((1, 1, 224, 224))``,
#: the batch dimension and the ReLU rows left out): the book's layer, its output shape, and the
#: table's block or stage whose output that is.
BOOK_SHAPES = {
    "d2l_alexnet": [
        ("Conv2d", (96, 54, 54), "b1.conv1"), ("MaxPool2d", (96, 26, 26), "b1.pool1"),
        ("Conv2d", (256, 26, 26), "b2.conv2"), ("MaxPool2d", (256, 12, 12), "b2.pool2"),
        ("Conv2d", (384, 12, 12), "b3.conv3"), ("Conv2d", (384, 12, 12), "b3.conv4"),
        ("Conv2d", (256, 12, 12), "b3.conv5"), ("MaxPool2d", (256, 5, 5), "b3.pool5"),
        ("Flatten", (6400,), "head.flatten"), ("Linear", (4096,), "head.fc6"),
        ("Dropout", (4096,), "head.dropout6"), ("Linear", (4096,), "head.fc7"),
        ("Dropout", (4096,), "head.dropout7"), ("Linear", (10,), "head.fc8")],
    "d2l_vgg11": [
        ("Sequential", (64, 112, 112), "block1"), ("Sequential", (128, 56, 56), "block2"),
        ("Sequential", (256, 28, 28), "block3"), ("Sequential", (512, 14, 14), "block4"),
        ("Sequential", (512, 7, 7), "block5"), ("Flatten", (25088,), "head.flatten"),
        ("Linear", (4096,), "head.fc6"), ("Dropout", (4096,), "head.dropout6"),
        ("Linear", (4096,), "head.fc7"), ("Dropout", (4096,), "head.dropout7"),
        ("Linear", (10,), "head.fc8")],
    "d2l_nin": [
        ("Sequential", (96, 54, 54), "nin1.cccp2"), ("MaxPool2d", (96, 26, 26), "nin1.pool"),
        ("Sequential", (256, 26, 26), "nin2.cccp2"), ("MaxPool2d", (256, 12, 12), "nin2.pool"),
        ("Sequential", (384, 12, 12), "nin3.cccp2"), ("MaxPool2d", (384, 5, 5), "nin3.pool"),
        ("Dropout", (384, 5, 5), "nin4.dropout"), ("Sequential", (10, 5, 5), "nin4.cccp2"),
        ("AdaptiveAvgPool2d", (10, 1, 1), "head.avgpool"), ("Flatten", (10,), "head.flatten")],
}

#: rows of that summary a framework's tab does not print: Gluon's Dense flattens its input itself;
#: Keras's VGG keeps its classifier in one Sequential (one row, the logits)
NOT_PRINTED = {
    "mxnet": {"d2l_alexnet": {"head.flatten"}, "d2l_vgg11": {"head.flatten"}},
    "tensorflow": {"d2l_vgg11": {"head.flatten", "head.fc6", "head.dropout6", "head.fc7", "head.dropout7"}},
}
ACTIVATIONS = ("ReLU", "Activation")


def _book_net(book, preset, **kw):
    return {"d2l_alexnet": lambda: book.alexnet(**kw), "d2l_vgg11": lambda: book.vgg(kw.pop("arch", VGG11), **kw),
            "d2l_nin": lambda: book.nin(**kw)}[preset]()


def _oracle_shape(a, name):
    """The output shape of a stage (``block3``) or a block (``b1.conv1``) of the table."""
    if name in a.stages:
        return a.stages[name].out_shape
    return next(b.out_shape for b in a.blocks if b.name == name)


def _squeeze(shape):
    """Keras's global pool drops the 1x1 map that the others keep."""
    return tuple(d for d in shape if d != 1) or (1,)


# --------------------------------------------------------------------------- each framework's book code
def _pytorch(preset, **kw):
    """The book's PyTorch net, its lazy layers shaped by ``layer_summary`` on the meta device:
    (parameters as PyTorch counts them, the summary's rows)."""
    torch = pytest.importorskip("torch")
    from backends.pytorch import book
    with torch.device("meta"):
        net = _book_net(book, preset, **kw)
        rows = book.layer_summary(net)
    return sum(p.numel() for p in net.parameters() if p.requires_grad), rows


def _tensorflow(preset):
    pytest.importorskip("torch")                # torch before TensorFlow in one process (conftest)
    pytest.importorskip("tensorflow")
    from backends.tensorflow import book
    net = _book_net(book, preset)
    rows = book.layer_summary(net)                # builds the net for a 1x224x224x1 input
    nchw = [(name, shape[:1] + shape[-1:] + shape[1:-1] if len(shape) == 4 else shape) for name, shape in rows]
    return net.count_params(), nchw


def _mxnet(preset):
    pytest.importorskip("mxnet")
    from backends.mxnet import book
    net = _book_net(book, preset)
    rows = book.layer_summary(net)                # one forward pass: Gluon's deferred shapes
    return sum(p.data().size for p in net.collect_params().values()), rows


def _paddle(preset):
    """d2l-zh's Paddle code writes every input width: created under LazyGuard, counted as
    ``paddle.summary`` counts (no summary: the parameters hold no values to run)."""
    pytest.importorskip("paddle")
    import paddle
    from backends.paddle import book
    with paddle.LazyGuard():
        net = _book_net(book, preset)
    return sum(int(np.prod(p.shape)) for p in net.parameters()), None


BOOK_CODE = {"pytorch": _pytorch, "tensorflow": _tensorflow, "mxnet": _mxnet, "paddle": _paddle}


def test_the_book_prints_the_oracles_shapes():
    for preset, rows in BOOK_SHAPES.items():
        a = oracle.analyze(S.get_spec(preset), 224)
        assert [_oracle_shape(a, name) for _, _, name in rows] == [shape for _, shape, _ in rows], preset
        assert a.output_shape == (10,) and a.input_shape == (1, 224, 224)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("framework", sorted(BOOK_CODE))
def test_the_book_code_counts_what_the_table_counts(framework, preset):
    """The book's net as the framework builds it from the book's code: its parameters, counted
    the framework's way, are the oracle's count of the preset (and the preset's anchor count);
    the layer summary it prints is the oracle's shapes."""
    pytest.importorskip(FRAMEWORK_MODULE[framework])
    count, rows = BOOK_CODE[framework](preset)
    spec = S.get_spec(preset)
    a = oracle.analyze(spec)
    assert count == a.params == spec.config["params"]
    if rows is None:
        return
    rows = [(name, shape[1:]) for name, shape in rows if name not in ACTIVATIONS]
    skip = NOT_PRINTED.get(framework, {}).get(preset, set())
    expected = [(name, _oracle_shape(a, block)) for name, _, block in BOOK_SHAPES[preset] if block not in skip]
    if framework == "pytorch":
        assert rows == expected
    else:
        assert [_squeeze(s) for _, s in rows] == [_squeeze(s) for _, s in expected]


@pytest.mark.parametrize("preset, options", [
    ("d2l_vgg11", dict(arch=((1, 16), (1, 32), (2, 64), (2, 128), (2, 128)))),   # the VGG the book trains
    ("d2l_nin", dict(num_classes=100)),
    ("d2l_alexnet", dict(num_classes=1000)),
])
def test_options_against_the_books_pytorch_code(preset, options):
    count, rows = _pytorch(preset, **options)
    a = oracle.analyze(S.get_spec(preset, **options))
    assert count == a.params
    assert rows[-1][1][1:] == a.output_shape


# --------------------------------------------------------------------------- the table on every backend
@pytest.mark.parametrize("preset", PRESETS)
def test_every_backend_builds_the_books_count(bk, preset):
    spec = S.get_spec(preset)
    assert bk.count_params(bk.build(preset, seed=None)) == oracle.analyze(spec).params == spec.config["params"]


def test_one_forward_each_at_the_smallest_input(bk):
    """224 makes AlexNet's and VGG's dense layers large: one forward each at the smallest input the
    table takes (AlexNet 65, VGG 32, NiN 67), where the dense layers shrink with the map."""
    for preset in PRESETS:
        spec = S.get_spec(preset)
        n = oracle.min_input_size(spec)
        net = bk.build(preset, input_size=n, seed=None)
        X = np.random.default_rng(0).random((1, 1, n, n), dtype=np.float32)
        out = bk.forward(net, X)
        assert out.shape == (1, 10) and np.isfinite(out).all(), preset
        assert bk.count_params(net) == oracle.analyze(spec, n).params


# --------------------------------------------------------------------------- the builders
def test_the_presets():
    for preset in PRESETS:
        spec = S.get_spec(preset)
        assert spec.name == preset and spec.in_channels == 1 and spec.input_size == 224
        assert spec.config["anchor"].startswith("d2l 1.0.3") and spec.config["family"] in ("alexnet", "vgg", "nin")
        assert oracle.analyze(spec).output_shape == (10,)
    assert S.get_spec("d2l_nin").num_classes == 10          # its classifier is a conv: the table says so in its cfg
    assert S.get_spec("d2l_nin", num_classes=7).num_classes == 7
    assert S.get_spec("d2l_alexnet", num_classes=7).name == "d2l_alexnet*"


def test_options():
    assert oracle.analyze(S.get_spec("d2l_alexnet", in_channels=3)).params == 46_764_746 + 2 * 96 * 121
    no_drop = S.get_spec("d2l_vgg11", dropout=0.0)
    assert not any(layer.kind == "dropout" for _, layer in S.iter_param_layers(no_drop))
    assert oracle.analyze(no_drop).params == 128_806_154
    assert oracle.analyze(S.get_spec("d2l_nin", input_size=96)).params == 1_992_166   # global pooling
    assert oracle.analyze(S.get_spec("d2l_alexnet", input_size=96)).stages["b3"].out_shape == (256, 1, 1)


@pytest.mark.parametrize("preset, options, match", [
    ("d2l_alexnet", dict(include_top=False), "headless"),
    ("d2l_nin", dict(pooling="avg"), "headless"),
    ("d2l_vgg11", dict(aux_logits=True), "unknown option"),
    ("d2l_vgg11", dict(arch=((0, 64),)), "num_convs >= 1"),
    ("d2l_vgg11", dict(arch=64), "arch must be"),
    ("d2l_nin", dict(dropout=1.0), "dropout"),
    ("d2l_alexnet", dict(num_classes=0), "num_classes"),
])
def test_bad_options(preset, options, match):
    with pytest.raises(S.SpecError, match=match):
        S.get_spec(preset, **options)


def test_smallest_inputs():
    with pytest.raises(oracle.InputTooSmall):
        oracle.analyze(S.get_spec("d2l_alexnet"), 64)
    assert [oracle.min_input_size(S.get_spec(p)) for p in PRESETS] == [65, 32, 67]


def test_the_docs_table_is_the_oracles():
    with open(os.path.join(ROOT, "docs", "family.md"), encoding="utf-8") as f:
        assert classic.exercise3_table() in f.read()
