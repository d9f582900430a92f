"""Mixed precision, opt-in (``Trainer(amp=...)``, ``--amp``): docs/performance.md, "Mixed precision".

From the same initial weights, three SGD steps in bfloat16 mixed precision give losses
within the derived tolerance (:func:`common.train.trainer.amp_loss_rtol`: ``sqrt(22) * 2**-8``,
relative) of the same backend's float32 steps, and within twice it across backends; the
loss falls (it trains); the network outside the Trainer still computes in float32.  The
frameworks that cannot do it here refuse with their reason, and the command line turns
that into one ``error:`` line before it reads any data.
"""
import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from common.net import spec as S, weights as W
from common.train.train_config import Recipe
from common.train.trainer import AmpError, amp_loss_rtol, parse_amp, unit_roundoff, weighted_depth
from tests.conftest import backend_or_skip

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: backends whose framework trains in bfloat16 on this CPU; the others refuse (below)
BF16 = ("pytorch", "tensorflow")
#: a word of each refusing backend's reason for bf16 on a CPU
NO_BF16 = {"mxnet": "NumPy-interface operators", "paddle": "only on CUDA, XPU and custom devices"}
SIZE, BATCH, STEPS, LR = 24, 8, 3, 0.003
# The recipe's Xavier weights have zero biases and the d2l net is ReLU, conv, max pool: the
# logits are positively homogeneous in the input, and of order 1e-3 for inputs in [0, 1), where
# the loss is log(10) whatever the precision.  Inputs 300x as large give logits of about 1
# (the relative rounding of bf16 is the same at every scale), so the loss measures them.
# lr 0.003: the loss falls by about a tenth a step; with larger steps the float32 and bf16
# runs part faster than rounding explains (docs/performance.md).
SCALE = 300.0
_cache = {}


def spec():
    return S.googlenet("d2l", input_size=SIZE)


def batch():
    rng = np.random.default_rng(0)
    X = SCALE * rng.random((BATCH, 1, SIZE, SIZE), dtype=np.float32)
    return X, (np.arange(BATCH) % 10).astype(np.int64)      # 8 examples, 8 classes: learnable


def steps(name, amp):
    """(training losses of STEPS SGD steps on one batch, eval loss after them, forward after
    them, weights after them) for ``amp``, from the recipe's initial weights; cached."""
    if (name, amp) not in _cache:
        bk = backend_or_skip(name)
        net = bk.build(spec(), seed=None)
        bk.set_weights(net, W.xavier_init(spec(), 0, SIZE))
        trainer = bk.Trainer(net, lr=LR, amp=amp)
        X, y = batch()
        Xt, yt = bk.to_tensor(X), bk.to_tensor(y)
        losses = [trainer.train_step(Xt, yt)[0] / BATCH for _ in range(STEPS)]
        _cache[(name, amp)] = (np.array(losses), trainer.eval_step(Xt, yt)[0] / BATCH,
                               bk.forward(net, X), bk.get_weights(net))
    return _cache[(name, amp)]


# --------------------------------------------------------------------------- the contract
def test_values_and_tolerance():
    assert [parse_amp(v) for v in (None, False, "", "off", "bf16", "BF16", "bfloat16", "fp16", "float16")] == \
        [None] * 4 + ["bf16"] * 3 + ["fp16"] * 2
    for bad in ("int8", True, 16):
        with pytest.raises(AmpError, match="amp must be None"):
            parse_amp(bad)
    assert unit_roundoff("bf16") == 2 ** -8 and unit_roundoff("fp16") == 2 ** -11 and unit_roundoff(None) == 2 ** -24
    for preset in ("d2l", "bn", "paper"):                   # the paper's "22 layers deep"
        assert weighted_depth(S.googlenet(preset)) == 22
    assert amp_loss_rtol("bf16", spec()) == pytest.approx(22 ** 0.5 / 256)      # 1.83e-2
    assert Recipe(amp="bf16").trainer_kwargs()["amp"] == "bf16" and Recipe().trainer_kwargs()["amp"] is None


# --------------------------------------------------------------------------- bf16 where it works
@pytest.mark.parametrize("name", BF16)
def test_bf16_steps_follow_float32(name):
    """Three steps: every bf16 loss within the derived relative tolerance of the float32 one,
    and not equal to it (the steps really ran in bf16); the loss falls; evaluation too."""
    l32, e32, f32, _ = steps(name, None)
    l16, e16, f16, w16 = steps(name, "bf16")
    rtol = amp_loss_rtol("bf16", spec())
    np.testing.assert_allclose(l16, l32, rtol=rtol, atol=0)
    assert np.abs(l16 - l32).max() > 1e-5, "bf16 gave float32's numbers: no mixed precision ran"
    assert abs(e16 - e32) <= rtol * e32
    for losses in (l32, l16):                                 # it trains: the loss falls, step by step
        assert np.all(np.diff(losses) < 0) and losses[-1] < 0.9 * losses[0], losses
    assert f16.dtype == np.float32 and all(v.dtype == np.float32 for v in w16.values())


