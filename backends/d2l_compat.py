"""The book's own ``d2l`` package beside this project's pinned frameworks.

Readers of *Dive into Deep Learning* write ``from d2l import torch as d2l`` and
``d2l.train_ch6(net, train_iter, test_iter, num_epochs, lr, device)``.  With this
project's pins (d2l 1.0.3; torch 2.13.0 CPU, tensorflow-cpu 2.15.1, mxnet 1.9.1,
paddlepaddle 3.3.1) that holds for three of the four frameworks, and this module says
how (``docs/book.md`` says why):

* **MXNet, TensorFlow**: ``d2l.mxnet`` and ``d2l.tensorflow`` import as they are.
* **PyTorch**: ``d2l.torch`` runs ``import torchvision`` and ``from torchvision import
  transforms`` when it is imported, although ``train_ch6``, ``Animator``, ``Accumulator``,
  ``Timer``, ``try_gpu`` and ``accuracy`` never use torchvision.  No torchvision wheel on
  PyPI imports beside the CPU build of torch 2.13.0 (PyPI's 0.28.0 is a CUDA build and
  fails with ``operator torchvision::nms does not exist``), and the real pair that does
  (torch 2.14.1 + torchvision 0.29.1 from PyPI) costs 4.6 GB of CUDA libraries.  So
  :func:`ensure_torchvision` first tries the real torchvision and, **only if it cannot be
  imported**, puts a clearly named stand-in in ``sys.modules``: every attribute of it
  raises :class:`TorchvisionMissing`, which says that torchvision is missing and how to
  install the real one.  A working torchvision is never shadowed.
* **Paddle**: d2l 1.0.3 has no Paddle module.  Only the Chinese edition's ``d2l`` 0.17.x
  has one, and it pins numpy 1.21.5 (the project needs 1.23.5), shares the top-level
  name ``d2l`` with 1.0.3, silences every warning of the process when imported, and its
  ``train_ch6`` only runs on a GPU.  :func:`import_d2l` raises :class:`D2LUnavailable`
  saying so; the reader trains with :func:`common.train.loop.fit` (``scripts/train.py``), which
  is ``train_ch6`` made explicit.

This module imports no framework when it is imported; its functions import ``d2l`` (which
imports the framework) when called.

    from backends.d2l_compat import import_d2l
    d2l = import_d2l("pytorch")          # from d2l import torch as d2l, torchvision or not
    d2l.train_ch6(net, train_iter, test_iter, 1, 0.1, d2l.try_gpu())
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import sys
import types
from typing import Optional

from .config import CARDS, canonical, resolve

#: the d2l 1.0.3 module of each backend (None: the pinned d2l has none), from the cards
D2L_MODULE = {name: c.d2l_module for name, c in CARDS.items()}

#: how a reader installs the real torchvision for the project's torch 2.13.0
TORCHVISION_INSTALL = (
    "pip install torchvision==0.28.0 --index-url https://download.pytorch.org/whl/cpu   "
    "(the CPU build that pairs with the CPU torch 2.13.0; with PyPI's own, CUDA, torch 2.13.0: "
    "pip install torchvision==0.28.0)")

class D2LUnavailable(ImportError):
    """The installed d2l has no module for this framework (or it cannot be imported)."""


class TorchvisionMissing(ImportError):
    """Raised by the stand-in ``torchvision`` for any use of torchvision itself."""


class _StandIn(types.ModuleType):
    """A module of the stand-in torchvision: ``torchvision`` or ``torchvision.transforms``.

    Private and dunder names raise ``AttributeError`` as on any module (``hasattr``,
    ``inspect`` and IPython's completion probe them); every public name raises
    :class:`TorchvisionMissing` with the reason and the install command.
    """

    def __init__(self, name: str, reason: str):
        super().__init__(name, f"Stand-in for {name} put here by backends.d2l_compat: the real "
                               f"torchvision cannot be imported ({reason}).")
        self.__googlenet_stand_in__ = True
        self.__reason__ = reason
        self.__spec__ = importlib.machinery.ModuleSpec(name, None)

    def __getattr__(self, attr):
        if attr.startswith("_"):
            raise AttributeError(f"module {self.__name__!r} (a stand-in) has no attribute {attr!r}")
        raise TorchvisionMissing(
            f"{self.__name__}.{attr} needs the real torchvision, which is not usable here "
            f"({self.__reason__}). backends.d2l_compat put a stand-in in its place so that "
            f"'from d2l import torch as d2l' imports; d2l.train_ch6, Animator, Accumulator, Timer, "
            f"try_gpu and accuracy work without it, but d2l's data helpers "
            f"(load_data_fashion_mnist, FashionMNIST, read_image, ...) need it. Install it with: "
            f"{TORCHVISION_INSTALL}; then restart the Python process (the notebook's kernel).")

    def __repr__(self):
        return f"<module {self.__name__!r} (stand-in: torchvision is missing; see backends.d2l_compat)>"


def is_stand_in(module) -> bool:
    """Whether ``module`` is this module's stand-in (not the real torchvision)."""
    return bool(getattr(module, "__googlenet_stand_in__", False))


def ensure_torchvision() -> str:
    """Make ``import torchvision`` work: ``'real'`` when the real one imports (nothing is
    changed), else put the stand-in in ``sys.modules`` and return ``'stand-in (reason)'``.

    The real torchvision is always tried first, so a working one is never shadowed; a
    failed import (absent, or PyPI's CUDA build beside the CPU torch: ``RuntimeError:
    operator torchvision::nms does not exist``) leaves half-imported ``torchvision.*``
    modules behind, which are removed before the stand-in is put in their place.
    """
    current = sys.modules.get("torchvision")
    if current is not None:
        return f"stand-in ({current.__reason__})" if is_stand_in(current) else "real"
    try:
        importlib.import_module("torchvision")
        return "real"
    except (ImportError, RuntimeError, OSError, AttributeError) as e:
        first = (str(e).strip().splitlines() or [""])[0]
        reason = f"{type(e).__name__}: {first}" if first else type(e).__name__
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    tv, transforms = _StandIn("torchvision", reason), _StandIn("torchvision.transforms", reason)
    tv.__path__ = []                       # a package, so `import torchvision.transforms` resolves
    tv.__dict__["transforms"] = transforms
    sys.modules["torchvision"], sys.modules["torchvision.transforms"] = tv, transforms
    return f"stand-in ({reason})"


def remove_stand_in() -> bool:
    """Take the stand-in out of ``sys.modules`` again (tests); True if there was one."""
    removed = False
    for name in ("torchvision.transforms", "torchvision"):
        if is_stand_in(sys.modules.get(name)):
            del sys.modules[name]
            removed = True
    return removed


def d2l_version() -> Optional[str]:
    """The installed d2l's version (None when d2l is not installed)."""
    try:
        from importlib.metadata import PackageNotFoundError, version
        return version("d2l")
    except PackageNotFoundError:
        return None


def has_module(backend: Optional[str] = None) -> bool:
    """Whether the installed d2l has a module for this backend (without importing it)."""
    name = D2L_MODULE[resolve(backend)]
    if name is None or importlib.util.find_spec("d2l") is None:
        return False
    return importlib.util.find_spec(name) is not None


def why_not(backend: Optional[str] = None) -> Optional[str]:
    """Why ``import_d2l(backend)`` cannot work here (None when it can, as far as one can tell
    without importing the framework)."""
    backend = resolve(backend)
    if importlib.util.find_spec("d2l") is None:
        return "the book's d2l package is not installed: pip install d2l==1.0.3 (or pip install -e '.[dev]')"
    if D2L_MODULE[backend] is None or not has_module(backend):
        return CARDS[backend].d2l_missing or \
            f"the installed d2l {d2l_version()} has no {D2L_MODULE[backend]} module"
    return None


def _version(text: str) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in text.split("+")[0].split(".")[:2])


