"""Fine-tuning (docs/finetune.md, common/train/finetune.py, each backend's ``Trainer.apply_finetune``).

From random "pretrained" weights of 7 classes (non-trivial biases and batch-norm
statistics, so that every tensor matters) to a 3-class image folder:

* the start: the classifiers (the main head's and the aux head's last dense layers) have the
  new classes and hold ``xavier_init``'s arrays for them; every other tensor is the file's,
  bit for bit; a body that does not fit is refused as before, naming its first bad tensor;
* on every backend, ``freeze='body'``: the frozen tensors (weights and batch-norm running
  statistics) do not change, bit for bit, over several steps with momentum and weight
  decay, while the head does; the training step's loss equals the evaluation loss of the same
  batch (the frozen batch norms normalise with their running statistics: inference mode),
  and without the freeze it does not (the check can fail);
* on every backend, ``body_lr_factor``: one SGD step (momentum, weight decay) moves the body
  by ``f`` times what it moves with ``f = 1`` and the head the same; ``f = 0`` leaves every
  body weight as it was, bit for bit;
* on every backend, a fine-tuning run stopped after its first epoch and resumed ends on the
  weights of an uninterrupted one (tests/test_training.py's tolerance), its frozen stages
  still the file's;
* ``scripts/train.py`` on an image folder (PyTorch in CI; every backend, and two workers, with
  ``GOOGLENET_LONG=1``): the line naming the re-initialised layers, the record, ``--resume``.
"""
import json
import os

import numpy as np
import pytest

from backends.config import BACKENDS
from common.inputs.datasets import load_dataset
from common.net import spec as S, weights as W
from common.train import finetune as F
from common.train.loop import fit
from common.train.train_config import Recipe
from tests.conftest import backend_or_skip
from tests.datagen import make_image_folder
from tests.test_equivalence import perturbed

LONG = os.environ.get("GOOGLENET_LONG", "") not in ("", "0")
SIZE = 16
QUIET = dict(progress=False, log=lambda *a: None)


def tiny(classes):
    """A small table with what fine-tuning touches: batch norm in the body (a conv and an
    Inception block), a head stage, an aux head with its own batch norm; no dropout."""
    return S.Spec("ft", 3, SIZE, (
        S.stage("s1", S.Conv(8, 3, 1, 1, norm="bn"), S.MaxPool(3, 2, 1)),
        S.stage("s2", S.Inception(4, (4, 8), (2, 4), 4, norm="bn"), S.MaxPool(3, 2, 1)),
        S.stage("s3", S.Conv(16, 3, 1, 1, norm="bn")),
        S.stage("head", S.GlobalAvgPool(), S.Flatten(), S.Dense(classes))),
        aux=(S.AuxHead("aux1", "s2.inception1", S.branch(S.Conv(8, 1, norm="bn"), S.GlobalAvgPool(),
                                                         S.Flatten(), S.Dense(classes))),))


PRE, NEW = tiny(7), tiny(3)


@pytest.fixture(scope="module")
def pretrained():
    return perturbed(PRE, 5)


