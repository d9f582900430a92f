"""The command lines: layers point one way, and every user mistake is one ``error:`` line.

Each bad input of the house-keeping issue has its test here: a damaged last checkpoint
(fallback to the one before), every checkpoint damaged, a full disk while writing a
checkpoint, defining options changed on --resume, weights of another preset given to
evaluate.py, and a user error in every script (exit code 1, one line, no traceback).
"""
import ast
import errno
import importlib.util
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from common.train import checkpoint
from common.net import spec as S, weights as W
from tests.datagen import module_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMEWORKS = {"torch", "tensorflow", "mxnet", "paddle", "keras"}


def imports(path):
    """Top-level package names a Python file imports (absolute imports only)."""
    tree = ast.parse(open(path).read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def py_files(folder):
    return [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(ROOT, folder)) for f in fs
            if f.endswith(".py")]


def test_layers_point_one_way():
    """common -> backends -> cli: common imports neither (nor a framework), backends no cli."""
    for path in py_files("common"):
        bad = imports(path) & (FRAMEWORKS | {"backends", "cli", "scripts"})
        assert not bad, f"{os.path.relpath(path, ROOT)} imports {bad}"
    for path in py_files("backends"):
        bad = imports(path) & {"cli", "scripts"}
        assert not bad, f"{os.path.relpath(path, ROOT)} imports {bad}"
    assert py_files("common") and py_files("backends") and py_files("cli")


# --------------------------------------------------------------------------- training runs
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    pytest.importorskip("torch")
    return module_dataset(tmp_path_factory, "cli", n_train=64, n_test=32)


