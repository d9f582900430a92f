"""The backend switch: precedence, aliases, errors, lazy imports."""
import json
import os
import subprocess
import sys

import pytest

from backends import config as switch
from backends.config import BACKENDS, BackendError, ENV_VAR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMEWORKS = ("torch", "tensorflow", "mxnet", "paddle")


def test_default_is_pytorch(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert switch.resolve() == "pytorch"
    monkeypatch.setenv(ENV_VAR, "   ")
    assert switch.resolve() == "pytorch"          # empty means unset


def test_env_then_explicit(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "TF")
    assert switch.resolve() == "tensorflow"
    assert switch.resolve("Paddle") == "paddle"   # explicit wins
    assert switch.resolve("") == "tensorflow"     # empty explicit means unset


@pytest.mark.parametrize("alias, name", [("torch", "pytorch"), ("tf", "tensorflow"), ("MX", "mxnet"),
                                         ("PaddlePaddle", "paddle"), (" mxnet ", "mxnet")])
def test_aliases(alias, name):
    assert switch.canonical(alias) == name


def test_unknown_lists_valid_names(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "caffe")
    with pytest.raises(BackendError) as e:
        switch.resolve()
    for name in BACKENDS:
        assert name in str(e.value)


@pytest.mark.parametrize("name", BACKENDS)
def test_missing_framework_names_pip_install(name):
    """A framework that cannot be imported (None in sys.modules) gives the pip command."""
    code = (f"import sys; sys.modules[{switch.FRAMEWORK_MODULE[name]!r}] = None\n"
            f"from backends import get_backend, BackendError\n"
            f"try:\n    get_backend({name!r})\nexcept BackendError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert switch.PIP[name].split("#")[0].strip() in out.stdout


def _modules_after(code, env_backend):
    env = dict(os.environ, **{ENV_VAR: env_backend})
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json\n"
                          "print(json.dumps(sorted(m for m in sys.modules)))"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("name", BACKENDS)
def test_choosing_one_backend_imports_no_other_framework(name):
    pytest.importorskip(switch.FRAMEWORK_MODULE[name])
    mods = _modules_after("from backends import get_backend\nbk = get_backend()\nnet = bk.build()", name)
    mine = switch.FRAMEWORK_MODULE[name]
    assert mine in mods
    others = [f for f in FRAMEWORKS if f != mine and f in mods]
    assert not others, f"{name} imported {others}"


def test_importing_the_package_imports_no_framework():
    mods = _modules_after("import backends, common.net.spec, common.net.oracle, common.inputs.data, "
                          "common.train.loop, common.spec", "")
    assert not [f for f in FRAMEWORKS if f in mods]


def test_summary_script_rejects_unknown_backend():
    env = dict(os.environ, **{ENV_VAR: "nonsense"})
    out = subprocess.run([sys.executable, "scripts/summary.py"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    for name in BACKENDS:
        assert name in out.stderr
