"""Pickles read without running code: a restricted unpickler for data files.

``pickle.load`` calls whatever a file names (``os.system``, ``builtins.eval``, any class's
``__reduce__``), so a pickle from a stranger can run code.  :func:`loads` unpickles with
:class:`RestrictedUnpickler`, which resolves only the few globals that plain data needs
(NumPy arrays and dtypes, and harmless containers) and refuses every other one, naming it,
*before* anything is called.  It serves the CIFAR-10 batches (``common.inputs.datasets``), Paddle's
``.pdparams`` weight files and ``.pdopt`` optimiser states (``backends.paddle``).
"""
from __future__ import annotations

import io
import pickle
from typing import FrozenSet, Tuple

import numpy as np

__all__ = ["Refused", "RestrictedUnpickler", "loads", "is_plain", "ARRAYS", "CONTAINERS", "read_paddle",
           "PickleFileError"]

#: ``paddle.save``'s bookkeeping entries: the name table, and arrays over 1 GB split in slices
_NAME_TABLE, _BIG_PARAMS = "StructuredToParameterName@@", "UnpackBigParamInfor@@"


class PickleFileError(ValueError):
    """A data pickle that is damaged, refused or not of the expected shape (one line)."""


#: NumPy's array and dtype reconstruction (protocols 2-5, NumPy 1.x and 2.x module names)
ARRAYS: FrozenSet[Tuple[str, str]] = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol 5
    ("_codecs", "encode"),          # bytes in protocol-2 pickles written by Python 3
})
#: containers that some writers pickle by reference (Paddle: ``OrderedDict``; a tensor as
#: ``tuple((name, array))``); constructing them runs no code of the file's choosing
CONTAINERS: FrozenSet[Tuple[str, str]] = frozenset({
    ("collections", "OrderedDict"), ("builtins", "tuple"), ("__builtin__", "tuple"),
})


class Refused(pickle.UnpicklingError):
    """The pickle names a global (a function, a class) outside the allowed set."""

    def __init__(self, module: str, name: str):
        self.type_name = f"{module}.{name}"
        super().__init__(f"refusing to unpickle {self.type_name}: only dicts, lists, strings, "
                         f"numbers and numpy arrays are accepted (a pickle that names anything "
                         f"else could run code)")


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain data only: dicts, lists, tuples, bytes, str, numbers, NumPy arrays (and
    ``allowed`` extra globals).  Any other global, and persistent ids, raise :class:`Refused`
    before anything is called, so a malicious file cannot run code."""

    def __init__(self, file, *, allowed=ARRAYS, **kwargs):
        super().__init__(file, **kwargs)
        self.allowed = frozenset(allowed)

    def find_class(self, module, name):
        if (module, name) in self.allowed:
            return super().find_class(module, name)
        raise Refused(module, name)

    def persistent_load(self, pid):
        raise Refused("persistent id", repr(pid)[:40])


def loads(raw: bytes, *, allowed=ARRAYS, encoding: str = "ASCII"):
    """Unpickle ``raw`` with :class:`RestrictedUnpickler`.  Raises :class:`Refused` for a
    forbidden global, and the unpickler's own errors (``UnpicklingError``, ``EOFError``,
    ``ValueError`` ...) for a damaged or truncated pickle."""
    return RestrictedUnpickler(io.BytesIO(raw), allowed=allowed, encoding=encoding).load()


def is_plain(obj, depth: int = 0, max_depth: int = 8) -> bool:
    """Whether ``obj`` is plain data: numbers, strings, bytes, None, numeric arrays (no object
    dtype), and lists, tuples and dicts of them, nested at most ``max_depth`` deep."""
    if depth > max_depth:
        return False
    if isinstance(obj, np.ndarray):
        return obj.dtype != object
    if isinstance(obj, (bytes, str, int, float, bool, type(None))):
        return True
    if isinstance(obj, (list, tuple)):
        return all(is_plain(v, depth + 1, max_depth) for v in obj)
    if isinstance(obj, dict):
        return all(is_plain(k, depth + 1, max_depth) and is_plain(v, depth + 1, max_depth)
                   for k, v in obj.items())
    return False


def read_paddle(path, what="Paddle file"):
    """A Paddle pickle (``paddle.save`` of a dict: ``.pdparams``, ``.pdopt``) as a dict of NumPy
    arrays, read with the restricted unpickler of :func:`loads` instead of
    ``paddle.load`` (which unpickles anything, so a file could run code).

    Only what ``paddle.save`` writes for a dict of tensors is accepted: dicts (and
    ``OrderedDict``), NumPy arrays, strings and numbers, a tensor pickled as the pair
    ``(name, array)``, and its bookkeeping entries (the name table, dropped; arrays over
    1 GB split by protocols 2 and 3, joined again).  A pickle that names any other global
    (``builtins.eval``, which Paddle itself uses for ``DenseTensor``, ``os.system`` ...)
    raises ``PickleFileError`` naming it, before anything runs; so does a damaged file.
    """
    with open(path, "rb") as f:
        raw = f.read()
    try:
        obj = loads(raw, allowed=ARRAYS | CONTAINERS, encoding="latin1")
    except Refused as e:
        raise PickleFileError(f"{path}: {e}") from None
    except Exception as e:            # UnpicklingError, EOFError, ValueError ... on a damaged file
        raise PickleFileError(f"{path}: not a readable {what} ({type(e).__name__}: {e}); it is "
                              f"damaged or truncated") from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise PickleFileError(f"{path}: not a {what} (expected a dict of tensor names to arrays, "
                              f"got {type(obj).__name__})")
    obj = dict(obj)
    obj.pop(_NAME_TABLE, None)
    big = obj.pop(_BIG_PARAMS, None) or {}
    out = {}
    try:
        for name, info in big.items():           # protocols 2 and 3 split arrays over 1 GB
            out[name] = np.concatenate([obj.pop(part) for part in info["slices"]]).reshape(info["OriginShape"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise PickleFileError(f"{path}: not a readable {what} (a split tensor cannot be joined: {e})") from None
    for name, value in obj.items():
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
            value = value[1]                     # a tensor pickled as (name, array)
        if not isinstance(value, np.ndarray) or value.dtype == object:
            raise PickleFileError(f"{path}: not a {what}: entry {name!r} is a {type(value).__name__}, "
                                  f"not an array")
        out[name] = value
    return out
