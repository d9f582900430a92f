"""Fast paths keep the numbers: PyTorch's channels-last default (``Trainer(fast=True)``)
against plain NCHW eager (``fast=False``).

Float32: one step and the stage outputs agree within 1e-5.  Float64: three momentum steps
give the same weights to rounding (1e-12), i.e. the fast path computes the same function;
what remains in float32 is summation order (docs/fidelity.md)."""
import numpy as np
import pytest

from common import spec as S
from tests.conftest import backend_or_skip

TOL = dict(atol=1e-5, rtol=1e-5)


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
    return stages, ev, step, bk.get_weights(net)


def test_pytorch_channels_last_same_numbers():
    bk = backend_or_skip("pytorch")
    import torch
    s0, e0, t0, w0 = _run(bk, False)
    s1, e1, t1, w1 = _run(bk, True)
    for k in s0:
        np.testing.assert_allclose(s1[k], s0[k], err_msg=k, **TOL)
    np.testing.assert_allclose(e1[0], e0[0], **TOL)
    np.testing.assert_allclose(t1[0], t0[0], **TOL)
    assert e1[1] == e0[1] and t1[1] == t0[1]
    for k in w0:
        assert w1[k].flags.c_contiguous, k                  # canonical arrays, whatever the layout
        np.testing.assert_allclose(w1[k], w0[k], err_msg=k, **TOL)
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
