"""Same weights, same numbers: the four builds are one network.

Every pair of installed backends gets the same framework-neutral weights and the same
batch, and must agree within atol = rtol = 1e-4 (float32, CPU) on every stage output and
on the logits; one SGD step gives the same loss and the same updated weights, and a few
steps with momentum stay together.  Outputs are computed once per backend and cached.
"""
import importlib
import itertools
import os

import numpy as np
import pytest

from common import spec as S, weights as W
from common.switch import BACKENDS, FRAMEWORK_MODULE
from tests.conftest import backend_or_skip

TOL = dict(atol=1e-4, rtol=1e-4)
PAIRS = list(itertools.combinations(BACKENDS, 2))
_cache = {}


def cached(name, key, compute):
    if (name, key) not in _cache:
        _cache[(name, key)] = compute(backend_or_skip(name))
    return _cache[(name, key)]


def batch(spec, n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, spec.in_channels, spec.input_size, spec.input_size), dtype=np.float32)
    return X, (np.arange(n) % spec.num_classes).astype(np.int64)


def compare(a, b, tol=TOL, what=""):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], err_msg=f"{what} {k}", **tol)


# --------------------------------------------------------------------------- forward
FORWARD_SPECS = {
    "d2l": lambda: S.googlenet("d2l"),
    "bn": lambda: S.googlenet("bn", in_channels=1, num_classes=10, input_size=96, aux_logits=False),
    "paper-lrn-3x3": lambda: S.googlenet("paper", norm="lrn", branch3_kernel=3, input_size=112),
}
TRAIN_SPECS = {
    "d2l": lambda: S.googlenet("d2l"),
    "bn-nodrop": lambda: S.googlenet("bn", in_channels=1, num_classes=10, input_size=96,
                                     aux_logits=False, dropout=0.0),
}


def forward_outputs(key):
    def compute(bk):
        spec = FORWARD_SPECS[key]()
        net = bk.build(spec, seed=None)
        bk.set_weights(net, perturbed(spec, seed=5))
        X, _ = batch(spec, 2)
        outs = bk.stage_outputs(net, X)
        outs["logits"] = bk.forward(net, X)
        outs.update(("features:" + k, v) for k, v in bk.features(net, X).items())
        return outs
    return compute


def perturbed(spec, seed):
    """Recipe weights with non-trivial biases and batch-norm statistics, so that every
    tensor of the weight file matters."""
    w = W.xavier_init(spec, seed)
    rng = np.random.default_rng(seed + 1)
    for k, v in w.items():
        if k.endswith("running_var"):
            w[k] = rng.uniform(0.5, 2.0, v.shape).astype(np.float32)
        elif v.ndim == 1:
            w[k] = (v + rng.normal(0, 0.05, v.shape)).astype(np.float32)
    return w


@pytest.mark.parametrize("key", list(FORWARD_SPECS))
@pytest.mark.parametrize("a, b", PAIRS, ids=lambda p: p)
def test_forward_equal(a, b, key):
    oa = cached(a, ("forward", key), forward_outputs(key))
    ob = cached(b, ("forward", key), forward_outputs(key))
    compare(oa, ob, what=f"{a} vs {b}, {key}:")


# --------------------------------------------------------------------------- training
def steps(key, n_steps, **trainer_kwargs):
    def compute(bk):
        spec = TRAIN_SPECS[key]()
        net = bk.build(spec, seed=11)
        trainer = bk.Trainer(net, **trainer_kwargs)
        losses = []
        for i in range(n_steps):
            X, y = batch(spec, 4, seed=i)
            losses.append(trainer.train_step(bk.to_tensor(X), bk.to_tensor(y))[0])
        return np.array(losses), bk.get_weights(net)
    return compute


@pytest.mark.parametrize("a, b", PAIRS)
def test_one_sgd_step_equal(a, b):
    (la, wa), (lb, wb) = (cached(n, "step1", steps("d2l", 1, lr=0.1)) for n in (a, b))
    np.testing.assert_allclose(la, lb, **TOL)
    compare(wa, wb, what=f"{a} vs {b} after one step:")