def train(args, capsys):
    """``scripts/train.py`` in this process: (exit code, stdout, stderr)."""
    from cli.train import main
    code = main(["--no-progress", "--backend", "pytorch", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def new_run(data, run, capsys, epochs=2):
    code, out, err = train(["--data-dir", data, "--resize", "32", "--batch-size", "32",
                            "--epochs", str(epochs), "--run-dir", run], capsys)
    assert code == 0, err
    return run


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def only_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_damaged_last_checkpoint_falls_back_to_the_one_before(data, tmp_path, capsys):
    run = new_run(data, str(tmp_path / "run"), capsys)
    assert checkpoint._order(os.path.join(run, "checkpoint.prev")) == (1, 0)        # (epoch, step)
    truncate(os.path.join(run, "checkpoint", "weights.npz"))
    code, out, err = train(["--resume", run, "--epochs", "3"], capsys)
    assert code == 0, err
    assert "is damaged" in out and "fell back to" in out and "(epoch 1)" in out
    assert "resumed from" in out and "after epoch 1" in out
    rec = json.load(open(os.path.join(run, "run.json")))
    assert rec["epochs_done"] == 3 and [h["epoch"] for h in rec["history"]] == [1, 2, 3]
    from common.runtime import cpu_summary
    assert rec["cpu"] == cpu_summary() and rec["cpu"].split("; ")[1]    # the CPU and its flags


def test_every_checkpoint_damaged_is_one_error_line(data, tmp_path, capsys):
    run = new_run(data, str(tmp_path / "run"), capsys)
    for name in ("checkpoint", "checkpoint.prev"):
        truncate(os.path.join(run, name, "weights.npz"))
    code, out, err = train(["--resume", run, "--epochs", "3"], capsys)
    assert code == 1
    line = only_error_line(err)
    assert "no checkpoint of" in line and "checkpoint.prev" in line


def test_full_disk_while_checkpointing_loses_nothing(data, tmp_path, capsys, monkeypatch):
    """The second epoch's checkpoint hits a full disk half-way through its weight file."""
    run = str(tmp_path / "run")
    real, calls = np.savez, []

    def savez(file, **arrays):
        calls.append(file)
        if len(calls) < 2:
            return real(file, **arrays)
        with open(file, "wb") as f:
            f.write(b"PK\x03\x04 half a file")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(W.np, "savez", savez)
    code, out, err = train(["--data-dir", data, "--resize", "32", "--batch-size", "32", "--epochs", "3",
                            "--run-dir", run], capsys)
    assert code == 1
    line = only_error_line(err)
    assert "no space left" in line and run in line and "MB" in line and f"--resume {run}" in line
    assert not os.path.exists(os.path.join(run, "checkpoint.new"))
    assert [f for f in os.listdir(os.path.join(run, "checkpoint")) if f.endswith(".npz")] == ["weights.npz"]
    assert checkpoint.candidates(run) == [os.path.join(run, "checkpoint")]     # epoch 1, intact
    assert json.load(open(os.path.join(run, "run.json")))["epochs_done"] == 1
    monkeypatch.setattr(W.np, "savez", real)
    code, out, err = train(["--resume", run, "--epochs", "2"], capsys)
    assert code == 0 and "after epoch 1" in out, err


@pytest.mark.parametrize("flags, named", [(["--batch-size", "64"], "--batch-size 64"),
                                           (["--lr", "0.5", "--seed", "3"], "--lr 0.5, --seed 3"),
                                           (["--preset", "bn"], "--preset bn")])
def test_resume_refuses_options_that_define_the_run(data, tmp_path, capsys, flags, named):
    run = new_run(data, str(tmp_path / "run"), capsys, epochs=1)
    before = open(os.path.join(run, "run.json")).read()
    code, out, err = train(["--resume", run, "--epochs", "2", *flags], capsys)
    assert code == 1
    line = only_error_line(err)
    assert named in line and "cannot change" in line
    if flags[0] == "--batch-size":
        assert "--batch-size 32" in line                   # what the run was trained with
    assert open(os.path.join(run, "run.json")).read() == before        # nothing touched
    code, out, err = train(["--resume", run, "--epochs", "2", "--batch-size", "32"], capsys)
    assert code == 0, err                                   # the run's own value is fine


def test_evaluate_refuses_weights_of_another_preset_or_size(data, tmp_path, capsys):
    from cli.evaluate import main
    run = new_run(data, str(tmp_path / "run"), capsys, epochs=1)
    assert main([run, "--backend", "pytorch"]) == 0
    assert "test acc" in capsys.readouterr().out
    assert main([run, "--preset", "bn", "--no-aux", "--backend", "pytorch"]) == 1
    line = only_error_line(capsys.readouterr().err)
    assert "does not fit the bn network" in line and "b1.conv1" in line
    paper = S.googlenet("paper", aux_logits=True, in_channels=1, num_classes=10)
    path = W.save(str(tmp_path / "paper224.npz"), W.xavier_init(paper, 0, 224), spec="paper", input_size=224)
    assert main([path, "--preset", "paper", "--aux", "--resize", "112", "--backend", "pytorch",
                 "--data-dir", data]) == 1
    line = only_error_line(capsys.readouterr().err)
    assert "at 112x112" in line and "aux" in line and "shape" in line


# --------------------------------------------------------------------------- the family's members
def test_a_new_members_run_and_its_bare_weight_file_evaluate(data, tmp_path, capsys):
    """A run of torchvision's GoogLeNet (ceil-mode pools, aux heads with adaptive pooling)
    evaluates with another backend, and its checkpoint's weight file alone with no
    ``--preset``: the file's recorded table (``tv_googlenet*``) names the member."""
    from cli.evaluate import main, preset_of
    run = str(tmp_path / "run")
    code, out, err = train(["--preset", "tv_googlenet", "--data-dir", data, "--resize", "32", "--batch-size", "32",
                            "--epochs", "1", "--run-dir", run], capsys)
    assert code == 0 and "tv_googlenet net" in out, err
    backend = "mxnet" if importlib.util.find_spec("mxnet") else "pytorch"
    assert main([run, "--backend", backend]) == 0
    assert f"{backend} on cpu: test loss" in capsys.readouterr().out
    bare = str(tmp_path / "weights.npz")
    with open(os.path.join(run, "checkpoint", "weights.npz"), "rb") as f, open(bare, "wb") as g:
        g.write(f.read())
    assert W.meta(bare)["spec"] == "tv_googlenet*"
    assert main([bare, "--backend", "pytorch", "--data-dir", data, "--resize", "32"]) == 0, capsys.readouterr().err
    with open(os.path.join(run, "run.json")) as f:
        acc = json.load(f)["test_acc"]
    assert f"test acc {acc:.4f}" in capsys.readouterr().out                # the run's own number
    assert [preset_of(n) for n in ("keras_inception_v3", "inception_v3*", "halved", None, "bn")] == \
        ["keras_inception_v3", "inception_v3", "d2l", "d2l", "bn"]


def test_compare_trains_a_new_member(data, tmp_path):
    """scripts/compare.py with --preset paddle_googlenet: the shared initial weights are the
    member's, the backend trains it, the report names it."""
    from common.results import report as R
    out = str(tmp_path / "report")
    p = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "compare.py"), "--backends", "pytorch",
                        "--preset", "paddle_googlenet", "--no-aux", "--data-dir", data, "--resize", "61",
                        "--batch-size", "32", "--epochs", "1", "--limit", "32", "--out", out],
                       capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rec = json.load(open(os.path.join(out, "runs", "pytorch", "run.json")))
    assert rec["model"]["preset"] == "paddle_googlenet" and rec["model"]["aux_logits"] is False
    assert W.meta(os.path.join(out, "init-weights.npz"))["spec"] == "paddle_googlenet*"
    with open(os.path.join(out, "report.md")) as f:
        assert '"preset": "paddle_googlenet"' in f.read()
    assert R.load_run(os.path.join(out, "runs", "pytorch"))["record"]["complete"]


