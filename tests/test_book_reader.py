"""The book reader's path: our networks inside the book's own ``d2l.train_ch6``.

For every backend whose d2l module is installed (d2l 1.0.3: MXNet, TensorFlow, and PyTorch
through ``backends.d2l_compat``'s torchvision stand-in), ``d2l.train_ch6`` trains the network
``bk.build()`` returns, unchanged, on a few batches of the framework's own data iterators
(the kinds ``d2l.load_data_fashion_mnist`` returns): the loss is finite, the optimiser
stepped on our parameters, and our API (``forward``, ``count_params``, ``get_weights`` /
``set_weights``) still works on the trained network.  Paddle has no d2l module that
installs beside the pinned versions: its test asserts the documented reason (so the day
d2l grows one, the test says the docs are out of date) and that the documented
alternative, ``common.train.loop.fit``, trains the Paddle network.

The stand-in itself is tested without any framework: it appears only where torchvision
cannot be imported and never shadows a working one.
"""
import importlib
import importlib.util
import math
import os
import re
import sys
import types

import numpy as np
import pytest

from backends import d2l_compat as C
from tests.conftest import backend_or_skip
from tests.datagen import patterns

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE, BATCH = 28, 8                     # Fashion-MNIST's own size; the book's net takes any size
N_TRAIN, N_TEST = 5 * BATCH, 2 * BATCH  # train_ch6 needs >= 5 batches (num_batches // 5)


def numpy_data():
    """Our framework-free batches: float32 NCHW in [0, 1] and int64 labels."""
    (a, y), (b, yt) = patterns(N_TRAIN, seed=0), patterns(N_TEST, seed=1)
    as_x = lambda imgs: (imgs[:, None] / 255).astype(np.float32)
    return as_x(a), y.astype(np.int64), as_x(b), yt.astype(np.int64)


def book_iterators(name, X, y, Xt, yt):
    """The framework's own iterators over our numpy batches, as the book's
    ``load_data_fashion_mnist`` returns them for that framework."""
    if name == "pytorch":
        import torch
        mk = lambda a, b, shuffle: torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.from_numpy(a), torch.from_numpy(b)), BATCH, shuffle=shuffle)
    elif name == "mxnet":
        from mxnet import gluon, np as mnp
        mk = lambda a, b, shuffle: gluon.data.DataLoader(
            gluon.data.ArrayDataset(mnp.array(a), mnp.array(b.astype(np.int32))), BATCH, shuffle=shuffle)
    else:
        import tensorflow as tf
        mk = lambda a, b, shuffle: tf.data.Dataset.from_tensor_slices(
            (a.transpose(0, 2, 3, 1), b.astype(np.int32))).batch(BATCH)      # the book's NHWC
    return mk(X, y, True), mk(Xt, yt, False)


def stepped(name, net):
    """Whether the book's optimiser stepped on our network's own parameters."""
    if name == "pytorch":
        return all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in net.parameters())
    if name == "mxnet":
        return all(float(abs(p.grad()).sum()) > 0 for p in net.collect_params().values() if p.grad_req != "null")
    return int(net.optimizer.iterations.numpy()) == N_TRAIN // BATCH


