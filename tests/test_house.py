"""The house's rules, read from the code (imports parsed) and, for the old import paths, tried in
fresh processes:

* ``common/`` is framework-free: it imports no framework, no backend and no command line,
  and names no backend: every fact about a framework is on its card
  (``backends/<framework>/card.py``), and cross-backend code that needs the cards lives in
  ``backends/`` (the registry ``backends.config``, the launcher, the book's d2l);
* ``cli/`` names no backend either;
* ``common/`` is in rooms (``common.ROOMS``: ``net``, ``train``, ``inputs``, ``serve``,
  ``results``; ``runtime`` stays at the top); every module's old path ``common.<module>``
  still imports, as the same module object, and ``import common`` imports no room;
* each backend folder holds the same modules, its card imports no framework, and all four
  ``distribute`` modules export the same names.
"""
import ast
import importlib
import json
import os
import re
import subprocess
import sys

import pytest

from backends import BACKENDS, DISTRIBUTE_API

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMEWORKS = {"torch", "tensorflow", "mxnet", "paddle", "keras", "tf2onnx", "paddle2onnx", "onnx",
              "onnxruntime", "d2l", "torchvision"}
NAMED = re.compile(r"['\"](pytorch|tensorflow|mxnet|paddle)['\"]")


def sources(folder):
    for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
        for f in sorted(files):
            if f.endswith(".py"):
                yield os.path.join(dirpath, f)


def top_level_imports(path, anywhere=True):
    """Every module a file imports (``anywhere``: also inside functions), as absolute names."""
    tree = ast.parse(open(path).read(), path)
    package = os.path.relpath(os.path.dirname(path), ROOT).replace(os.sep, ".")
    for node in (ast.walk(tree) if anywhere else tree.body):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                yield ".".join(base + ([node.module] if node.module else []))
            else:
                yield node.module


@pytest.mark.parametrize("path", list(sources("common")), ids=lambda p: os.path.relpath(p, ROOT))
def test_common_imports_no_framework_backend_or_cli(path):
    for name in top_level_imports(path):
        top = name.split(".")[0]
        assert top not in FRAMEWORKS | {"backends", "cli", "scripts", "tests"}, f"{path} imports {name}"


@pytest.mark.parametrize("folder", ["common", "cli"])
def test_no_backend_is_named_outside_backends(folder):
    found = [f"{os.path.relpath(p, ROOT)}:{i}: {line.strip()}"
             for p in sources(folder) for i, line in enumerate(open(p), 1) if NAMED.search(line)]
    assert not found, "\n".join(found)


def test_every_backend_folder_holds_the_same_modules():
    modules = {b: sorted(f for f in os.listdir(os.path.join(ROOT, "backends", b)) if f.endswith(".py"))
               for b in BACKENDS}
    assert all(m == modules[BACKENDS[0]] for m in modules.values()), modules
    assert {"card.py", "api.py", "core.py", "model.py", "training.py", "distribute.py", "export.py",
            "book.py"} <= set(modules[BACKENDS[0]])


@pytest.mark.parametrize("name", BACKENDS)
def test_a_card_and_its_package_import_no_framework(name):
    """(A card's ``matmul`` imports its framework when called, for the benchmark.)"""
    for f in ("card.py", "__init__.py"):
        for imported in top_level_imports(os.path.join(ROOT, "backends", name, f), anywhere=False):
            assert imported.split(".")[0] not in FRAMEWORKS, f"backends/{name}/{f} imports {imported}"


@pytest.mark.parametrize("name", BACKENDS)
def test_every_distribute_module_exports_the_same_names(name):
    tree = ast.parse(open(os.path.join(ROOT, "backends", name, "distribute.py")).read())
    exported = [ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                and any(getattr(t, "id", None) == "__all__" for t in n.targets)]
    assert exported and tuple(exported[0]) == DISTRIBUTE_API
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert set(DISTRIBUTE_API) <= defined


@pytest.mark.parametrize("name", BACKENDS)
def test_every_api_module_exports_backends_api(name):
    from backends import API
    tree = ast.parse(open(os.path.join(ROOT, "backends", name, "api.py")).read())
    exported = [ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                and any(getattr(t, "id", None) == "__all__" for t in n.targets)]
    assert exported and set(exported[0]) == set(API) | {"model"}


# --------------------------------------------------------------------------- the rooms of common/
#: every module that sat directly in ``common/`` before the rooms (``runtime`` stays there):
#: ``common.<name>`` is what users' code and the docs import, so it must keep working
OLD = ("augment bench checkpoint data datasets distributed export interrupt loop model oracle plots predict "
       "report runlock safepickle schedules spec train_config trainer weights").split()


def _python(code):
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_rooms_hold_every_module_once():
    import common
    top = sorted(f for f in os.listdir(os.path.join(ROOT, "common")) if f.endswith(".py"))
    assert top == ["__init__.py", "runtime.py"]
    on_disk = {room: sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "common", room))
                            if f.endswith(".py") and f != "__init__.py") for room in common.ROOMS}
    assert on_disk == {room: sorted(modules) for room, modules in common.ROOMS.items()}
    assert sorted(old.split(".")[-1] for old in common.MOVED) == sorted(OLD)


@pytest.mark.parametrize("name", OLD)
def test_an_old_path_is_the_same_module_as_its_new_one(name):
    """In a fresh process, the old path first: ``import common.<name>`` imports exactly what
    ``import common.<room>.<name>`` imports (plus the old name, bound to the same object),
    ``from common import <name>`` gives that object too, and the module keeps its own name."""
    import common
    new = common.MOVED[f"common.{name}"]
    old_first = _python(
        f"import json, sys\nimport common.{name}\nmodules = sorted(sys.modules)\n"
        f"from common import {name} as via_from\nimport {new} as new\n"
        f"print(json.dumps({{'modules': modules, 'name': new.__name__, 'spec': new.__spec__.name, "
        f"'same': sys.modules['common.{name}'] is new is via_from is common.{name}}}))")
    new_only = _python(f"import json, sys\nimport {new}\nprint(json.dumps(sorted(sys.modules)))")
    assert old_first["same"] and old_first["name"] == old_first["spec"] == new
    assert set(old_first["modules"]) - {f"common.{name}"} == set(new_only)
    # and in this process, where the new path was mostly imported first
    assert importlib.import_module(f"common.{name}") is importlib.import_module(new)


def test_importing_common_imports_no_room():
    loaded = _python("import json, sys\nbefore = set(sys.modules)\nimport common\n"
                     "print(json.dumps(sorted(set(sys.modules) - before)))")
    assert [m for m in loaded if m == "common" or m.startswith("common.")] == ["common"], loaded
    assert "numpy" not in loaded
