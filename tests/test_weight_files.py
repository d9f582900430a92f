"""Weight files from elsewhere (issue #17): every format checked like the neutral one, and no
code runs from a weight file.

* A file of another preset is refused in every format (``.npz``, ``.pt``, ``.weights.h5``,
  ``.params``, ``.pdparams``) with the project's own message naming the first bad tensor in
  canonical terms, and nothing is half-loaded (it was: a ``.pdparams`` was silently skipped by
  ``set_state_dict``; the other formats gave the framework's raw error).
* A pickle payload in a ``.pdparams``, a ``.pdopt``, a ``.pt`` (weights or optimiser) or
  MXNet's old ``optimizer.states`` does not run (the marker folder it would create is not
  created) and is refused naming the offending type.
* A truncated file of every format is one ``error:`` line from ``scripts/convert.py``.
* Every format still reads back bit-exactly, and the files stay loadable by the frameworks
  themselves.
"""
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from common.train import checkpoint
from common.net import spec as S, weights as W
from backends.config import BACKENDS
from tests.conftest import backend_or_skip

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORMATS = ["npz"] + list(BACKENDS)          # the neutral format, then each backend's own
SIZE = 32


def small(preset, **options):
    """A preset with every width quartered: the same structure and names, a fast build."""
    return S.scale_channels(S.googlenet(preset, **options), 0.25)


D2L = small("d2l")
BN = small("bn", in_channels=1, num_classes=10, aux_logits=False)
PAPER_AUX = small("paper", in_channels=1, num_classes=10, aux_logits=True)
PAPER = small("paper", in_channels=1, num_classes=10, aux_logits=False)
PAPER_RGB = small("paper", aux_logits=False)          # 3 input channels, 1000 classes


def perturbed(spec, size, seed=0):
    """Weights where every tensor matters (non-trivial biases and batch-norm statistics)."""
    w = W.xavier_init(spec, seed, size)
    rng = np.random.default_rng(seed + 1)
    for k, v in w.items():
        if k.endswith("running_var"):
            w[k] = rng.uniform(0.5, 2.0, v.shape).astype(np.float32)
        elif v.ndim == 1:
            w[k] = (v + rng.normal(0, 0.05, v.shape)).astype(np.float32)
    return w


def suffix(fmt):
    return ".npz" if fmt == "npz" else backend_or_skip(fmt).NATIVE_SUFFIX


def write(fmt, spec, size, path_stem, seed=0):
    """A file of ``spec`` in format ``fmt``, written the way its framework writes it."""
    path = str(path_stem) + suffix(fmt)
    weights = perturbed(spec, size, seed)
    if fmt == "npz":
        W.save(path, weights)
    else:
        bk = backend_or_skip(fmt)
        bk.save_native(bk.set_weights(bk.build(spec, input_size=size, seed=None), weights), path)
    return path, weights


def read(fmt, path, spec, size, **kw):
    """The one front door, as the commands use it."""
    native = None if fmt == "npz" else backend_or_skip(fmt).read_native
    return W.read(path, spec, size, native=native, **kw)


