"""The book reader's notebook, ``notebooks/googlenet.ipynb``: stored without outputs, and
executed top to bottom in a fresh kernel (nbclient) in smoke mode (tiny generated data).

By default the notebook runs on one backend, ``pytorch`` (what CI runs, part of ``make
test``); ``GOOGLENET_LONG=1`` runs it on every installed backend and checks that the cells
tagged ``same-on-every-backend`` (shapes, parameter counts, multiply-adds, the exercises)
print the same text on all of them.  A failing cell fails the test; the kernel is shut down
either way.
"""
import importlib.util
import json
import os
import sys

import pytest

from backends.config import BACKENDS, is_installed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "googlenet.ipynb")
DEFAULT = "pytorch"                         # the backend CI executes the notebook on
LONG = os.environ.get("GOOGLENET_LONG", "") not in ("", "0")
SAME = "same-on-every-backend"
TIMEOUT = 900                               # seconds per cell (a busy shared CPU is slow)

#: stdout of the tagged cells, per backend executed in this session
_same = {}


def read_notebook():
    with open(NOTEBOOK) as f:
        return json.load(f)


def test_notebook_is_stored_without_outputs():
    """The notebook lives in git without outputs (run it to see them, or write an executed
    copy with scripts/run_notebook.py --out); clear them with
    ``jupyter nbconvert --clear-output --inplace notebooks/googlenet.ipynb``."""
    nb = read_notebook()
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"cell {i} has stored outputs"
            assert cell["execution_count"] is None, f"cell {i} has an execution count"
        assert not set(cell.get("metadata", {})) - {"tags"}, f"cell {i} has metadata {cell['metadata']}"
    assert "widgets" not in nb["metadata"]
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    if importlib.util.find_spec("nbformat"):
        import nbformat
        nbformat.validate(nbformat.reads(json.dumps(nb), as_version=4))


def test_notebook_follows_the_chapter():
    """The sections the issue asks for, and the one switch."""
    nb = read_notebook()
    text = "\n".join("".join(c["source"]) for c in nb["cells"])
    for heading in ("## Inception blocks", "## GoogLeNet model", "## Layer summary", "## Training",
                    "## Our network inside the book's own `d2l.train_ch6`",
                    "## Four frameworks side by side", "## Exercises",
                    "### What is the minimum image size", "### How many parameters",
                    "### How much computation?", "### The batch-normalisation variant"):
        assert heading in text, heading
    assert 'os.environ.get("GOOGLENET_BACKEND")' in text and "GOOGLENET_NOTEBOOK_SMOKE" in text
    assert "d2l.train_ch6(" in text and "common.train.loop.fit" in text
    assert sum(SAME in c.get("metadata", {}).get("tags", []) for c in nb["cells"]) >= 8


def test_a_failing_cell_fails_and_the_kernel_is_shut_down(tmp_path):
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    import nbformat
    from nbclient.exceptions import CellExecutionError
    from cli.notebook import execute
    path = str(tmp_path / "bad.ipynb")
    nbformat.write(nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import os, sys\nprint(os.environ['GOOGLENET_BACKEND'], sys.executable)"),
        nbformat.v4.new_code_cell("raise ValueError('a broken cell')"),
        nbformat.v4.new_code_cell("print('never runs')")]), path)
    kernels = []
    with pytest.raises(CellExecutionError) as e:
        execute("mxnet", path, timeout=120, on_start=kernels.append)
    assert e.value.ename == "ValueError" and "a broken cell" in e.value.evalue
    km, = kernels
    assert not km.has_kernel and not km.is_alive()


def test_plotting_problem_names_the_fix(monkeypatch):
    """matplotlib < 3.9 with IPython >= 9.16 cannot plot in a kernel; the check says what to do."""
    import importlib.metadata
    from backends import d2l_compat
    versions = {"matplotlib": "3.7.2", "ipython": "9.18.1"}
    monkeypatch.setattr(importlib.metadata, "version", lambda name: versions[name])
    problem = d2l_compat.plotting_problem()
    assert "backend2gui" in problem and "pip install 'ipython<9.16'" in problem
    versions["ipython"] = "9.15.0"
    assert d2l_compat.plotting_problem() is None
    versions.update(matplotlib="3.9.0", ipython="9.18.1")
    assert d2l_compat.plotting_problem() is None


@pytest.mark.parametrize("name", BACKENDS)
def test_notebook_runs_top_to_bottom(name):
    if name != DEFAULT and not LONG:
        pytest.skip(f"CI executes the notebook on {DEFAULT} only; GOOGLENET_LONG=1 runs every backend")
    if not is_installed(name):
        pytest.skip(f"{name} is not installed")
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from backends.d2l_compat import plotting_problem
    if plotting_problem():
        pytest.fail(plotting_problem())          # the notebook's first cell would stop with this
    from cli.notebook import execute
    probe = ("import sys, backends, backends.d2l_compat\n"
             "print('PROBE', sys.executable, backends.__file__, sep='|')")
    nb, seconds, argv = execute(name, smoke=True, timeout=TIMEOUT, extra_cells=[probe])
    print(f"notebook on {name}: {seconds:.1f} s")
    assert argv[0] == sys.executable
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    stdout = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stdout")
    _, executable, backends_file = next(line for line in stdout.splitlines() if line.startswith("PROBE")).split("|")
    assert executable == sys.executable                                    # the same interpreter
    assert backends_file == os.path.join(ROOT, "backends", "__init__.py")  # this checkout's code
    # the book's printout, the summary, the exercises: the same whichever framework runs it
    for line in ("b1    output shape:\t(1, 64, 24, 24)", "b4    output shape:\t(1, 832, 3, 3)",
                 "head  output shape:\t(1, 10)", "Total params: 5,977,530",
                 "Mult-adds per example (forward, main network): 276,066,304",
                 "the book's net accepts inputs from 1 x 1", "needs 65 x 65",
                 "paper's net, 3 x 224 x 224:   1,582,671,872",
                 "bn preset with aux heads: 6,403,134 parameters"):
        assert line in stdout, line
    # the short training runs, the book's train_ch6 (or, on Paddle, why not and fit instead)
    assert stdout.count("loss ") >= 3
    assert "still at chance" in stdout or "left chance" in stdout
    if name == "paddle":
        assert "d2l for paddle: the book's d2l package has no Paddle module" in stdout
    else:
        assert "examples/sec on" in stdout                                 # train_ch6's last line
    images = [o for o in outputs if o.output_type == "display_data"
              and ("image/png" in o.data or "image/svg+xml" in o.data)]
    assert len(images) >= (3 if name == "paddle" else 4)   # curves, steps, comparison; train_ch6's figure
    same = ["".join(o.text for o in c.outputs if o.output_type == "stream" and o.name == "stdout")
            for c in nb.cells if SAME in c.metadata.get("tags", [])]
    _same[name] = same
    for other, theirs in _same.items():
        assert theirs == same, f"the {SAME} cells print differently on {name} and {other}"


def test_the_committed_comparison_is_the_one_in_results_md():
    """docs/data/compare-d2l.json (what the notebook shows) renders the table of docs/results.md."""
    from common.results import report
    with open(os.path.join(ROOT, "docs", "data", "compare-d2l.json")) as f:
        combined = json.load(f)
    results = open(os.path.join(ROOT, "docs", "results.md")).read()
    for line in report.table(combined) + [report.gap_line(combined)]:
        assert line in results, line
