"""Predicting on pictures, framework-free: a picture file to the network's input batch,
logits to class names and probabilities.

A picture goes through exactly the steps the training data went through
(``docs/datasets.md``): Pillow decodes it, :func:`common.inputs.datasets.pixels` converts it to
the model's channels (grey by ITU-R 601-2 luma, or RGB), :func:`common.inputs.data.resize`
resizes it to the trained size and :class:`common.inputs.data.Loader` makes the float32 batch
(``x / 255``, then ``(x - mean) / std`` when the run normalised its data).  A
Fashion-MNIST picture (28x28 grey) is therefore read into the very bytes the IDX file
gives.  Fashion-MNIST shows light clothes on a black background: a photo of a dark shirt
on white paper looks nothing like it.
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..inputs import datasets as DS
from ..inputs.data import DataError, Loader, Split
from ..net.zoo import preprocess


def read_picture(path: str, channels: int, size: int) -> np.ndarray:
    """One picture file as ``(channels, size, size)`` uint8, prepared like the training data;
    :class:`~common.inputs.data.DataError` for a missing path, a folder, an empty file or a file
    that is not a picture Pillow reads."""
    if not os.path.exists(path):
        raise DataError(f"{path} does not exist")
    if os.path.isdir(path):
        raise DataError(f"{path} is a folder, not a picture (give picture files: PNG, JPEG, ...)")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path} is empty (0 bytes), not a picture")
    return DS.decode_image(path, channels, size)


def batch(images: np.ndarray, mean: Optional[Sequence[float]] = None,
          std: Optional[Sequence[float]] = None) -> np.ndarray:
    """uint8 ``(N, C, H, W)`` pictures as the float32 batch the network was trained on:
    :class:`common.inputs.data.Loader`'s own arithmetic (``x / 255``, then ``(x - mean) / std``
    with a normalisation)."""
    images = np.asarray(images, np.uint8)
    norm = {} if mean is None else dict(mean=mean, std=std)
    loader = Loader(Split(images, np.zeros(len(images), np.int64)), max(len(images), 1), prefetch=0, **norm)
    return next(loader.epoch(0))[0]


def prepare(paths: Sequence[str], preprocessing: dict) -> np.ndarray:
    """Picture files as one input batch, following an artifact's ``preprocessing``
    metadata (``channels``, ``size``, ``normalize``, ``mean``, ``std``; see
    :func:`common.serve.export.base_meta`).  Every file is read before any is predicted, so a bad
    one stops the command with its name."""
    p = preprocessing
    if p.get("fit"):                          # a zoo's ImageNet weights: the zoo's own steps
        return zoo_batch(np.stack([read_zoo_picture(path, p) for path in paths]), p)
    images = np.stack([read_picture(path, int(p["channels"]), int(p["size"])) for path in paths])
    if p.get("normalize"):
        return batch(images, p["mean"], p["std"])
    return batch(images)


#: Pillow's filters by the names the zoos' transforms use
FILTERS = {"nearest": 0, "bilinear": 2, "bicubic": 3}      # Image.NEAREST, BILINEAR, BICUBIC


def read_zoo_picture(path: str, p: dict) -> np.ndarray:
    """One picture as the zoo whose ImageNet weights predict expects it, uint8 ``(H, W, 3)``:
    RGB; ``fit='shorter'``: the shorter side scaled to ``resize_to`` (the longer side
    ``int(resize_to * long / short)``) then the centre ``size`` x ``size`` crop (torchvision's
    ``Resize`` + ``CenterCrop``, as Paddle's and Gluon's evaluation transforms); ``'squash'``:
    the whole picture scaled to ``size`` x ``size`` (Keras's ``load_img(target_size=...)``)."""
    from PIL import Image
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        read_picture(path, 3, 1)                       # its one line: missing, a folder, empty
    try:
        im = Image.open(path)
        im = im.convert("RGB")
    except Exception as e:                  # Pillow's UnidentifiedImageError, OSError of a damaged file
        raise DataError(f"{path}: not a picture Pillow reads ({type(e).__name__})") from None
    size, f = int(p["size"]), FILTERS[p.get("interpolation", "bilinear")]
    if p["fit"] == "squash":
        return np.asarray(im.resize((size, size), f), np.uint8)
    w, h = im.size
    target = int(p.get("resize_to") or size)
    ow, oh = (target, int(target * h / w)) if w <= h else (int(target * w / h), target)
    im = im.resize((ow, oh), f)
    top, left = int(round((oh - size) / 2.0)), int(round((ow - size) / 2.0))
    return np.asarray(im.crop((left, top, left + size, top + size)), np.uint8)


def zoo_batch(images: np.ndarray, p: dict) -> np.ndarray:
    """uint8 ``(N, H, W, 3)`` pictures as the float32 NCHW batch: ``(x / 255 - mean) / std``
    (:func:`common.net.zoo.preprocess`, the arithmetic the zoo tests check)."""
    return preprocess(images, p["mean"], p["std"])


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable: the row maximum is subtracted first)."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def top_k(probabilities: np.ndarray, classes: Sequence[str], k: int = 3) -> List[Tuple[str, float]]:
    """The ``k`` most probable classes of one row, most probable first (ties: lower index)."""
    p = np.asarray(probabilities, np.float64)
    order = np.argsort(-p, kind="stable")[:max(1, min(int(k), len(p)))]
    return [(str(classes[i]), float(p[i])) for i in order]


def format_line(path: str, top: Sequence[Tuple[str, float]]) -> str:
    """``shirt.png: shirt 0.912, t-shirt 0.051, pullover 0.020``"""
    return f"{path}: " + ", ".join(f"{name} {p:.3f}" for name, p in top)