def convert(*args):
    """``scripts/convert.py`` in a subprocess: (exit code, stdout, stderr)."""
    out = subprocess.run([sys.executable, "scripts/convert.py", *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    return out.returncode, out.stdout, out.stderr


def only_error_line(err):
    lines = [l for l in err.strip().splitlines() if l.startswith("error: ") or "Traceback" in l]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


class Payload:
    """A pickle that creates the folder ``marker`` when it is unpickled (``os.mkdir``)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


class EvalPayload(Payload):
    """Paddle's own way of pickling a ``DenseTensor`` is ``eval``: refused all the same."""

    def __reduce__(self):
        return eval, (f"__import__('os').mkdir({self.marker!r})",)


# --------------------------------------------------------------------------- 1. one check
@pytest.mark.parametrize("fmt", FORMATS)
def test_another_preset_is_refused_naming_the_first_tensor(fmt, tmp_path, capsys):
    bn, _ = write(fmt, BN, SIZE, tmp_path / "bn")
    d2l, _ = write(fmt, D2L, SIZE, tmp_path / "d2l")
    with pytest.raises(W.WeightsMismatch) as e:
        read(fmt, bn, D2L, SIZE)
    assert str(e.value) == "layer 'b1.conv1.bias': missing from the weights (expected shape (16,))"
    with pytest.raises(W.WeightsMismatch) as e:
        read(fmt, d2l, BN, SIZE)
    assert str(e.value) == "layer 'b1.conv1.bn.weight': missing from the weights (expected shape (16,))"
    with pytest.raises(W.WeightsMismatch) as e:
        read(fmt, d2l, PAPER_RGB, 65)             # 3 input channels: the first conv's shape
    assert str(e.value) == ("layer 'b1.conv1.weight': shape (16, 1, 7, 7) does not match the "
                            "network's (16, 3, 7, 7)")
    from cli.convert import main                  # convert.py: the project's one line, not the
    out = str(tmp_path / "out.npz")               # framework's raw error; nothing written
    assert main([bn, out, "--input-size", str(SIZE), "--in-channels", "1", "--num-classes", "10"]) == 1
    assert only_error_line(capsys.readouterr().err) == (
        f"error: {bn} does not fit the d2l network: layer 'b1.conv1.weight': shape (16, 1, 7, 7) "
        f"does not match the network's (64, 1, 7, 7)")
    assert not os.path.exists(out)


@pytest.mark.parametrize("fmt", BACKENDS)
def test_load_native_of_another_preset_loads_nothing(fmt, tmp_path):
    bk = backend_or_skip(fmt)
    bn, _ = write(fmt, BN, SIZE, tmp_path / "bn")
    net = bk.build(D2L, input_size=SIZE, seed=0)
    before = bk.get_weights(net)
    with pytest.raises(W.WeightsMismatch, match=r"layer 'b1\.conv1\.bias': missing"):
        bk.load_native(net, bn)
    after = bk.get_weights(net)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=f"half-loaded: {k}")


@pytest.mark.parametrize("fmt", FORMATS)
def test_extra_tensors_are_refused_unless_asked(fmt, tmp_path):
    """A paper file with aux heads for the paper net without them: the heads are extra."""
    path, weights = write(fmt, PAPER_AUX, 65, tmp_path / "aux")
    heads = len(W.check(PAPER_AUX, weights, 65)) - len(W.xavier_init(PAPER, 0, 65))
    with pytest.raises(W.WeightsMismatch, match=fr"not part of the network \({heads} unexpected tensor"):
        read(fmt, path, PAPER, 65)
    got = read(fmt, path, PAPER, 65, allow_extra=True)
    assert list(got) == list(W.check(PAPER, W.xavier_init(PAPER, 0, 65), 65))
    for k in got:
        np.testing.assert_array_equal(got[k], weights[k], err_msg=k)


# what each framework's own loader calls, to show the files stay the frameworks' own
def _framework_load(fmt, net, path):
    if fmt == "pytorch":
        import torch
        net.load_state_dict(torch.load(path, weights_only=True))       # strict: every key
    elif fmt == "tensorflow":
        net.load_weights(path)
    elif fmt == "mxnet":
        net.load_parameters(path)
    else:
        import paddle
        missing, unexpected = net.set_state_dict(paddle.load(path))    # our own file: trusted
        assert not missing and not unexpected


@pytest.mark.parametrize("fmt", BACKENDS)
def test_every_preset_reads_back_bit_exactly(fmt, tmp_path):
    bk = backend_or_skip(fmt)
    for name, spec, size in (("d2l", D2L, SIZE), ("bn", BN, SIZE), ("paper-aux", PAPER_AUX, 65)):
        path, weights = write(fmt, spec, size, tmp_path / name, seed=3)
        got = read(fmt, path, spec, size)
        assert list(got) == list(weights), name
        for k in weights:
            np.testing.assert_array_equal(got[k], weights[k], err_msg=f"{name}: {k}")
        net = bk.build(spec, input_size=size, seed=0)
        _framework_load(fmt, net, path)
        theirs = bk.get_weights(net)
        for k in weights:
            np.testing.assert_array_equal(theirs[k], weights[k], err_msg=f"{name}, framework's loader: {k}")


def test_convert_refuses_a_pdparams_of_another_preset(tmp_path):
    """The issue's case: book-net weights saved as .pdparams, converted as the bn preset, were
    written out as 287 freshly initialised tensors.  Now: one error line, nothing written."""
    bk = backend_or_skip("paddle")
    src, out = str(tmp_path / "d2l.pdparams"), str(tmp_path / "out.npz")
    bk.save_native(bk.build("d2l", seed=0), src)
    code, stdout, err = convert(src, out, "--preset", "bn")
    assert code == 1, stdout + err
    line = only_error_line(err)
    assert line == (f"error: {src} does not fit the bn network: layer 'b1.conv1.weight': shape "
                    f"(64, 1, 7, 7) does not match the network's (64, 3, 7, 7)")
    assert not os.path.exists(out)


# --------------------------------------------------------------------------- 2. no code runs
def _payload_pt(path, marker, legacy=False):
    import torch
    torch.save({"stages.b1.conv1.conv.weight": Payload(marker)}, path,
               _use_new_zipfile_serialization=not legacy)


def _payload_pdparams(path, marker, payload=Payload, protocol=4):
    with open(path, "wb") as f:
        pickle.dump({"stages.b1.conv1.conv.weight": payload(marker)}, f, protocol=protocol)


@pytest.mark.parametrize("kind", ["pdparams", "pt", "pt-legacy"])
def test_pickle_payload_in_a_weight_file_does_not_run(kind, tmp_path):
    backend_or_skip("paddle" if kind == "pdparams" else "pytorch")
    marker = tmp_path / "payload-ran"
    src = str(tmp_path / ("evil.pdparams" if kind == "pdparams" else "evil.pt"))
    if kind == "pdparams":
        _payload_pdparams(src, marker)
    else:
        _payload_pt(src, marker, legacy=kind == "pt-legacy")
    code, stdout, err = convert(src, str(tmp_path / "out.npz"))
    assert code == 1, stdout + err
    line = only_error_line(err)
    assert f"{src}: refusing to unpickle posix.mkdir" in line or "refusing to unpickle nt.mkdir" in line
    assert not marker.exists(), "the payload ran"
    assert not (tmp_path / "out.npz").exists()


@pytest.mark.parametrize("payload, protocol", [(Payload, 2), (Payload, 4), (EvalPayload, 4)])
def test_pdparams_payloads_are_refused_by_the_python_api(payload, protocol, tmp_path):
    bk = backend_or_skip("paddle")
    marker = tmp_path / "payload-ran"
    path = str(tmp_path / "evil.pdparams")
    _payload_pdparams(path, marker, payload, protocol)
    net = bk.build(D2L, input_size=SIZE, seed=0)
    name = "builtins.eval" if payload is EvalPayload else "mkdir"
    with pytest.raises(W.WeightsError, match=f"refusing to unpickle .*{name}"):
        bk.load_native(net, path)
    with pytest.raises(W.WeightsError, match=f"refusing to unpickle .*{name}"):
        read("paddle", path, D2L, SIZE)
    assert not marker.exists(), "the payload ran"


def _checkpoint_dir(run, bk, spec, trainer):
    """A complete checkpoint folder as common.train.checkpoint writes it."""
    net = bk.build(spec, input_size=SIZE, seed=0)
    return checkpoint.save(bk, net, trainer(net), str(run), dict(epoch=1, history=[]))


def test_pdopt_payload_does_not_run_on_resume(tmp_path):
    """optimizer.pdopt in a run folder given to --resume: refused, unrun; the run's fallback
    reports it."""
    bk = backend_or_skip("paddle")
    marker = tmp_path / "payload-ran"
    ckpt = _checkpoint_dir(tmp_path / "run", bk, D2L, lambda net: bk.Trainer(net, momentum=0.9))
    _payload_pdparams(os.path.join(ckpt, "optimizer.pdopt"), marker)
    net = bk.build(D2L, input_size=SIZE, seed=0)
    trainer = bk.Trainer(net, momentum=0.9)
    with pytest.raises(W.WeightsError, match="optimizer.pdopt: refusing to unpickle posix.mkdir"):
        trainer.load_optimizer(ckpt)
    with pytest.raises(checkpoint.CheckpointError, match="refusing to unpickle posix.mkdir"):
        checkpoint.load(bk, net, trainer, str(tmp_path / "run"), log=lambda *a: None)
    assert not marker.exists(), "the payload ran"


def test_torch_optimizer_payload_does_not_run(tmp_path):
    bk = backend_or_skip("pytorch")
    import torch
    marker = tmp_path / "payload-ran"
    ckpt = _checkpoint_dir(tmp_path / "run", bk, D2L, lambda net: bk.Trainer(net, momentum=0.9))
    torch.save({"state": {0: {"momentum_buffer": Payload(marker)}}, "param_groups": []},
               os.path.join(ckpt, "optimizer.pt"))
    net = bk.build(D2L, input_size=SIZE, seed=0)
    with pytest.raises(checkpoint.CheckpointError, match="mkdir"):
        checkpoint.load(bk, net, bk.Trainer(net, momentum=0.9), str(tmp_path / "run"), log=lambda *a: None)
    assert not marker.exists(), "the payload ran"


def test_mxnet_optimizer_state_is_no_pickle(tmp_path):
    """Gluon's save_states / load_states pickle; the checkpoint keeps arrays instead, and an old
    pickled optimizer.states is never unpickled."""
    bk = backend_or_skip("mxnet")
    ckpt = _checkpoint_dir(tmp_path / "run", bk, D2L, lambda net: bk.Trainer(net, momentum=0.9))
    assert "optimizer.states.npz" in os.listdir(ckpt) and "optimizer.states" not in os.listdir(ckpt)
    np.load(os.path.join(ckpt, "optimizer.states.npz"), allow_pickle=False).close()
    marker = tmp_path / "payload-ran"
    os.remove(os.path.join(ckpt, "optimizer.states.npz"))
    with open(os.path.join(ckpt, "optimizer.states"), "wb") as f:
        pickle.dump(Payload(marker), f)
    net = bk.build(D2L, input_size=SIZE, seed=0)
    with pytest.raises(W.WeightsError, match="as a Python pickle.*not read.*--init-from"):
        bk.Trainer(net, momentum=0.9).load_optimizer(ckpt)
    assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize("name", ["mxnet", "paddle"])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_optimizer_state_resumes_exactly(name, optimizer, tmp_path):
    """The state files that replaced the pickles: two steps, save, load into a new trainer,
    two more steps == four steps straight."""
    bk = backend_or_skip(name)
    spec = S.scale_channels(S.googlenet("bn", in_channels=1, num_classes=10, aux_logits=False,
                                        dropout=0.0), 0.125)
    kw = dict(sgd=dict(lr=0.01), momentum=dict(lr=0.01, momentum=0.9, weight_decay=1e-3),
              adam=dict(lr=1e-3))[optimizer]
    opt = "adam" if optimizer == "adam" else "sgd"

    def batch(i):
        rng = np.random.default_rng(i)
        return bk.to_tensor(rng.random((4, 1, SIZE, SIZE), dtype=np.float32)), bk.to_tensor(np.arange(4))

    straight = bk.build(spec, input_size=SIZE, seed=1)
    t = bk.Trainer(straight, optimizer=opt, **kw)
    for i in range(4):
        t.train_step(*batch(i))
    first = bk.build(spec, input_size=SIZE, seed=1)
    t = bk.Trainer(first, optimizer=opt, **kw)
    for i in range(2):
        t.train_step(*batch(i))
    t.save_optimizer(str(tmp_path))
    resumed = bk.set_weights(bk.build(spec, input_size=SIZE, seed=5), bk.get_weights(first))
    t = bk.Trainer(resumed, optimizer=opt, **kw)
    t.load_optimizer(str(tmp_path))
    for i in range(2, 4):
        t.train_step(*batch(i))
    a, b = bk.get_weights(straight), bk.get_weights(resumed)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# --------------------------------------------------------------------------- 3. damaged files
@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_file_is_one_error_line(fmt, tmp_path, capsys):
    from cli.convert import main
    path, _ = write(fmt, D2L, SIZE, tmp_path / "w")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    out = str(tmp_path / "out.npz")
    assert main([path, out, "--input-size", str(SIZE)]) == 1
    line = only_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {path}: not a readable") and "\n" not in line
    assert not os.path.exists(out)


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(W.WeightsError, match="unknown weight format"):
        W.read(str(tmp_path / "w.onnx"), D2L, SIZE)
    with pytest.raises(FileNotFoundError):
        W.read(str(tmp_path / "w.npz"), D2L, SIZE)


def test_npz_with_pickled_objects_is_refused(tmp_path):
    marker = tmp_path / "payload-ran"
    path = str(tmp_path / "w.npz")
    np.savez(path, **{"b1.conv1.weight": np.array([Payload(marker)], dtype=object)})
    with pytest.raises(W.WeightsError, match="not a readable weight file"):
        W.read(path, D2L, SIZE)
    assert not marker.exists()


# --------------------------------------------------------------------------- the commands
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from tests.datagen import make_dataset
    tmp = tmp_path_factory.mktemp("wf")
    os.environ["GOOGLENET_CACHE"] = str(tmp / "cache")
    return make_dataset(str(tmp / "data"), n_train=64, n_test=32)


def test_init_from_and_evaluate_take_a_native_file(data, tmp_path, capsys):
    """--init-from and evaluate.py read .pt (any format) through the same check."""
    bk = backend_or_skip("pytorch")
    from cli.evaluate import main as evaluate
    from cli.train import main as train
    good, bad = str(tmp_path / "d2l.pt"), str(tmp_path / "bn.pt")
    bk.save_native(bk.build("d2l", seed=4), good)
    bk.save_native(bk.build("bn", in_channels=1, num_classes=10, aux_logits=False, seed=4), bad)
    common = ["--no-progress", "--backend", "pytorch", "--data-dir", data, "--resize", "32",
              "--batch-size", "32", "--epochs", "1"]
    assert train([*common, "--init-from", bad, "--run-dir", str(tmp_path / "bad")]) == 1
    line = only_error_line(capsys.readouterr().err)
    assert line == (f"error: --init-from {bad} does not fit the d2l network: layer 'b1.conv1.bias': "
                    f"missing from the weights (expected shape (64,))")
    assert not os.path.exists(tmp_path / "bad")
    assert train([*common, "--init-from", good, "--run-dir", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert json.load(open(tmp_path / "run" / "run.json"))["init_from"] == good
    assert evaluate([good, "--backend", "pytorch", "--data-dir", data, "--resize", "32"]) == 0
    assert "test acc" in capsys.readouterr().out
    assert evaluate([bad, "--backend", "pytorch", "--data-dir", data, "--resize", "32"]) == 1
    line = only_error_line(capsys.readouterr().err)
    assert "does not fit the d2l network at 32x32: layer 'b1.conv1.bias': missing" in line


def test_resume_checks_the_checkpoint_weights(tmp_path):
    """A checkpoint whose weights.npz is another preset's: refused naming the tensor."""
    bk = backend_or_skip("pytorch")
    ckpt = _checkpoint_dir(tmp_path / "run", bk, BN, lambda net: bk.Trainer(net))
    net = bk.build(D2L, input_size=SIZE, seed=0)
    with pytest.raises(checkpoint.CheckpointError, match=r"layer 'b1\.conv1\.bias': missing"):
        checkpoint.load(bk, net, None, str(tmp_path / "run"), log=lambda *a: None)
    assert os.path.isdir(ckpt)