@pytest.fixture(scope="module")
def start(pretrained):
    return F.start_weights(NEW, pretrained, seed=0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ft")
    os.environ["GOOGLENET_CACHE"] = str(tmp / "cache")
    return make_image_folder(str(tmp / "pics"), n_classes=3, n_train=4, n_test=2)


@pytest.fixture(scope="module")
def data(folder):
    return load_dataset("folder", folder, SIZE)


def batch(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (n, 3, SIZE, SIZE)).astype(np.float32), (np.arange(n) % 3).astype(np.int64)


# --------------------------------------------------------------------------- the start (no framework)
def test_the_start_keeps_the_body_and_renews_the_classifiers(pretrained, start):
    fresh = W.xavier_init(NEW, 0)
    assert [q for q, _ in start.reinitialised] == ["head.dense1", "aux1.dense1"]
    assert F.classifiers(NEW) == ["head.dense1", "aux1.dense1"]
    for k, v in start.weights.items():
        if k.startswith(("head.dense1.", "aux1.dense1.")):
            assert v.shape[0] == 3 and np.array_equal(v, fresh[k]), k
        else:
            assert np.array_equal(v, pretrained[k]), k
    assert start.line("--init-from w.npz") == (
        "--init-from w.npz: re-initialised head.dense1 (7 -> 3 classes), aux1.dense1 (7 -> 3 classes) "
        f"with the recipe's initialisation (seed 0); the other {len(start.weights) - 4} tensors are the file's")
    same = F.start_weights(PRE, pretrained)                   # same classes: nothing renewed
    assert not same.reinitialised and all(np.array_equal(same.weights[k], pretrained[k]) for k in pretrained)


def test_aux_heads_kept_renewed_or_dropped_and_a_file_without_its_top(pretrained):
    fresh = W.xavier_init(NEW, 4)
    renewed = F.start_weights(NEW, pretrained, seed=4, aux="reinit")
    assert [q for q, _ in renewed.reinitialised] == ["head.dense1", "aux1"]
    for k, v in renewed.weights.items():
        expect = fresh[k] if k.startswith(("aux1.", "head.")) else pretrained[k]
        assert np.array_equal(v, expect), k
    no_aux = S.Spec("ft", 3, SIZE, NEW.stages)
    dropped = F.start_weights(no_aux, pretrained, aux="drop", aux_heads=["aux1"])
    assert set(dropped.weights) == set(W.xavier_init(no_aux, 0)) and dropped.record()["dropped"] == ["aux1"]
    with pytest.raises(W.WeightsMismatch, match="'aux1.conv1.weight': not part of the network"):
        F.start_weights(no_aux, pretrained)                   # kept: the net has no aux head for them
    top = {k: v for k, v in pretrained.items() if not k.startswith("head.")}
    headless = F.start_weights(NEW, top)
    assert headless.reinitialised[0] == ("head.dense1", "not in the file")


def test_a_body_that_does_not_fit_is_refused_naming_its_first_bad_tensor(pretrained):
    other = dict(pretrained, **{"s3.conv1.weight": np.zeros((16, 7, 3, 3), np.float32)})
    with pytest.raises(W.WeightsMismatch, match=r"'s3.conv1.weight': shape \(16, 7, 3, 3\) does not match"):
        F.start_weights(NEW, other)
    wide = dict(pretrained, **{"head.dense1.weight": np.zeros((7, 32), np.float32)})    # other features
    with pytest.raises(W.WeightsMismatch, match="'head.dense1.weight': shape"):
        F.start_weights(NEW, wide)


def test_freeze_names_stages_and_roles():
    assert F.frozen_stages(NEW, "body") == F.frozen_stages(NEW, "features") == ("s1", "s2", "s3")
    assert F.frozen_stages(NEW, "upto:s2") == ("s1", "s2") and F.frozen_stages(NEW, None) == ()
    for bad, said in (("upto:head", "'head' is the head"), ("upto:s9", "no stage 's9'"), ("all", "takes none")):
        with pytest.raises(F.FreezeError, match=said):
            F.frozen_stages(NEW, bad)
    roles = F.roles(NEW, "upto:s1")
    assert roles["s1.conv1.bn.running_mean"] == "frozen" and roles["s2.inception1.p1_1.weight"] == "body"
    assert roles["aux1.conv1.weight"] == roles["head.dense1.bias"] == "head"
    assert F.frozen_layers(NEW, "upto:s1") == ["s1.conv1"]


# --------------------------------------------------------------------------- every backend
def _changed(before, after, names):
    return [k for k in names if not np.array_equal(before[k], after[k])]


@pytest.mark.parametrize("name", BACKENDS)
def test_a_frozen_body_does_not_move_and_its_batch_norms_infer(name, start):
    bk = backend_or_skip(name)
    X, y = batch()
    losses = {}
    for freeze in ("none", "body"):
        net = bk.build(NEW, weights=start.weights)
        trainer = bk.Trainer(net, lr=0.1, momentum=0.9, weight_decay=1e-2, aux_weight=0.0, freeze=freeze,
                             fast=freeze == "body")           # the control eager: CI time
        evaluated = trainer.eval_step(bk.to_tensor(X), bk.to_tensor(y))[0]
        trained = trainer.train_step(bk.to_tensor(X), bk.to_tensor(y))[0]
        losses[freeze] = (evaluated, trained)
    # frozen: the step normalises as evaluation does (fast graphs differ from eval in the last bits)
    assert losses["body"][1] == pytest.approx(losses["body"][0], rel=1e-5)
    # not frozen: batch statistics, another loss (so the check above can fail)
    assert abs(losses["none"][1] - losses["none"][0]) > 1e-3 * losses["none"][0]
    for _ in range(2):
        trainer.train_step(bk.to_tensor(X), bk.to_tensor(y))
    after, roles = bk.get_weights(net), F.roles(NEW, "body")
    frozen = [k for k, r in roles.items() if r == "frozen"]
    assert any(k.endswith("running_var") for k in frozen)
    assert _changed(start.weights, after, frozen) == []
    head = [k for k, r in roles.items() if r == "head"]
    # trained (the aux head by weight decay alone: aux_weight 0), its batch norm in training mode
    assert {"head.dense1.weight", "head.dense1.bias", "aux1.conv1.weight", "aux1.conv1.bn.running_mean",
            "aux1.conv1.bn.running_var"} <= set(_changed(start.weights, after, head))


@pytest.mark.parametrize("name", BACKENDS)
def test_the_body_learning_rate_is_a_factor_of_the_heads(name, start):
    bk = backend_or_skip(name)
    X, y = batch(seed=1)
    roles = F.roles(NEW)
    steps = {}
    for f in (1.0, 0.25, 0.0):
        net = bk.build(NEW, weights=start.weights)
        bk.Trainer(net, lr=0.1, momentum=0.9, weight_decay=1e-2, body_lr_factor=f).train_step(
            bk.to_tensor(X), bk.to_tensor(y))         # the same gradients, bit for bit (one path)
        steps[f] = {k: v - start.weights[k] for k, v in bk.get_weights(net).items()}
    learnt = [k for k in roles if "running_" not in k]
    for k in learnt:
        p = np.abs(start.weights[k]) + np.abs(steps[1.0][k])
        # each new weight is rounded once (half an ulp, at most 2^-24 |p|): the steps differ by
        # at most (1 + f) of that; the update's own arithmetic adds a few roundings of the step
        bound = 2.0 ** -23 * p + 1e-5 * np.abs(steps[1.0][k])
        f = 0.25 if roles[k] == "body" else 1.0
        assert np.all(np.abs(steps[0.25][k] - f * steps[1.0][k]) <= bound), k
        if roles[k] == "body":
            assert np.all(steps[0.0][k] == 0), k
        else:
            assert np.all(np.abs(steps[0.0][k] - steps[1.0][k]) <= bound), k
    assert any(np.abs(steps[1.0][k]).max() > 1e-4 for k in learnt if roles[k] == "body")


@pytest.mark.parametrize("name", BACKENDS)
def test_a_resumed_fine_tuning_run_continues_exactly(name, start, data, tmp_path):
    bk = backend_or_skip(name)
    recipe = Recipe(num_epochs=2, batch_size=4, lr=0.05, momentum=0.9, weight_decay=1e-3, resize=SIZE, seed=1,
                    freeze="upto:s2", body_lr_factor=0.5, schedule="cosine")
    quiet = dict(QUIET, fast=False)                         # eager (CI time; the fast paths: above)
    straight = bk.build(NEW, weights=start.weights)
    a = fit(bk, straight, *data.recipe_loaders(recipe), recipe, str(tmp_path / "a"), **quiet)
    fit(bk, bk.build(NEW, weights=start.weights), *data.recipe_loaders(recipe), recipe, str(tmp_path / "b"),
        stop_after=1, **quiet)
    resumed = bk.build(NEW, seed=7)                         # other weights: the checkpoint wins
    b = fit(bk, resumed, *data.recipe_loaders(recipe), recipe, str(tmp_path / "b"), resume=True, **quiet)
    assert json.load(open(tmp_path / "b" / "run.json"))["recipe"]["freeze"] == "upto:s2"
    wa, wb = bk.get_weights(straight), bk.get_weights(resumed)
    for k in wa:                                            # tests/test_training.py's tolerance
        np.testing.assert_allclose(wa[k], wb[k], rtol=1e-5, atol=1e-6, err_msg=k)
    for k, r in F.roles(NEW, "upto:s2").items():
        assert (r == "frozen") == np.array_equal(wb[k], start.weights[k]), k
    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5, abs=1e-6)


