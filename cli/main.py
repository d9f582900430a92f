"""``googlenet``: one installed command, the scripts as its subcommands (torchvision / git style).

    googlenet train --backend paddle --epochs 2 --data-dir DIR
    googlenet summary --backend tf --preset paper --aux
    googlenet evaluate runs/<run> --data-dir DIR
    googlenet --version
    python -m cli summary            # the same command, without the installed script

Each subcommand hands the rest of the command line to its ``cli/<module>.py``
``main(argv)``, as ``scripts/<name>.py`` does: same options, same ``error:`` line and exit
code 1 for a mistake.  ``googlenet train --backend X`` is ``scripts/train_<X>.py``.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys

from common import __version__

#: the folder that holds ``cli/`` (the checkout, or site-packages when installed)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: subcommand -> (module in cli/, one line of help, import torch first)
COMMANDS = {
    "train": ("train", "train GoogLeNet on Fashion-MNIST or an image folder with any backend, "
                       "or resume a run", False),
    "evaluate": ("evaluate", "the test accuracy of a trained model, with any backend", False),
    "convert": ("convert", "convert weights between the frameworks' formats (.npz, .pt, "
                           ".weights.h5, .params, .pdparams)", True),
    "summary": ("summary", "the layer table of the net as one backend builds it", False),
    "compare": ("compare", "the backends side by side: one command, one report", False),
    "family": ("family", "the family's members trained on one backend and compared", False),
    "bench": ("bench", "benchmark our GoogLeNet against the book's own code", False),
    "fidelity": ("fidelity", "how closely the installed backends agree, given the same weights", True),
    "export": ("export", "a trained model in a framework's serving format or ONNX", False),
    "predict": ("predict", "the most probable classes of pictures, with a run or an exported model",
                False),
    "notebook": ("notebook", "execute notebooks/googlenet.ipynb headless for one backend", False),
}


def prog_name() -> str:
    """``googlenet`` as installed, ``python -m cli`` as a module."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "python -m cli" if name in ("", "-c") or name.endswith(".py") else name


def usage(prog: str) -> str:
    width = max(len("-h, --help"), *map(len, COMMANDS))
    lines = [f"usage: {prog} COMMAND [options]   ({prog} COMMAND --help for a command's options)",
             "",
             "GoogLeNet (Inception v1) in MXNet, PyTorch, TensorFlow and PaddlePaddle, from one table.",
             "",
             "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_, _) in COMMANDS.items()]
    lines += ["", "options:",
              f"  {'-h, --help':<{width}}  show this list and exit",
              f"  {'--version':<{width}}  print the version and exit"]
    return "\n".join(lines)


def command(name: str, script: str = None) -> list:
    """The command line that starts subcommand ``name`` in a new process (a worker, a backend's
    own process): the checkout's ``scripts/<script>`` (default ``<name>.py``), as the scripts
    always did, or ``python -m cli name`` where the package is installed without ``scripts/``."""
    path = os.path.join(ROOT, "scripts", script or f"{name}.py")
    return [sys.executable, path] if os.path.isfile(path) else [sys.executable, "-m", "cli", name]


@contextlib.contextmanager
def _argv(argv):
    """``sys.argv`` as the subcommand's own (``googlenet train`` as its program name), so its
    help, its errors and the command recorded in ``run.json`` name what was typed."""
    saved = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved


def main(argv=None) -> int:
    """Run ``googlenet COMMAND ...``; the exit code of the command (1 for a mistake)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    prog = prog_name()
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(prog))
        return 0
    first, rest = argv[0], argv[1:]
    if first == "--version":
        print(f"googlenet {__version__}")
        return 0
    if first not in COMMANDS:
        what = f"option {first}" if first.startswith("-") else f"command {first!r}"
        print(f"error: unknown {what}; the commands are {', '.join(COMMANDS)} (see {prog} --help)",
              file=sys.stderr)
        return 1
    module, _, torch_first = COMMANDS[first]
    if torch_first and importlib.util.find_spec("torch"):
        import torch  # noqa: F401  (before TensorFlow, should both be used; as scripts/convert.py)
    command = importlib.import_module(f"cli.{module}")
    with _argv([f"{prog} {first}"] + rest):
        return command.main(rest)


if __name__ == "__main__":
    sys.exit(main())
