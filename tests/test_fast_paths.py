"""Fast paths keep the numbers: PyTorch's channels-last default (``Trainer(fast=True)``)
against plain NCHW eager (``fast=False``).

Float32: each path's stage outputs, evaluation loss and training-step loss (the book's
full net) and its weights after one SGD step (the quarter-width training net of
tests/test_equivalence.py) lie within their derived bounds of the float64 reference
(:mod:`tests.numerics`), so the two paths agree within the sum of two bounds.  Float64:
three momentum steps give the same weights to rounding (1e-12), i.e. the fast path
computes the same function; what remains in float32 is summation order
(docs/fidelity.md)."""
import numpy as np
import pytest

from common.net import spec as S, weights as W
from tests import numerics as N
from tests.conftest import backend_or_skip
from tests.test_equivalence import train_spec, within


def _batch(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 96, 96), dtype=np.float32), rng.integers(0, 10, n).astype(np.int64)


def _run(bk, fast):
    net = bk.build(S.googlenet("d2l"), seed=3)
    trainer = bk.Trainer(net, lr=0.1, fast=fast)
    X, y = _batch()
    Xe, ye = _batch(seed=1)
    stages = bk.stage_outputs(net, X)
    ev = trainer.eval_step(bk.to_tensor(Xe), bk.to_tensor(ye))
    step = trainer.train_step(bk.to_tensor(X), bk.to_tensor(y))
    return stages, ev, step


def _small_step(bk, fast):
    spec = train_spec()
    net = bk.build(spec, seed=11)
    X, y = _batch(4)
    X = X[:, :, :32, :32].copy()
    bk.Trainer(net, lr=0.1, fast=fast).train_step(bk.to_tensor(X), bk.to_tensor(y))
    return bk.get_weights(net), (X, y)


def test_pytorch_channels_last_same_numbers():
    bk = backend_or_skip("pytorch")
    import torch
    spec = S.googlenet("d2l")
    ref = N.Reference(spec, W.xavier_init(spec, 3))
    X, y = _batch()
    Xe, ye = _batch(seed=1)
    ref.forward(X)
    stages, stage_bounds = ref.outputs([st.name for st in spec.stages])
    ev_loss, ev_bound = ref.summed_loss(Xe, ye)
    step_loss, step_bound = ref.summed_loss(X, y)
    small = {}
    for fast in (False, True):
        s, ev, step = _run(bk, fast)
        within(s, stages, stage_bounds, f"fast={fast}: stages")
        N.check(ev[0], ev_loss, ev_bound, f"fast={fast}: evaluation loss")
        N.check(step[0], step_loss, step_bound, f"fast={fast}: step loss")
        small[fast], batch = _small_step(bk, fast)
    steps = N.Steps(train_spec(), W.xavier_init(train_spec(), 11), [batch], [0.1])
    for fast, w in small.items():
        assert all(w[k].flags.c_contiguous for k in w)       # canonical arrays, whatever the layout
        within(w, steps.weights, steps.bounds, f"fast={fast}: after one step")
    # the network really is channels-last after the Trainer converted it
    net = bk.build(seed=0)
    bk.Trainer(net)                                         # the default
    assert net.stages["b1"]["conv1"].conv.weight.is_contiguous(memory_format=torch.channels_last)


def three_steps_float64(bk, fast):
    net = bk.build(S.googlenet("d2l"), seed=11).double()
    trainer = bk.Trainer(net, lr=0.05, momentum=0.9, weight_decay=1e-3, fast=fast)
    for i in range(3):
        X, y = _batch(seed=i)
        trainer.train_step(bk.to_tensor(X).double(), bk.to_tensor(y))
    return {k: t.detach().cpu().numpy().copy() for k, (t, _) in bk.model.api.tensors(net).items()}


def test_pytorch_channels_last_is_the_same_function_in_float64():
    """In float64 (no float32 ties) three momentum steps of channels-last and NCHW eager give
    the same weights to rounding: the fast path changes summation order, nothing else."""
    bk = backend_or_skip("pytorch")
    a, b = three_steps_float64(bk, False), three_steps_float64(bk, True)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-12, atol=1e-12, err_msg=k)


def test_pytorch_fast_rejects_unknown_value():
    bk = backend_or_skip("pytorch")
    with pytest.raises(ValueError, match="channels_last"):
        bk.Trainer(bk.build(seed=0), fast="turbo")
