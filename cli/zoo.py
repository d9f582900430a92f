"""The zoos' ImageNet weights on the command line: ``imagenet:SOURCE`` (downloaded into the cache,
hash checked) or a zoo's own file (``.pth``, ``.h5``, ``.pdparams``, ``.params``), for
``scripts/convert.py``, ``scripts/predict.py`` and ``--init-from`` (docs/pretrained.md)."""
from __future__ import annotations

import os
from typing import Optional, Tuple

from common.inputs.download import DownloadError
from common.net import pretrained as PT, weights as W, zoofiles as ZF

from .errors import UserError

#: suffixes only the zoos' files carry (this project's own formats: .npz, .pt, .weights.h5,
#: .params, .pdparams)
ZOO_ONLY = (".pth", ".hdf5")


def is_token(text: str) -> bool:
    return isinstance(text, str) and text.startswith(PT.TOKEN)


def _zoo_suffix(path: str) -> bool:
    return path.endswith(ZOO_ONLY) or (path.endswith(".h5") and not path.endswith(".weights.h5"))


def converted(path: str) -> Optional[PT.Source]:
    """The source of a neutral ``.npz`` converted from a zoo file (its metadata says), else None."""
    if not (path.endswith(".npz") and os.path.isfile(path)):
        return None
    try:
        name = W.meta(path).get("pretrained")
    except W.WeightsError:
        return None
    return PT.source(name) if name in PT.SOURCES else None


def load(text: str, download: bool = True) -> Optional[Tuple[PT.Source, "dict", str]]:
    """``(source, canonical weights, path)`` of ``imagenet:SOURCE``, a zoo file or an ``.npz``
    converted from one; ``None`` for anything else (one of this project's own files).  A
    project's own ``.params`` / ``.pdparams`` shares its suffix with the zoos': its content
    decides (the table's names, or the zoo's)."""
    try:
        if is_token(text):
            src = PT.source(text)
            path = PT.locate(text, download=download)
            return PT.read(path, src.name) + (path,)
        conv = converted(text)
        if conv is not None:
            return conv, W.load(text), text
        if not os.path.isfile(text) or ZF.detect(text) is None:
            return None
        if _zoo_suffix(text):
            return PT.read(text) + (text,)
        try:                                   # .weights.h5 / .params / .pdparams: the zoo's, or ours
            return PT.read(text) + (text,)
        except Exception:                      # ours (or damaged): its own reader says which, in one line
            return None
    except DownloadError as e:
        raise UserError(str(e)) from None
    except PT.PretrainedError as e:
        raise UserError(str(e)) from None
    except (W.WeightsError, OSError) as e:
        raise UserError(f"{text}: {e}") from None