# --------------------------------------------------------------------------- the command
CLI_BACKENDS = BACKENDS if LONG else ["pytorch"]


@pytest.fixture(scope="module")
def pre_file(tmp_path_factory):
    """A 7-class "pretrained" file of the bn preset (RGB, aux heads) at 65x65."""
    spec = S.get_spec("bn", in_channels=3, num_classes=7, aux_logits=True, input_size=65)
    path = str(tmp_path_factory.mktemp("pre") / "pre7.npz")
    W.save(path, perturbed(spec, 9), spec="bn", input_size=65)
    return path


@pytest.mark.parametrize("name", CLI_BACKENDS)
def test_fine_tuning_from_the_command_line(name, pre_file, folder, tmp_path, capsys):
    backend_or_skip(name)
    from cli.train import main as train
    run = str(tmp_path / "run")
    common = ["--no-progress", "--no-tensorboard", "--backend", name, "--dataset", "folder", "--data-dir", folder,
              "--preset", "bn", "--resize", "65", "--batch-size", "6"]
    assert train([*common, "--epochs", "1", "--init-from", pre_file, "--freeze", "body", "--run-dir", run]) == 0
    out = capsys.readouterr().out
    assert (f"--init-from {pre_file}: re-initialised head.dense1 (7 -> 3 classes), aux1.dense2 (7 -> 3 classes), "
            f"aux2.dense2 (7 -> 3 classes) with the recipe's initialisation (seed 0); the other 299 tensors "
            f"are the file's") in out
    assert "frozen: b1, b2, b3, b4, b5 (5,980,832 parameters; their 57 batch norms in inference mode)" in out
    rec = json.load(open(os.path.join(run, "run.json")))
    assert rec["recipe"]["freeze"] == "body" and rec["aux_init"] == "keep" and rec["model"]["num_classes"] == 3
    assert rec["init"]["reinitialised"] == ["head.dense1", "aux1.dense2", "aux2.dense2"]
    assert train(["--resume", run, "--epochs", "2", "--freeze", "none"]) == 1
    assert "--freeze none: these options define the run" in capsys.readouterr().err
    assert train(["--resume", run, "--epochs", "2", "--no-progress", "--no-tensorboard"]) == 0
    assert "frozen: b1, b2, b3, b4, b5" in capsys.readouterr().out       # applied again
    pre, now = W.load(pre_file), W.load(os.path.join(run, "checkpoint", "weights.npz"))
    body = [k for k in now if k.split(".")[0] in ("b1", "b2", "b3", "b4", "b5")]
    assert len(body) == 285 and all(np.array_equal(now[k], pre[k]) for k in body)
    assert not np.array_equal(now["aux1.dense1.weight"], pre["aux1.dense1.weight"])