# ----------------------------------------------------------------------------- train_ch6
@pytest.mark.parametrize("name", ["mxnet", "pytorch", "tensorflow"])
def test_our_net_trains_inside_the_books_train_ch6(name, capsys):
    bk = backend_or_skip(name)
    if C.why_not(name):
        pytest.skip(C.why_not(name))
    d2l = C.import_d2l(name)
    X, y, Xt, yt = numpy_data()
    train_iter, test_iter = book_iterators(name, X, y, Xt, yt)
    net = bk.build(input_size=SIZE)
    before = bk.get_weights(net)
    with C.final_figure_only(d2l, show=False):        # the Animator's SVGs cost ~1 s each headless
        if name == "tensorflow":                      # the book's TF train_ch6 takes a builder
            built = []
            net_fn = lambda: built.append(bk.build(input_size=SIZE)) or built[-1]
            trained = d2l.train_ch6(net_fn, train_iter, test_iter, 1, 0.1, d2l.try_gpu())
            assert trained is built[0]
            net = trained
        else:
            d2l.train_ch6(net, train_iter, test_iter, 1, 0.1, d2l.try_gpu())
    out = capsys.readouterr().out
    m = re.search(r"loss (\S+), train acc (\S+), test acc (\S+)", out)
    assert m, out
    assert all(math.isfinite(float(v)) for v in m.groups()), out
    assert stepped(name, net)
    after = bk.get_weights(net)
    assert list(after) == list(before)
    assert all(np.isfinite(a).all() for a in after.values())
    assert all(not np.array_equal(before[k], after[k]) for k in after)
    # our API on the trained network: shapes, counts, and weights in the table's names
    assert bk.forward(net, Xt[:3]).shape == (3, 10)
    assert bk.count_params(net) == 5_977_530
    assert [v.shape for v in bk.stage_outputs(net, Xt[:1]).values()][-1] == (1, 10)
    bk.set_weights(net, before)
    np.testing.assert_allclose(bk.forward(net, Xt[:4]), bk.forward(bk.build(input_size=SIZE), Xt[:4]),
                               rtol=1e-4, atol=1e-5)


def test_paddle_has_no_book_module_and_the_docs_say_what_instead(tmp_path):
    """Not a silent skip: the reason is asserted, and the alternative the docs give works."""
    if importlib.util.find_spec("d2l") is None:
        pytest.skip("d2l is not installed")
    if C.has_module("paddle"):
        pytest.fail(f"this d2l ({C.d2l_version()}) has a Paddle module: update backends/d2l_compat.py, "
                    f"docs/book.md and this test to train inside its train_ch6")
    assert importlib.util.find_spec("d2l.paddle") is None
    with pytest.raises(C.D2LUnavailable) as e:
        C.import_d2l("paddle")
    for words in ("no Paddle module", "d2l 1.0.3", "0.17", "numpy 1.21.5", "GPU", "common.train.loop.fit",
                  "docs/book.md"):
        assert words in str(e.value)
    doc = open(os.path.join(ROOT, "docs", "book.md")).read()
    assert "## Paddle" in doc and re.search(r"common(\.train)?\.loop\.fit", doc)   # the old path works too
    # the documented alternative: train_ch6 made explicit, on the Paddle network
    bk = backend_or_skip("paddle")
    from common.inputs.data import Loader, Split
    from common.train.loop import fit
    from common.train.train_config import Recipe
    X, y, Xt, yt = numpy_data()
    to_split = lambda a, b: Split((a[:, 0] * 255).round().astype(np.uint8), b)
    train_iter = Loader(to_split(X, y), BATCH, shuffle=True)
    test_iter = Loader(to_split(Xt, yt), BATCH)
    net = bk.build(input_size=SIZE)
    before = bk.get_weights(net)
    rec = fit(bk, net, train_iter, test_iter, Recipe(num_epochs=1, batch_size=BATCH, resize=SIZE),
              str(tmp_path / "run"), progress=False, log=lambda *a: None)
    assert math.isfinite(rec["train_loss"]) and len(rec["steps"]) == N_TRAIN // BATCH
    after = bk.get_weights(net)
    assert all(not np.array_equal(before[k], after[k]) for k in after)


# ----------------------------------------------------------------------------- the stand-in
@pytest.fixture
def no_torchvision(monkeypatch):
    """A process in which ``import torchvision`` fails (None in sys.modules blocks it)."""
    C.remove_stand_in()
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torchvision", None)
    yield
    C.remove_stand_in()