def plotting_problem() -> Optional[str]:
    """Why pyplot cannot plot in a Jupyter kernel here (None when it can).

    matplotlib before 3.9 (d2l 1.0.3 pins 3.7.2) imports ``backend2gui`` from
    ``IPython.core.pylabtools`` whenever pyplot picks its backend inside IPython, and IPython
    9.16 removed it: the first plot of a kernel (the book's ``Animator``, the project's
    curves) fails with ``ImportError: cannot import name 'backend2gui'``.  Read from the
    installed packages' metadata, without importing them.
    """
    from importlib.metadata import PackageNotFoundError, version
    try:
        mpl, ipython = version("matplotlib"), version("ipython")
    except PackageNotFoundError:
        return None
    if _version(mpl) < (3, 9) and _version(ipython) >= (9, 16):
        return (f"matplotlib {mpl} (the version d2l 1.0.3 pins) cannot plot in a Jupyter kernel with "
                f"IPython {ipython}: it imports IPython.core.pylabtools.backend2gui, which IPython 9.16 "
                f"removed. Install an older IPython, pip install 'ipython<9.16' (the project's dev extra "
                f"pins it), and restart the kernel.")
    return None


def import_d2l(backend: Optional[str] = None):
    """``from d2l import <framework> as d2l`` for a backend (default: ``$GOOGLENET_BACKEND``).

    PyTorch: :func:`ensure_torchvision` first.  Raises :class:`D2LUnavailable` with the
    reason where the installed d2l has no such module (Paddle: its card's ``d2l_missing``).
    """
    backend = canonical(backend) if backend else resolve()
    reason = why_not(backend)
    if reason:
        raise D2LUnavailable(f"d2l for {backend}: {reason}")
    if CARDS[backend].d2l_needs_torchvision:
        ensure_torchvision()
    return importlib.import_module(D2L_MODULE[backend])


@contextlib.contextmanager
def final_figure_only(d2l, show: bool = True):
    """Inside: the book's ``Animator`` draws but shows nothing; on leaving, its last figure
    is shown once (``show=False``: never) and closed.

    ``Animator.add`` redraws and calls ``IPython.display.display(fig)`` after every few
    batches; outside a notebook each call renders an SVG that nobody sees (about 1 s on a
    busy CPU), and in a notebook on a CPU the live animation costs as much.  d2l looks up
    ``display`` among its module's globals, so it is replaced here for the duration.
    Yields a list that holds the last figure.
    """
    real, last = d2l.display, []

    def keep(*objs, **kw):
        if objs:
            last[:] = [objs[0]]

    d2l.display = types.SimpleNamespace(display=keep, clear_output=lambda *a, **kw: None)
    try:
        yield last
    finally:
        d2l.display = real
        if last:
            if show:
                real.display(last[0])
            d2l.plt.close(last[0])      # or a notebook's inline backend shows it a second time