# --------------------------------------------------------------------------- every script
BAD = {
    "train.py": (["--batch-size", "0"], "--batch-size must be at least 1"),
    "train_paddle.py": (["--resume", "/nonexistent/run"], "not a run folder"),
    "evaluate.py": (["/nonexistent/weights.npz"], "does not exist"),
    "convert.py": (["a.npz", "b.onnx"], "unknown format"),
    "summary.py": (["--backend", "caffe"], "unknown backend 'caffe'"),
    "compare.py": (["--backends", "pytorch,caffe"], "unknown backend 'caffe'"),
    "bench.py": (["--configs", "book,turbo"], "unknown config 'turbo'"),
    "fidelity.py": (["--backends", "caffe"], "unknown backend 'caffe'"),
    "export.py": (["/nonexistent/run", "model.onnx"], "does not exist"),
    "predict.py": (["/nonexistent/run", "shirt.png"], "does not exist"),
    "run_notebook.py": (["--backend", "caffe"], "unknown backend 'caffe'"),
}


@pytest.mark.parametrize("script", sorted(BAD))
def test_every_script_gives_one_error_line(script, tmp_path):
    args, words = BAD[script]
    out = subprocess.run([sys.executable, os.path.join("scripts", script), *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr[-2000:]
    assert words in only_error_line(out.stderr)


#: scripts/<name>.py -> its ``googlenet`` command (``train_<framework>.py``: ``train --backend``)
COMMAND_OF = {"run_notebook.py": ["notebook"], "train_paddle.py": ["train", "--backend", "paddle"]}


@pytest.mark.parametrize("script", sorted(BAD))
def test_every_command_gives_its_scripts_error_line(script, capsys):
    """``googlenet <command> ...`` hands the rest of the line to the script's ``main``."""
    from cli.main import main
    args, words = BAD[script]
    assert main(COMMAND_OF.get(script, [script[:-3]]) + args) == 1
    assert words in only_error_line(capsys.readouterr().err)


def test_googlenet_lists_one_command_per_script(capsys):
    """No command, ``--help`` or ``help``: every command with one line; one per script."""
    from cli.main import COMMANDS, main
    scripts = {f[:-3] for f in os.listdir(os.path.join(ROOT, "scripts"))
               if f.endswith(".py") and f != "_path.py" and not f.startswith("train_")}
    assert {COMMAND_OF.get(f"{s}.py", [s])[0] for s in scripts} == set(COMMANDS)
    for argv in ([], ["--help"], ["-h"], ["help"]):
        assert main(argv) == 0
        out = capsys.readouterr().out
        listed = [l.split()[0] for l in out.splitlines() if l.startswith("  ") and not l.strip().startswith("-")]
        assert listed == list(COMMANDS), out


def test_googlenet_version_is_the_projects_one_version(capsys):
    tomllib = pytest.importorskip("tomllib")
    import common
    from cli.main import main
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"googlenet {common.__version__}\n"
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "common.__version__"}
    assert project["project"]["scripts"] == {"googlenet": "cli.main:main"}


@pytest.mark.parametrize("argv, words", [(["frob"], "unknown command 'frob'"),
                                         (["--backend", "pytorch", "train"], "unknown option --backend")])
def test_an_unknown_command_is_one_error_line_naming_the_commands(argv, words, capsys):
    from cli.main import COMMANDS, main
    assert main(argv) == 1
    line = only_error_line(capsys.readouterr().err)
    assert words in line and ", ".join(COMMANDS) in line


def test_python_m_cli_is_the_command_and_names_itself():
    out = subprocess.run([sys.executable, "-m", "cli", "summary", "--bogus"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    assert only_error_line(out.stderr) == ("error: unrecognized arguments: --bogus "
                                           "(see python -m cli summary --help)")


def test_a_command_starts_its_own_processes_with_or_without_the_scripts(tmp_path, monkeypatch):
    """Workers and per-backend processes: the checkout's scripts/ as before; ``python -m cli``
    where the package is installed without them."""
    from cli import main
    assert main.command("train") == [sys.executable, os.path.join(ROOT, "scripts", "train.py")]
    assert main.command("train", "train_paddle.py")[1] == os.path.join(ROOT, "scripts", "train_paddle.py")
    monkeypatch.setattr(main, "ROOT", str(tmp_path))
    assert main.command("export") == [sys.executable, "-m", "cli", "export"]


def test_debug_shows_the_traceback():
    out = subprocess.run([sys.executable, "scripts/summary.py", "--backend", "caffe", "--debug"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "Traceback" in out.stderr and "BackendError" in out.stderr


def test_argparse_errors_follow_the_convention():
    out = subprocess.run([sys.executable, "scripts/train.py", "--epochs", "two"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    assert "invalid int value: 'two'" in only_error_line(out.stderr)


def test_progress_bar_in_a_log_is_a_few_lines():
    """tqdm's bar writes about ten whole lines per epoch where the output is not a terminal."""
    from common.train.loop import progress_bar
    stream = io.StringIO()
    bar = progress_bar(50, "epoch 1/1", stream=stream)
    for _ in range(50):
        bar.set_postfix(loss="0.500", refresh=False)
        bar.update(1)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert 5 <= len(lines) <= 12 and "\r" not in stream.getvalue()
    assert all(l.startswith("epoch 1/1") for l in lines) and "50/50" in lines[-1]
    quiet = io.StringIO()
    bar = progress_bar(5, "x", enabled=False, stream=quiet)
    bar.update(5)
    bar.close()
    assert quiet.getvalue() == ""


# --------------------------------------------------------------------------- own image folders
def test_train_on_an_image_folder_the_model_follows_the_data(tmp_path, capsys, monkeypatch):
    """A 3-channel, 5-class folder: --preset bn trains with no channel or class flag; the run
    records the classes and the normalisation; another backend evaluates it the same."""
    pytest.importorskip("torch")
    from tests.datagen import make_image_folder
    from cli.evaluate import main as evaluate
    monkeypatch.setenv("GOOGLENET_CACHE", str(tmp_path / "cache"))
    folder = make_image_folder(str(tmp_path / "pics"), n_classes=5, n_train=6, n_test=3)
    run = str(tmp_path / "run")
    code, out, err = train(["--dataset", "folder", "--data-dir", folder, "--preset", "bn", "--no-aux",
                            "--resize", "32", "--batch-size", "10", "--epochs", "1", "--run-dir", run],
                           capsys)
    assert code == 0, err
    assert "folder (" in out and "5 classes" in out and "3 channels" in out
    rec = json.load(open(os.path.join(run, "run.json")))
    assert rec["model"]["in_channels"] == 3 and rec["model"]["num_classes"] == 5
    assert rec["dataset"]["classes"] == ["bar", "circle", "cross", "square", "triangle"]
    assert rec["dataset"]["normalize"] and len(rec["dataset"]["mean"]) == 3
    assert rec["data"]["dataset"] == "folder" and rec["test_examples"] == 15
    if pytest.importorskip("mxnet"):
        assert evaluate([run, "--backend", "mxnet"]) == 0
        assert f"test acc {rec['test_acc']:.4f}" in capsys.readouterr().out
    code, out, err = train(["--resume", run, "--epochs", "1", "--dataset", "cifar10"], capsys)
    assert code == 1 and "--dataset cifar10" in only_error_line(err)


def test_the_resume_command_follows_how_training_was_started(monkeypatch):
    """``googlenet train`` is told to resume with ``googlenet train``, the script with the script."""
    from cli.train import train_command
    monkeypatch.setattr(sys, "argv", ["googlenet train", "--epochs", "1"])
    assert train_command() == "googlenet train"
    monkeypatch.setattr(sys, "argv", ["scripts/train.py"])
    assert train_command() == "python scripts/train.py"
