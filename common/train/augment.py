"""Data augmentation on the NumPy batch, seeded, so every backend sees the same pixels.

It works on the uint8 images of a batch before they become float32 (``common.inputs.data.Loader``
calls it), with a generator seeded from ``(seed, epoch, step)``: the same run gives the
same augmented batches on MXNet, PyTorch, TensorFlow and Paddle, and after a resume.

* ``crop_padding=p``: pad each image with ``p`` black pixels on every side and cut a random
  window of the original size (torchvision's ``RandomCrop(size, padding=p)``): small
  shifts, the classic CIFAR / Fashion-MNIST augmentation;
* ``flip=True``: mirror each image left-right with probability 1/2
  (``RandomHorizontalFlip``); clothes, objects and most photographs keep their class when
  mirrored (digits and text would not: leave it off for them);
* ``erase=q``: with probability ``q``, blank a random rectangle of 2-33 % of the image
  with black (a simplified ``RandomErasing`` / Cutout): it makes the network use more than
  one part of the object, which helps on small datasets.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Augment:
    crop_padding: int = 0
    flip: bool = False
    erase: float = 0.0

    def __bool__(self):
        return bool(self.crop_padding or self.flip or self.erase)

    def to_dict(self) -> dict:
        return asdict(self)

    def __call__(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augment a uint8 batch ``(N, H, W)`` or ``(N, C, H, W)``; returns a new array."""
        X = np.array(images, copy=True)
        n, h, w = len(X), X.shape[-2], X.shape[-1]
        if self.crop_padding:
            p = self.crop_padding
            pad = [(0, 0)] * (X.ndim - 2) + [(p, p), (p, p)]
            padded = np.pad(X, pad)
            dy, dx = rng.integers(0, 2 * p + 1, n), rng.integers(0, 2 * p + 1, n)
            X = np.stack([padded[i, ..., dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
        if self.flip:
            mirror = rng.random(n) < 0.5
            X[mirror] = X[mirror][..., ::-1]
        if self.erase:
            for i in np.flatnonzero(rng.random(n) < self.erase):
                area = rng.uniform(0.02, 1 / 3) * h * w
                aspect = np.exp(rng.uniform(np.log(0.3), np.log(1 / 0.3)))
                eh = int(min(h, max(1, round(np.sqrt(area * aspect)))))
                ew = int(min(w, max(1, round(np.sqrt(area / aspect)))))
                y, x = rng.integers(0, h - eh + 1), rng.integers(0, w - ew + 1)
                X[i, ..., y:y + eh, x:x + ew] = 0
        return X


def step_rng(seed: int, epoch: int, step: int, stream: int = 0) -> np.random.Generator:
    """The generator of one training step: the same numbers for the same (seed, epoch, step)
    in every process and on every backend (``stream`` separates independent uses)."""
    return np.random.default_rng([int(seed), int(epoch), int(step), int(stream)])
