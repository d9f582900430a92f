"""``scripts/run_notebook.py``: execute ``notebooks/googlenet.ipynb`` headless for one backend.

The notebook is kept in git without outputs; this runs it top to bottom in a fresh
Jupyter kernel (nbclient), the way the tests and CI do, and can write the executed copy:

    python scripts/run_notebook.py --backend tensorflow --smoke        # tiny generated data
    python scripts/run_notebook.py --backend mxnet --out runs/googlenet-mxnet.ipynb

The kernel runs this interpreter (``sys.executable``, through a kernel spec written for
the run, so no user-level ``python3`` kernel spec can replace it) with this checkout on
``PYTHONPATH`` and the notebook's folder as its working directory; ``GOOGLENET_BACKEND``
(and ``GOOGLENET_NOTEBOOK_SMOKE=1`` with ``--smoke``) reach it through its environment.
In smoke mode every framework computes with one thread (``SMOKE_THREADS``) unless the
environment says otherwise.  The kernel is shut down whether or not a cell fails; a failing
cell makes the command fail, naming the error.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from typing import Callable, Iterable, Optional

from backends.d2l_compat import plotting_problem
from backends.config import ENV_VAR, canonical, resolve

from .errors import UserError, guard
from .options import ArgumentParser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "googlenet.ipynb")
SMOKE_VAR = "GOOGLENET_NOTEBOOK_SMOKE"
KERNEL = "googlenet-python"
#: smoke runs check that every cell works, not speed: one compute thread per framework, because
#: on a shared CI machine whose cores are oversubscribed OpenMP's spin-waiting threads collapse
#: (a PyTorch step at 28x28, batch 8: 8.6 s with 2 threads, 0.37 s with 1, measured here)
SMOKE_THREADS = {"OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1"}


def _kernel_spec(folder: str) -> str:
    """A kernel spec that runs this interpreter; returns the folder of kernel specs."""
    kernels = os.path.join(folder, "kernels")
    os.makedirs(os.path.join(kernels, KERNEL))
    with open(os.path.join(kernels, KERNEL, "kernel.json"), "w") as f:
        json.dump({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                   "display_name": f"Python ({sys.executable})", "language": "python"}, f)
    return kernels


def execute(backend: Optional[str] = None, notebook: str = NOTEBOOK, *, smoke: bool = True,
            timeout: int = 600, extra_cells: Iterable[str] = (), env: Optional[dict] = None,
            on_start: Optional[Callable] = None):
    """Run every cell of ``notebook`` in a new kernel with ``GOOGLENET_BACKEND=backend``.

    Returns ``(executed notebook, seconds, kernel argv)``.  ``timeout``: seconds per cell.
    ``extra_cells``: code appended to the notebook (the tests ask the kernel which
    interpreter and which checkout it runs).  ``on_start(kernel_manager)`` is called once
    the kernel runs.  A failing cell raises ``nbclient.exceptions.CellExecutionError``; the
    kernel is shut down in every case.
    """
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    backend = resolve(backend)
    nb = nbformat.read(notebook, as_version=4)
    nb.cells.extend(nbformat.v4.new_code_cell(code) for code in extra_cells)
    state = tempfile.mkdtemp(prefix="googlenet-notebook-")
    km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[_kernel_spec(state)]))
    paths = [ROOT] + [p for p in (env or os.environ).get("PYTHONPATH", "").split(os.pathsep) if p]
    kernel_env = {**(env or os.environ), ENV_VAR: backend, "PYTHONPATH": os.pathsep.join(paths),
                  "IPYTHONDIR": os.path.join(state, "ipython"),
                  "JUPYTER_RUNTIME_DIR": os.path.join(state, "runtime")}
    if smoke:
        kernel_env[SMOKE_VAR] = "1"
        for var, value in SMOKE_THREADS.items():      # the user's own setting wins
            kernel_env.setdefault(var, value)
    else:
        kernel_env.pop(SMOKE_VAR, None)
    client = NotebookClient(nb, km=km, timeout=timeout, kernel_name=KERNEL,
                            resources={"metadata": {"path": os.path.dirname(os.path.abspath(notebook))}},
                            on_notebook_start=(lambda **kw: on_start(km)) if on_start else None)
    start = time.perf_counter()
    try:
        client.execute(env=kernel_env)
    finally:
        try:
            if km.has_kernel:
                km.shutdown_kernel(now=True)
        finally:
            shutil.rmtree(state, ignore_errors=True)
    return nb, time.perf_counter() - start, list(km.kernel_spec.argv)


def parser():
    p = ArgumentParser(description="Execute notebooks/googlenet.ipynb headless (nbclient) for one backend.")
    p.add_argument("--backend", help=f"mxnet, pytorch, tensorflow or paddle (default: ${ENV_VAR}, else pytorch)")
    p.add_argument("--smoke", action="store_true",
                   help=f"tiny generated data, no network ({SMOKE_VAR}=1): what the tests and CI run")
    p.add_argument("--out", help="write the executed notebook here (keep it out of git: notebooks/ holds "
                                 "the notebook without outputs)")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per cell (default 1800)")
    p.add_argument("--notebook", default=NOTEBOOK, help="the notebook to run (default notebooks/googlenet.ipynb)")
    return p


@guard
def main(argv=None):
    args = parser().parse_args(argv)
    backend = canonical(args.backend) if args.backend else resolve()
    if not os.path.exists(args.notebook):
        raise UserError(f"{args.notebook} does not exist")
    if plotting_problem():
        raise UserError(plotting_problem())
    from nbclient.exceptions import CellExecutionError
    try:
        nb, seconds, _ = execute(backend, args.notebook, smoke=args.smoke, timeout=args.timeout)
    except CellExecutionError as e:
        raise UserError(f"a cell of {args.notebook} failed on {backend}: {e.ename}: {e.evalue} "
                        f"(run it in Jupyter, or with --debug, to see the traceback)") from None
    if args.out:
        import nbformat
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        nbformat.write(nb, args.out)
    print(f"{os.path.relpath(args.notebook)} ran on {backend} in {seconds:.1f} s"
          + (" (smoke mode)" if args.smoke else "") + (f"; executed copy: {args.out}" if args.out else ""))
    return 0