@pytest.mark.parametrize("name", BF16)
def test_network_outside_the_trainer_stays_float32(name):
    """After bf16 steps, ``forward`` computes in float32: the same logits as a network built
    in float32 with the weights the bf16 steps reached."""
    bk = backend_or_skip(name)
    _, _, f16, w16 = steps(name, "bf16")
    net = bk.build(spec(), seed=None)
    bk.set_weights(net, w16)
    np.testing.assert_allclose(f16, bk.forward(net, batch()[0]), rtol=1e-5, atol=1e-5)


def test_bf16_agrees_across_backends():
    """Each backend's bf16 losses are within ``rtol`` of its float32 losses and the float32
    losses agree within 1e-4 (tests/test_equivalence.py), so two backends' bf16 losses agree
    within ``2 * rtol`` (+1e-4)."""
    names = [n for n in BF16 if _installed(n)]
    if len(names) < 2:
        pytest.skip("needs two backends with bf16")
    rtol = amp_loss_rtol("bf16", spec())
    for a, b in itertools.combinations(names, 2):
        la, lb = steps(a, "bf16")[0], steps(b, "bf16")[0]
        np.testing.assert_allclose(la, lb, rtol=2 * rtol, atol=1e-4, err_msg=f"{a} vs {b}")
        np.testing.assert_allclose(steps(a, None)[0], steps(b, None)[0], rtol=1e-4, atol=1e-4)


def _installed(name):
    try:
        backend_or_skip(name)
        return True
    except pytest.skip.Exception:
        return False


# --------------------------------------------------------------------------- where it does not
@pytest.mark.parametrize("name", sorted(NO_BF16))
def test_bf16_refused_with_the_reason(name):
    bk = backend_or_skip(name)
    if bk.device() != "cpu":
        pytest.skip("the refusal checked here is the CPU's")
    with pytest.raises(AmpError) as e:
        bk.Trainer.check_amp("bf16")
    assert bk.Trainer.FRAMEWORK in str(e.value) and NO_BF16[name] in str(e.value)
    net = bk.build(spec())
    with pytest.raises(AmpError, match=NO_BF16[name]):      # the Trainer itself refuses too
        bk.Trainer(net, amp="bf16")


@pytest.mark.parametrize("name", ["pytorch", "tensorflow", "paddle", "mxnet"])
def test_fp16_needs_a_gpu(name):
    bk = backend_or_skip(name)
    if bk.device() != "cpu":
        pytest.skip("a GPU is present")
    with pytest.raises(AmpError, match=f"--amp fp16 .* not available with {bk.Trainer.FRAMEWORK} "
                                       f"here: float16 mixed precision needs a GPU"):
        bk.Trainer.check_amp("fp16")
    assert bk.Trainer.check_amp(None) is None and bk.Trainer.check_amp(False) is None


# --------------------------------------------------------------------------- the command line
def only_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_train_fp16_on_the_cpu_is_one_error_line(tmp_path):
    """Refused before any data is read (the data folder does not even exist)."""
    pytest.importorskip("torch")
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    out = subprocess.run([sys.executable, "scripts/train.py", "--backend", "pytorch", "--amp", "fp16",
                          "--data-dir", str(tmp_path / "none"), "--run-dir", str(tmp_path / "run")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    line = only_error_line(out.stderr)
    assert "--amp fp16" in line and "PyTorch" in line and "needs a GPU" in line
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize("name", sorted(NO_BF16))
def test_train_bf16_refused_is_one_error_line(name, tmp_path, capsys):
    bk = backend_or_skip(name)
    if bk.device() != "cpu":
        pytest.skip("the refusal checked here is the CPU's")
    from cli.train import main
    assert main(["--backend", name, "--amp", "bf16", "--data-dir", str(tmp_path / "none")]) == 1
    line = only_error_line(capsys.readouterr().err)
    assert bk.Trainer.FRAMEWORK in line and NO_BF16[name] in line


def test_amp_is_recorded_passed_on_and_fixed_on_resume(tmp_path):
    """``--amp`` is a recipe field: the run record stores it, compare.py passes it to every
    backend, and ``--resume`` refuses another value (as the other defining options)."""
    from cli import compare, train
    from cli.errors import UserError
    from cli.options import recipe_from, run_changes
    args = train.parser().parse_args(["--amp", "bf16"])
    assert recipe_from(args).to_dict()["amp"] == "bf16"
    assert recipe_from(train.parser().parse_args([])).to_dict()["amp"] is None
    cmd = compare.train_command(compare.parser().parse_args(["--amp", "bf16"]), "pytorch", "run", "init.npz")
    assert cmd[cmd.index("--amp") + 1] == "bf16"
    run = tmp_path / "run"
    run.mkdir()
    for was, given, refused in ((None, "bf16", True), ("bf16", "fp16", True), ("bf16", "bf16", False),
                                ("bf16", None, False)):
        record = dict(backend="pytorch", model=dict(preset="d2l"), recipe=Recipe(amp=was).to_dict())
        (run / "run.json").write_text(json.dumps(record))
        args = train.parser().parse_args(["--resume", str(run)] + (["--amp", given] if given else []))
        assert bool(run_changes(args, record)) == refused
        if refused:
            with pytest.raises(UserError, match=f"--amp {given}: these options define the run"):
                train.resumed(args)
        else:
            assert train.resumed(args)[2].amp == was            # resumes with the run's own precision