def float64_reference(key, n_steps, **trainer_kwargs):
    """PyTorch in float64 (plain NCHW eager): the exact result to rounding, where no float32
    ReLU tie can flip (docs/fidelity.md)."""
    def compute(bk):
        spec = TRAIN_SPECS[key]()
        net = bk.build(spec, seed=11).double()
        trainer = bk.Trainer(net, fast=False, **trainer_kwargs)
        losses = []
        for i in range(n_steps):
            X, y = batch(spec, 4, seed=i)
            losses.append(trainer.train_step(bk.to_tensor(X).double(), bk.to_tensor(y))[0])
        return np.array(losses), {k: t.detach().cpu().numpy().copy() for k, (t, _) in bk.model.api.tensors(net).items()}
    return compute


@pytest.mark.parametrize("name", BACKENDS)
def test_three_momentum_steps_stay_with_the_exact_result(name):
    """Three SGD steps with momentum and weight decay, each backend on its default (fast)
    path in float32, against the float64 result: every weight within 1e-4.  Compared with
    the exact result rather than pairwise, a float32 ReLU tie (a pre-activation within
    rounding of zero, whose sign float32 summation order decides) counts once, for the
    backend it hits; pairwise agreement within 2e-4 follows."""
    pytest.importorskip("torch")
    kw = dict(lr=0.05, momentum=0.9, weight_decay=1e-3)
    lr, wr = cached("pytorch", "step3-float64", float64_reference("d2l", 3, **kw))
    la, wa = cached(name, "step3", steps("d2l", 3, **kw))
    np.testing.assert_allclose(la, lr, **TOL)
    compare(wa, wr, what=f"{name} after three steps vs float64:")


# --------------------------------------------------------------------------- the book's code
@pytest.mark.parametrize("name", BACKENDS)
def test_book_parity(name):
    """Copying the book's own network's weights into ours gives the book's logits."""
    bk = backend_or_skip(name)
    pytest.importorskip("d2l") if name != "pytorch" else None
    ref = importlib.import_module(f"tests.reference.book_{name}")
    book = ref.book_net()
    net = bk.build(seed=None)
    bk.set_weights(net, ref.to_canonical(book))
    X, _ = batch(S.googlenet("d2l"), 2, seed=3)
    ours, theirs = bk.forward(net, X), ref.book_logits(book, X)
    if getattr(ref, "SAME_PADDING", False):
        # The book's TensorFlow net pads stride-2 layers asymmetrically ('same'); ours pads
        # symmetrically like the other three frameworks, so the numbers differ on purpose.
        assert np.abs(ours - theirs).max() > 0.02 * np.abs(theirs).max()
        sym = ref.book_logits(ref.book_net(symmetric=True, weights=book), X)
        np.testing.assert_allclose(ours, sym, **TOL)
    else:
        np.testing.assert_allclose(ours, theirs, **TOL)


# --------------------------------------------------------------------------- weight files
def saved_file(name, tmp_dir):
    def compute(bk):
        spec = FORWARD_SPECS["bn"]()
        net = bk.build(spec, seed=None)
        bk.set_weights(net, perturbed(spec, seed=BACKENDS.index(name)))
        path = os.path.join(tmp_dir, f"{name}.npz")
        W.save(path, bk.get_weights(net), backend=name)
        X, _ = batch(spec, 2)
        return path, bk.forward(net, X)
    return compute


@pytest.mark.parametrize("src, dst", [p for p in itertools.product(BACKENDS, BACKENDS) if p[0] != p[1]])
def test_weight_file_interchange(src, dst, tmp_path_factory):
    tmp = str(tmp_path_factory.getbasetemp())
    path, logits = cached(src, "saved", saved_file(src, tmp))
    bk = backend_or_skip(dst)
    spec = FORWARD_SPECS["bn"]()
    net = bk.build(spec, seed=None)
    bk.set_weights(net, W.load(path))
    np.testing.assert_allclose(bk.forward(net, batch(spec, 2)[0]), logits, **TOL)