def test_the_command_refuses_what_does_not_fit(pre_file, folder, tmp_path, capsys):
    backend_or_skip("pytorch")
    from cli.train import main as train
    common = ["--no-progress", "--backend", "pytorch", "--dataset", "folder", "--data-dir", folder,
              "--preset", "bn", "--resize", "65", "--epochs", "1", "--run-dir", str(tmp_path / "r"),
              "--init-from", pre_file]
    for extra, said in ((["--no-aux"], "not part of the network (18 unexpected tensor(s)); --aux-init drop leaves"),
                        (["--num-classes", "4"], "--num-classes 4: the data in"),
                        (["--freeze", "upto:b9"], "--freeze upto:b9: the network has no stage 'b9'"),
                        (["--channels", "1"], "the file's first layer takes 3 channel(s), the data have 1: "
                                              "--channels 3")):
        assert train([*common, *extra]) == 1, extra
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and said in err, err
    assert not os.path.exists(tmp_path / "r")


@pytest.mark.skipif(not LONG, reason="GOOGLENET_LONG=1: fine-tuning on two workers")
@pytest.mark.parametrize("name", BACKENDS)
def test_fine_tuning_on_two_workers(name, pre_file, folder, tmp_path):
    import subprocess
    import sys
    backend_or_skip(name)
    run = str(tmp_path / "run")
    out = subprocess.run([sys.executable, "scripts/train.py", "--no-progress", "--no-tensorboard", "--backend",
                          name, "--dataset", "folder", "--data-dir", folder, "--preset", "bn", "--resize", "65",
                          "--batch-size", "6", "--epochs", "1", "--init-from", pre_file, "--freeze", "upto:b4",
                          "--body-lr-factor", "0.1", "--aux-init", "drop", "--nproc-per-node", "2",
                          "--run-dir", run], cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rec = json.load(open(os.path.join(run, "run.json")))
    assert rec["world_size"] == 2 and rec["recipe"]["freeze"] == "upto:b4"
    pre, now = W.load(pre_file), W.load(os.path.join(run, "checkpoint", "weights.npz"))
    for k in now:
        stage = k.split(".")[0]
        if stage in ("b1", "b2", "b3", "b4"):
            assert np.array_equal(now[k], pre[k]), k
        elif stage == "b5" and "running_" not in k and k.endswith("weight"):
            assert not np.array_equal(now[k], pre[k]), k
