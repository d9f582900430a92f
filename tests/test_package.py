"""The package as a user installs it, away from this repository.

A wheel is built from the package's files (``pyproject.toml``, ``README.md``, ``LICENSE``,
``common/``, ``backends/``, ``cli/``, copied to a temporary folder so that the build leaves
nothing in the checkout) and installed into a fresh virtual environment outside the
repository.  The frameworks are not installed again: a ``.pth`` file puts this
environment's site-packages after the new one's (a path only: the ``.pth`` files there,
this checkout's editable finder among them, are not run).  Every command runs from the
temporary folder with no ``PYTHONPATH``, so nothing of the checkout can be imported: the
test checks where every module the installed ``googlenet train`` imported came from.
"""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig

import pytest

from tests.datagen import make_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = ("pyproject.toml", "README.md", "LICENSE", "common", "backends", "cli")
#: runs the installed ``googlenet`` script (sys.argv[1]) with the rest of the command line
#: and writes, when it exits, every imported module's file and sys.path to $MODULES_JSON
RUN_SCRIPT = """
import atexit, json, os, runpy, sys
def dump():
    files = {getattr(m, "__file__", None) or "" for m in list(sys.modules.values())}
    json.dump(dict(files=sorted(f for f in files if os.path.isabs(f)),       # torch has a few named
                   path=[os.path.abspath(p) for p in sys.path]),             # '_ops.py' and the like
              open(os.environ["MODULES_JSON"], "w"))
atexit.register(dump)
script, sys.argv = sys.argv[1], ["googlenet"] + sys.argv[2:]
runpy.run_path(script, run_name="__main__")
"""


def run(argv, cwd, env, timeout=300):
    """``argv``'s standard output; it must exit with 0 within ``timeout`` seconds, else it
    gets SIGTERM (the launcher then stops its workers) and, 30 s later, SIGKILL."""
    p = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, None)):
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                out, err = p.communicate(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        pytest.fail(f"{argv} ran over {timeout} s:\n{out[-3000:]}\n{err[-3000:]}")
    assert p.returncode == 0, f"{argv} exited with {p.returncode}:\n{out[-3000:]}\n{err[-3000:]}"
    return out


def under(path, folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder + os.sep)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(temporary folder, the new environment's bin folder, its site-packages, the frameworks'
    site-packages, the environment variables for its commands)."""
    pytest.importorskip("torch")
    tmp = tmp_path_factory.mktemp("package")
    assert not under(str(tmp), ROOT)
    src = tmp / "src"
    src.mkdir()
    for name in PACKAGE:
        if os.path.isdir(os.path.join(ROOT, name)):
            shutil.copytree(os.path.join(ROOT, name), src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(os.path.join(ROOT, name), src / name)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "GOOGLENET_BACKEND")}
    env.update(PYTHONNOUSERSITE="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1",
               GOOGLENET_CACHE=str(tmp / "cache"), OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"))
    # the build: offline, with this environment's setuptools (>= 77, as pyproject.toml asks)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
         str(tmp / "wheel"), str(src)], cwd=str(tmp), env=env)
    (wheel,) = glob.glob(str(tmp / "wheel" / "*.whl"))
    run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "env")], cwd=str(tmp), env=env)
    python = str(tmp / "env" / "bin" / "python")
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
               cwd=str(tmp), env=env).strip()
    frameworks = sysconfig.get_paths()["purelib"]           # this environment's: torch, numpy, pip, ...
    with open(os.path.join(site, "_googlenet_test_frameworks.pth"), "w") as f:
        f.write(frameworks + "\n")
    # pip from the frameworks' environment installs into the new one (its sys.prefix); it
    # installs beside any copy of the project that environment holds, touching none
    run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed", wheel],
        cwd=str(tmp), env=env)
    return tmp, os.path.dirname(python), site, frameworks, env


def from_the_repository(paths, frameworks):
    """The paths in this checkout, but for the frameworks' site-packages (it may lie in .venv)."""
    return [p for p in paths if under(p, ROOT) and not under(p, frameworks)]


def test_the_installed_command_works_without_the_repository(installed):
    tmp, bin_dir, site, frameworks, env = installed
    googlenet = os.path.join(bin_dir, "googlenet")
    import common
    assert run([googlenet, "--version"], str(tmp), env) == f"googlenet {common.__version__}\n"
    where = run([os.path.join(bin_dir, "python"), "-c",
                 "import common, cli, backends, sys; print(common.__file__, cli.__file__, backends.__file__); "
                 "print(any('editable' in repr(f) for f in sys.meta_path))"], str(tmp), env).splitlines()
    assert all(under(f, site) for f in where[0].split()), where
    assert where[1] == "False"                                 # no editable finder of the checkout

    assert "Total params: 5,977,530" in run([googlenet, "summary", "--backend", "pytorch"], str(tmp), env)
    # the wheel ships the offline Fashion-MNIST sample, its checksums and licence (package data)
    shipped = sorted(os.listdir(os.path.join(site, "common", "inputs", "sample")))
    assert shipped == sorted(os.listdir(os.path.join(ROOT, "common", "inputs", "sample"))), shipped

    data = make_dataset(str(tmp / "data"), n_train=64, n_test=32)
    env = dict(env, MODULES_JSON=str(tmp / "modules.json"))
    out = run([os.path.join(bin_dir, "python"), "-c", RUN_SCRIPT, googlenet, "train", "--backend", "pytorch",
               "--epochs", "1", "--limit", "64", "--data-dir", "data", "--run-dir", "run", "--no-progress"],
              str(tmp), env, timeout=600)
    assert os.path.relpath(data, str(tmp)) == "data" and "test acc" in out
    record = json.load(open(tmp / "run" / "run.json"))
    assert record["backend"] == "pytorch" and record["params"] == 5_977_530 and 0 <= record["test_acc"] <= 1
    assert record["command"].startswith("googlenet train --backend pytorch")
    assert os.path.isdir(tmp / "run" / "checkpoint")
    assert any(f.startswith("events.out.tfevents.") for f in os.listdir(tmp / "run"))    # TensorBoard
    modules = json.load(open(tmp / "modules.json"))
    assert from_the_repository(modules["files"], frameworks) == []
    assert from_the_repository(modules["path"], frameworks) == []
    mine = [f for f in modules["files"] if f.endswith(os.path.join("cli", "train.py"))
            or f.endswith(os.path.join("backends", "pytorch", "model.py"))]
    assert len(mine) == 2 and all(under(f, site) for f in mine), mine


def test_the_installed_command_starts_its_workers(installed):
    """``--nproc-per-node``: the workers start as ``python -m cli train`` (no scripts/ here),
    in the user's folder, so relative paths mean the same to them."""
    tmp, bin_dir, site, frameworks, env = installed
    if not os.path.isdir(tmp / "data"):
        make_dataset(str(tmp / "data"), n_train=64, n_test=32)
    out = run([os.path.join(bin_dir, "googlenet"), "train", "--backend", "pytorch", "--epochs", "1", "--limit", "64",
               "--batch-size", "32", "--data-dir", "data", "--run-dir", "run2", "--no-progress",
               "--nproc-per-node", "2"], str(tmp), env, timeout=600)
    record = json.load(open(tmp / "run2" / "run.json"))
    assert record["world_size"] == 2 and 0 <= record["test_acc"] <= 1, out
