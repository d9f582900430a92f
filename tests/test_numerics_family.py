"""The float64 reference (:mod:`tests.numerics`) on the records the family added.

The forward passes of the family's members are held to the reference on every backend in
tests/test_equivalence.py (``FORWARD_SPECS``).  Here: training steps through the new records
whose bounds the reference derives in training too (rectangular convs, ceil-mode max pools,
average pools with and without their padding, adaptive pooling, Affine, a Concat with its
own ReLU), on every backend; the reference's own definitions (pool sizes, adaptive bins)
against the oracle's and PyTorch's; and that the derived bounds are tight enough to tell
the members apart (a table that differs from the weights' table in one convention fails).
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backends.config import BACKENDS
from common.net import oracle, spec as S, weights as W
from tests import numerics as N
from tests.conftest import backend_or_skip
from tests.test_equivalence import batch, cached, perturbed, within


def new_records_table():
    """Every new record that training steps support, at a size where each matters: 19x19
    input; a 3x5 conv with strides (1, 2); a ceil-mode 3/2 max pool (9x5, floor mode 9x4);
    an Inception-like Concat whose convs have no activation and whose concatenation has a
    ReLU, with a 1x3 conv and a 3/1 average pool without its padding; a 3/2 average pool
    with its padding; adaptive pooling of 5x3 to 3x3 (overlapping rows)."""
    mixed = S.Concat((S.branch(("b1", S.Conv(4, 1, act=None))),
                      S.branch(("b2a", S.Conv(3, 1, act=None)),
                               ("b2b", S.Conv(4, (1, 3), padding=(0, 1), act=None))),
                      S.branch(("pool", S.AvgPool(3, 1, 1, count_pad=False)),
                               ("proj", S.Conv(4, 1, act=None)))), act="relu")
    return S.get_spec(S.Spec("new-records", 1, 19, (
        S.stage("b1", S.Affine((0.229 / 0.5,), ((0.485 - 0.5) / 0.5,)), S.Conv(8, (3, 5), (1, 2), (1, 2)),
                S.MaxPool(3, 2, ceil=True)),
        S.stage("b2", ("mixed", mixed), S.AvgPool(3, 2, 1, count_pad=True), S.AdaptiveAvgPool(3)),
        S.stage("head", S.Flatten(), S.Dense(10)))))


STEPS = dict(steps=2, lr=0.1, kw=dict(momentum=0.9))


def steps(bk):
    spec = new_records_table()
    weights = W.xavier_init(spec, 7)
    batches = [batch(spec, 4, seed=i) for i in range(STEPS["steps"])]
    if bk is None:
        return N.Steps(spec, weights, batches, [STEPS["lr"]] * STEPS["steps"], **STEPS["kw"])
    net = bk.build(spec, seed=None)
    bk.set_weights(net, weights)
    trainer = bk.Trainer(net, lr=STEPS["lr"], **STEPS["kw"])
    losses = [trainer.train_step(bk.to_tensor(X), bk.to_tensor(y))[0] for X, y in batches]
    return np.array(losses), bk.get_weights(net)


def test_the_table_has_the_sizes_it_says():
    a = oracle.analyze(new_records_table())
    shapes = {r.name: r.out_shape for r in a.blocks}
    assert shapes["b1.pool1"] == (8, 9, 5) and shapes["b2.mixed"] == (12, 9, 5)
    assert shapes["b2.avgpool1"] == (12, 5, 3) and shapes["b2.apool1"] == (12, 3, 3)


@pytest.mark.parametrize("name", BACKENDS)
def test_training_steps_through_the_new_records_match_float64(name):
    """Two momentum steps through the new records: the losses and every updated weight
    within their bounds of the float64 reference, ties followed (tests.numerics.Steps)."""
    ref = cached("float64", "new-records", steps)
    losses, weights = cached(name, "new-records", steps)
    N.check(losses, ref.losses, ref.loss_bounds, f"{name}: summed losses")
    within(weights, ref.weights, ref.bounds, f"{name}: after the steps")


# --------------------------------------------------------------------------- the reference's own definitions
@pytest.mark.parametrize("ceil", [False, True])
def test_pool_sizes_agree_with_the_oracle(ceil):
    for n in range(3, 40):
        for k, s, p in ((3, 2, 0), (3, 2, 1), (2, 2, 0), (3, 1, 1), (5, 3, 0), (3, 3, 1)):
            assert N._pool_out(n, k, s, p, ceil) == oracle._out(n, k, s, p, ceil), (n, k, s, p)


def reference_layer(layer, x):
    """A single layer of the reference in evaluation mode on ``x`` (float64)."""
    ref = N.Reference(S.Spec("one", x.shape[1], x.shape[2], (S.stage("s", layer),)), {})
    with torch.no_grad():
        return ref._primitive("s.x", layer, x, torch.zeros_like(x))


@pytest.mark.parametrize("size", [(4, 4), (1, 1), (3, 5), (6, 2)])
def test_adaptive_bins_are_pytorchs(size):
    """The reference's adaptive pooling, written from the table's definition of the bins,
    is PyTorch's (whose bins overlap where the sizes do not divide)."""
    x = torch.randn(2, 3, 14, 9, dtype=torch.float64)
    got, _ = reference_layer(S.AdaptiveAvgPool(size), x)
    torch.testing.assert_close(got, F.adaptive_avg_pool2d(x, size), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("n", [9, 10, 14, 15])
def test_ceil_mode_max_pool_is_pytorchs(n):
    x = torch.randn(2, 3, n, n + 3, dtype=torch.float64)
    for k, s, p in ((3, 2, 0), (3, 2, 1), (2, 2, 0), ((3, 2), (2, 1), (1, 0))):
        got, _ = reference_layer(S.MaxPool(k, s, p, ceil=True), x)
        torch.testing.assert_close(got, F.max_pool2d(x, k, s, p, ceil_mode=True), rtol=0, atol=0)


def test_average_pool_without_its_padding_divides_by_the_real_cells():
    x = torch.ones(1, 1, 5, 5, dtype=torch.float64)
    got, var = reference_layer(S.AvgPool(3, 1, 1, count_pad=False), x)
    torch.testing.assert_close(got, x)
    with_pad, _ = reference_layer(S.AvgPool(3, 1, 1, count_pad=True), x)
    assert float(with_pad[0, 0, 0, 0]) == pytest.approx(4 / 9)


def test_records_without_training_bounds_say_so():
    spec = S.get_spec(S.Spec("res", 1, 8, (S.stage("b1", S.Conv(4, 3, 1, 1)),
                                           S.stage("b2", ("res", S.Residual(S.branch(S.Conv(4, 1, act=None))))),
                                           S.stage("head", S.GlobalAvgPool(), S.Flatten(), S.Dense(2)))))
    ref = N.Reference(spec, W.xavier_init(spec, 0))
    with pytest.raises(NotImplementedError, match="residual"):
        ref.step(*batch(spec, 2), lr=0.1)
    with pytest.raises(RuntimeError, match="forward"):
        N.Reference(spec, W.xavier_init(spec, 0)).aux_outputs()


# --------------------------------------------------------------------------- the bounds tell the members apart
def _v3(preset, **options):
    return S.scale_channels(S.get_spec(preset, in_channels=1, num_classes=10, input_size=75, **options), 0.25)


MIXUPS = {
    # Keras's average pools do not count the padding; counting it is torchvision's
    "count_pad": (lambda: _v3("keras_inception_v3"), lambda: _v3("keras_inception_v3", count_pad=True)),
    # Paddle's batch-norm epsilon is 1e-5; torchvision's 1e-3
    "eps": (lambda: _v3("paddle_inception_v3"), lambda: _v3("paddle_inception_v3", eps=1e-3)),
}


@pytest.mark.parametrize("key", list(MIXUPS))
def test_the_bounds_see_a_convention_of_another_member(key):
    """PyTorch built from a table that differs in one convention from the reference's fails
    the check: the derived bounds are tight enough to tell the family's members apart."""
    bk = backend_or_skip("pytorch")
    right, wrong = (f() for f in MIXUPS[key])
    X, _ = batch(right, 2)
    weights = perturbed(right, seed=5)
    ref = N.Reference(right, weights)
    logits, bound = ref.forward(X)
    net = bk.build(wrong, seed=None)
    bk.set_weights(net, weights)
    with pytest.raises(AssertionError, match="past their bound"):
        N.check(bk.forward(net, X), logits, bound, f"{key}: logits")