def test_a_seeded_build_holds_the_recipe_weights_of_that_seed(bk):
    """What lets runs without --init-from be compared (common.report): build(seed=s) holds
    xavier_init(spec, s) exactly, whatever the framework."""
    got, want = bk.get_weights(bk.build(seed=3)), W.xavier_init(S.googlenet("d2l"), seed=3)
    assert list(got) == list(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_mismatched_weights_name_first_layer_and_load_nothing(bk):
    net = bk.build(seed=0)
    before = bk.get_weights(net)
    bad = W.xavier_init(S.googlenet("d2l"), seed=1)
    bad["b3.inception3b.p2_2.weight"] = np.zeros((1, 2, 3, 3), np.float32)
    bad["b4.inception4a.p1_1.weight"] = np.zeros((1, 2, 1, 1), np.float32)
    with pytest.raises(W.WeightsError, match=r"b3\.inception3b\.p2_2\.weight"):
        bk.set_weights(net, bad)
    del bad["b3.inception3b.p2_2.weight"]
    with pytest.raises(W.WeightsError, match=r"b3\.inception3b\.p2_2\.weight.*missing"):
        bk.set_weights(net, bad)
    compare(bk.get_weights(net), before, tol=dict(atol=0, rtol=0), what="half-loaded:")


@pytest.mark.parametrize("a, b", PAIRS)
def test_bn_step_loss_and_running_stats_equal(a, b):
    """Batch norm in training mode: the loss and the running statistics agree.  (The updated
    weights of this net are ill-conditioned in float32 at initialisation: PyTorch float32
    itself differs from PyTorch float64 by ~4e-3 after one step, see docs/fidelity.md.)"""
    kw = dict(lr=0.1)
    (la, wa), (lb, wb) = (cached(n, "bn-step", steps("bn-nodrop", 1, **kw)) for n in (a, b))
    np.testing.assert_allclose(la, lb, rtol=1e-4)
    stats = [k for k in wa if k.endswith("running_mean") or k.endswith("running_var")]
    assert stats
    compare({k: wa[k] for k in stats}, {k: wb[k] for k in stats}, what=f"{a} vs {b} BN stats:")


# --------------------------------------------------------------------------- native formats
@pytest.mark.parametrize("name", BACKENDS)
def test_native_format_roundtrip_through_convert(name, tmp_path):
    """convert.py: neutral -> the framework's own format -> neutral, numbers unchanged."""
    import subprocess
    import sys
    bk = backend_or_skip(name)
    spec = S.googlenet("d2l")
    src = str(tmp_path / "w.npz")
    W.save(src, perturbed(spec, seed=2))
    native, back = str(tmp_path / ("m" + bk.NATIVE_SUFFIX)), str(tmp_path / "back.npz")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for a, b in ((src, native), (native, back)):
        out = subprocess.run([sys.executable, "scripts/convert.py", a, b], cwd=root,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
    assert "max |diff| 0.00e+00" in out.stdout
    compare(W.load(back), W.load(src), tol=dict(atol=0, rtol=0), what="round trip:")


@pytest.mark.parametrize("dst", BACKENDS)
def test_model_trained_in_one_framework_scores_the_same_in_another(dst, tmp_path_factory):
    """A checkpoint trained with PyTorch evaluates to the same test accuracy elsewhere."""
    from common import data as D
    from common.loop import evaluate, fit
    from common.train_config import Recipe
    from tests.datagen import make_dataset

    def trained(bk):
        tmp = tmp_path_factory.mktemp("trained")
        data = make_dataset(str(tmp / "d"), 96, 64)
        train, test = D.load_fashion_mnist(data, 32, download_missing=False)
        spec = S.scale_channels(S.googlenet("d2l", input_size=32), 0.25)
        net = bk.build(spec, seed=0)
        rec = fit(bk, net, D.Loader(train, 32, True), D.Loader(test, 32),
                  Recipe(num_epochs=1, batch_size=32, lr=0.05, momentum=0.9, resize=32),
                  str(tmp / "run"), progress=False, log=lambda *a: None)
        return spec, test, rec, W.load(str(tmp / "run" / "checkpoint" / "weights.npz"))

    spec, test, rec, weights = cached("pytorch", "trained", trained)
    bk = backend_or_skip(dst)
    net = bk.build(spec, seed=None)
    bk.set_weights(net, weights)
    loss, acc = evaluate(bk, bk.Trainer(net), D.Loader(test, 32))
    assert acc == rec["test_acc"]
    assert loss == pytest.approx(rec["history"][-1]["test_loss"], rel=1e-4)
