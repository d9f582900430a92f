"""Recipe pieces, identical on every backend: schedules, optimisers, label smoothing,
clipping, augmentation.

The schedules are checked against PyTorch's own schedulers (and closed forms); the
optimiser options, a few steps from the same weights with a learning rate that changes at
every step (so an optimiser that keeps ``lr * grad`` in its momentum buffer would fail),
each backend against the float64 reference within derived bounds, like
tests/test_equivalence.py (:mod:`tests.numerics`); label smoothing against a NumPy oracle;
augmentation against an independent per-image implementation.
"""

import numpy as np
import pytest

from common.net import spec as S
from common.train.augment import Augment, step_rng
from common.train.schedules import SCHEDULES, Schedule
from common.net import weights as W
from backends.config import BACKENDS
from tests import numerics as N
from tests.conftest import backend_or_skip

_cache = {}


# --------------------------------------------------------------------------- schedules
def torch_lrs(make, n):
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = make(torch.optim.lr_scheduler, opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("total", [7, 40, 123])
def test_onecycle_and_cosine_are_pytorchs(total):
    ours = Schedule(0.1, total, 10, "onecycle")
    theirs = torch_lrs(lambda m, o: m.OneCycleLR(o, max_lr=0.1, total_steps=total), total)
    np.testing.assert_allclose([ours(t) for t in range(total)], theirs, rtol=1e-12, atol=1e-15)
    ours = Schedule(0.1, total, 10, "cosine")
    theirs = torch_lrs(lambda m, o: m.CosineAnnealingLR(o, T_max=total), total)
    np.testing.assert_allclose([ours(t) for t in range(total)], theirs, rtol=1e-9, atol=1e-12)


def test_step_schedule_and_warmup():
    s = Schedule(0.1, 100, 10, "step", step_epochs=3, gamma=0.5)
    assert [s(t) for t in (0, 29, 30, 59, 60, 99)] == [0.1, 0.1, 0.05, 0.05, 0.025, 0.0125]
    w = Schedule(0.2, 100, 10, "cosine", warmup_epochs=2)       # 20 warm-up steps from 0
    assert w(0) == 0 and w(10) == pytest.approx(0.1) and w(20) == pytest.approx(0.2)
    assert w(60) == pytest.approx(0.1)                          # half-way through the cosine
    assert Schedule(0.1, 50, 10, "constant")(49) == 0.1
    with pytest.raises(ValueError, match="unknown schedule"):
        Schedule(0.1, 5, 5, "linear")
    assert set(SCHEDULES) == {"constant", "step", "cosine", "onecycle"}


# --------------------------------------------------------------------------- optimisers
def small_spec():
    """Convs, an Inception block, pooling and a dense head: every kind of parameter."""
    return S.Spec("recipe", 1, 24, (
        S.stage("s1", S.Conv(8, 3, 1, 1), S.MaxPool(3, 2, 1)),
        S.stage("s2", S.Inception(4, (4, 8), (2, 4), 4), S.GlobalAvgPool(), S.Flatten(), S.Dense(10))))


LRS = (0.05, 0.12, 0.02, 0.08)         # a different learning rate at every step
OPTIONS = {
    "nesterov": dict(momentum=0.9, nesterov=True, weight_decay=1e-3),
    "momentum": dict(momentum=0.9, weight_decay=5e-3),
    "adam": dict(optimizer="adam", weight_decay=1e-3),
    "adamw": dict(optimizer="adamw", weight_decay=0.05),
    "smoothing": dict(momentum=0.9, label_smoothing=0.1),
    "clip": dict(momentum=0.9, clip_norm=0.05),
    "plain": dict(momentum=0.9),
}


def batches(lrs=LRS):
    rng = np.random.default_rng(0)
    return [(rng.random((6, 1, 24, 24), dtype=np.float32), rng.integers(0, 10, 6)) for _ in lrs]


def run_steps(name, key, lrs=LRS):
    """(summed losses, weights) of a backend after the steps; for ``name='float64'`` the
    reference with its bounds (:class:`tests.numerics.Steps`)."""
    if (name, key) not in _cache:
        spec = small_spec()
        if name == "float64":
            _cache[(name, key)] = N.Steps(spec, W.xavier_init(spec, 5), batches(lrs), lrs, **OPTIONS[key])
            return _cache[(name, key)]
        bk = backend_or_skip(name)
        net = bk.build(spec, seed=5)
        trainer = bk.Trainer(net, lr=lrs[0], **OPTIONS[key])
        losses = []
        for lr, (X, y) in zip(lrs, batches(lrs)):
            trainer.set_lr(lr)
            losses.append(trainer.train_step(bk.to_tensor(X), bk.to_tensor(y))[0])
        _cache[(name, key)] = (np.array(losses), bk.get_weights(net))
    return _cache[(name, key)]


@pytest.mark.parametrize("key", list(OPTIONS))
@pytest.mark.parametrize("name", BACKENDS)
def test_optimiser_options_match_float64(name, key):
    """Every loss and every weight after the steps within its derived bound of the float64
    reference: the four backends agree pairwise within the sum of two bounds."""
    ref = run_steps("float64", key)
    losses, weights = run_steps(name, key)
    N.check(losses, ref.losses, ref.loss_bounds, f"{name}, {key}: losses")
    for k in ref.weights:
        N.check(weights[k], ref.weights[k], ref.bounds[k], f"{name}, {key}: {k}")


@pytest.mark.parametrize("name", BACKENDS)
def test_options_change_the_update(name):
    """Each option really acts: with it the weights differ from the plain run beyond the
    tolerance (so agreeing across backends is not agreeing on doing nothing)."""
    _, base = run_steps(name, "plain")
    for key in ("nesterov", "smoothing", "clip"):
        _, w = run_steps(name, key)
        assert max(np.abs(w[k] - base[k]).max() for k in w) > 1e-3, key


def test_momentum_follows_pytorchs_rule_under_a_schedule():
    """The PyTorch rule, written out in NumPy for one parameter, against the backends'
    optimisers with a learning rate that changes: buf = m*buf + g; p -= lr*buf."""
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    ref, buf = np.array([1.0, -2.0]), np.zeros(2)
    for lr in LRS:
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        (p ** 2).sum().backward()
        grad = 2 * ref
        buf = 0.9 * buf + grad
        ref = ref - lr * buf
        opt.step()
    np.testing.assert_allclose(p.detach().numpy(), ref, rtol=1e-5)


@pytest.mark.parametrize("name", BACKENDS)
def test_label_smoothing_loss_is_the_formula(name):
    """The first step's loss with smoothing 0.1 against NumPy: (1-e) CE + e * mean(-log p)."""
    bk = backend_or_skip(name)
    spec = small_spec()
    net = bk.build(spec, seed=5)
    rng = np.random.default_rng(0)
    X, y = rng.random((6, 1, 24, 24), dtype=np.float32), rng.integers(0, 10, 6)
    z = bk.forward(net, X).astype(np.float64)
    logp = z - z.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    expected = ((1 - 0.1) * -logp[np.arange(6), y] + 0.1 * -logp.mean(1)).sum()
    trainer = bk.Trainer(net, lr=0.0, label_smoothing=0.1)
    loss, _ = trainer.train_step(bk.to_tensor(X), bk.to_tensor(y))
    assert loss == pytest.approx(expected, rel=1e-5)


# --------------------------------------------------------------------------- augmentation
def reference_augment(images, rng, pad, flip):
    """One image at a time, as torchvision's RandomCrop(padding) then RandomHorizontalFlip
    would (with the same draws in the same order)."""
    n, h, w = images.shape[0], images.shape[-2], images.shape[-1]
    dy, dx = rng.integers(0, 2 * pad + 1, n), rng.integers(0, 2 * pad + 1, n)
    mirror = rng.random(n) < 0.5
    out = []
    for i in range(n):
        canvas = np.zeros(images.shape[1:-2] + (h + 2 * pad, w + 2 * pad), images.dtype)
        canvas[..., pad:pad + h, pad:pad + w] = images[i]
        crop = canvas[..., dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        out.append(crop[..., ::-1] if mirror[i] else crop)
    return np.stack(out)


@pytest.mark.parametrize("shape", [(5, 12, 10), (4, 3, 9, 9)])
def test_crop_and_flip_are_the_reference(shape):
    images = np.random.default_rng(1).integers(0, 256, shape).astype(np.uint8)
    ours = Augment(crop_padding=3, flip=True)(images, step_rng(7, 2, 5))
    theirs = reference_augment(images, step_rng(7, 2, 5), 3, True)
    np.testing.assert_array_equal(ours, theirs)
    assert ours.dtype == np.uint8 and ours.shape == images.shape


def test_augmentation_is_seeded_per_step():
    images = np.random.default_rng(1).integers(0, 256, (8, 16, 16)).astype(np.uint8)
    aug = Augment(crop_padding=2, flip=True, erase=0.5)
    a, b = aug(images, step_rng(0, 1, 3)), aug(images, step_rng(0, 1, 3))
    np.testing.assert_array_equal(a, b)                          # same step, same pixels
    assert not np.array_equal(a, aug(images, step_rng(0, 1, 4)))  # next step, new draws
    assert not np.array_equal(a, images)
    erased = Augment(erase=1.0)(images + 1, step_rng(0, 0, 0))
    assert all((e == 0).any() for e in erased)                   # every image has a blank box
    assert not Augment() and Augment(flip=True)


# --------------------------------------------------------------------------- named recipes, CLI
def test_named_recipe_resolves_and_flags_override():
    from cli.train import parser
    from cli.options import base_recipe, model_options, recipe_from
    from common.train.train_config import RECIPES
    args = parser().parse_args(["--recipe", "fast", "--lr", "0.2", "--no-flip"])
    r = recipe_from(args)
    fast = RECIPES["fast"]
    assert r.lr == 0.2 and r.flip is False                       # flags win
    assert r.schedule == fast["schedule"] and r.nesterov == fast["nesterov"]
    assert r.crop_padding == fast["crop_padding"] and r.num_epochs == fast["num_epochs"]
    assert model_options(args, defaults=base_recipe(args)[1]) == dict(fast["model"])
    other = parser().parse_args(["--recipe", "fast", "--preset", "d2l"])
    assert model_options(other, defaults=base_recipe(other)[1]) == dict(preset="d2l")
    book = recipe_from(parser().parse_args([]))
    assert (book.lr, book.batch_size, book.num_epochs, book.momentum, book.schedule) == (0.1, 128, 10, 0.0,
                                                                                       "constant")
    assert not book.augment() and book.train_scales == ()


def tiny_data(n=48, size=20, seed=0):
    from common.inputs.data import Split
    from tests.datagen import patterns
    from common.inputs.data import resize
    X, y = patterns(n, seed=seed, size=28)
    return {s: Split(resize(X, s), y.astype(np.int64)) for s in (16, size, 24)}


def test_multi_scale_draws_sizes_from_the_seed():
    from common.inputs.data import Loader
    splits = tiny_data()
    loader = Loader(splits[20], 8, shuffle=True, seed=3, scales=splits, scale_every=2)
    sizes = [X.shape[-1] for X, _ in loader.epoch(1)]
    assert set(sizes) > {16} and sizes == [loader.scale_of(1, k) for k in range(len(sizes))]
    assert all(sizes[k] == sizes[k + 1] for k in range(0, len(sizes) - 1, 2))    # every 2 steps
    again = Loader(splits[20], 8, shuffle=True, seed=3, scales=splits, scale_every=2)
    assert sizes == [X.shape[-1] for X, _ in again.epoch(1)]


def test_multi_scale_training_and_testing(bk, tmp_path):
    """Training with a new input size at every step and testing over three sizes work on every
    backend (graph paths included); multi-scale testing is the average of the softmax."""
    from common.inputs.data import Loader
    from common.train.loop import evaluate, fit
    from common.train.train_config import Recipe
    splits = tiny_data()
    spec = S.Spec("ms", 1, 20, (
        S.stage("s1", S.Conv(8, 3, 1, 1), S.MaxPool(3, 2, 1)),
        S.stage("s2", S.Conv(16, 3, 1, 1), S.GlobalAvgPool(), S.Flatten(), S.Dense(10))))
    net = bk.build(spec, seed=0)
    train = Loader(splits[20], 8, shuffle=True, seed=0, scales=splits)
    test = Loader(splits[20], 16, scales=splits)
    rec = fit(bk, net, train, test, Recipe(num_epochs=1, batch_size=8, lr=0.05, resize=20), str(tmp_path),
              progress=False, log=lambda *a: None)
    probs = 0
    for split in splits.values():
        z = bk.forward(net, split.images.astype(np.float32)[:, None] / 255).astype(np.float64)
        e = np.exp(z - z.max(1, keepdims=True))
        probs = probs + e / e.sum(1, keepdims=True)
    expected = float((probs.argmax(1) == splits[20].labels).mean())
    assert rec["test_acc"] == pytest.approx(expected, abs=1e-9)
    assert evaluate(bk, bk.Trainer(net), test)[1] == pytest.approx(expected, abs=1e-9)