def test_the_stand_in_appears_only_where_torchvision_cannot_be_imported(no_torchvision, monkeypatch):
    sys.modules.pop("torchvision")                # the import below fails the way PyPI's CUDA build does
    real_import = importlib.import_module

    def failing(name, *a, **k):
        if name == "torchvision":
            raise RuntimeError("operator torchvision::nms does not exist")
        return real_import(name, *a, **k)

    monkeypatch.setattr(C.importlib, "import_module", failing)
    how = C.ensure_torchvision()
    monkeypatch.setattr(C.importlib, "import_module", real_import)
    assert how.startswith("stand-in (RuntimeError: operator torchvision::nms")
    import torchvision
    from torchvision import transforms              # what d2l.torch does when imported
    import torchvision.transforms                   # noqa: F401
    assert C.is_stand_in(torchvision) and C.is_stand_in(transforms)
    assert "stand-in" in repr(torchvision)
    assert not hasattr(torchvision, "__version__")  # probes see a module without it
    for use in (lambda: torchvision.datasets, lambda: transforms.ToTensor()):
        with pytest.raises(C.TorchvisionMissing) as e:
            use()
        assert "needs the real torchvision" in str(e.value)
        assert "pip install torchvision==0.28.0" in str(e.value)
        assert "download.pytorch.org/whl/cpu" in str(e.value)
    assert C.ensure_torchvision().startswith("stand-in")    # idempotent
    assert C.remove_stand_in() and "torchvision" not in sys.modules


def test_a_missing_torchvision_gets_the_stand_in(no_torchvision):
    how = C.ensure_torchvision()                    # sys.modules["torchvision"] is None: ImportError
    assert how.startswith("stand-in (") and ("ImportError" in how or "ModuleNotFoundError" in how)
    import torchvision
    assert C.is_stand_in(torchvision)


def test_a_working_torchvision_is_never_shadowed(tmp_path, monkeypatch):
    C.remove_stand_in()
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        monkeypatch.delitem(sys.modules, name)
    pkg = tmp_path / "torchvision"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("__version__ = '0.28.0'\nfrom . import transforms\n")
    (pkg / "transforms.py").write_text("def ToTensor():\n    return 'real'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    try:
        assert C.ensure_torchvision() == "real"
        import torchvision
        assert not C.is_stand_in(torchvision) and torchvision.__version__ == "0.28.0"
        assert torchvision.transforms.ToTensor() == "real"
        assert C.ensure_torchvision() == "real" and sys.modules["torchvision"] is torchvision
    finally:
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]


def test_d2l_compat_imports_no_framework():
    """common/ stays framework-free: importing the helper imports no framework or d2l."""
    import subprocess
    code = ("import sys; import backends.d2l_compat as c; "
            "bad = [m for m in ('torch', 'tensorflow', 'mxnet', 'paddle', 'd2l', 'torchvision') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_final_figure_only_shows_the_last_figure_once():
    shown, cleared, closed = [], [], []
    fake = types.SimpleNamespace(
        display=types.SimpleNamespace(display=shown.append, clear_output=lambda **k: cleared.append(1)),
        plt=types.SimpleNamespace(close=closed.append))
    with C.final_figure_only(fake) as last:
        for fig in ("fig-1", "fig-2", "fig-3"):     # what Animator.add does after every few batches
            fake.display.display(fig)
            fake.display.clear_output(wait=True)
        assert shown == [] and cleared == []
    assert shown == ["fig-3"] and closed == ["fig-3"] and last == ["fig-3"]
    assert fake.display.display == shown.append     # restored


def test_importing_a_backend_imports_neither_its_book_module_nor_d2l():
    """``backends/<framework>/book.py`` (the book's code) imports d2l; building our network
    must not need it, so no backend imports its book module."""
    import subprocess
    pytest.importorskip("torch")
    code = ("import sys; from backends import get_backend; get_backend('pytorch').build(); "
            "print(sorted(m for m in sys.modules if m == 'd2l' or m.startswith('d2l.') or m.endswith('.book')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines()[-1] == "[]"
