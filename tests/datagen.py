"""Small generated Fashion-MNIST-like IDX folders for the tests (no network, no real data)."""
import os

import numpy as np

from common.data import write_idx


def patterns(n, seed=0, size=28):
    """Class-dependent images a convnet can learn: class k is a grating at angle 18k degrees
    whose brightness grows with k, plus noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    rng.shuffle(y)
    r, c = np.mgrid[0:size, 0:size]
    angle = np.deg2rad(18 * y)[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    grating = np.sin((r * np.cos(angle) + c * np.sin(angle)) * 2 * np.pi / 7 + phase)
    X = 30 + 15 * y[:, None, None] + 50 * grating + rng.normal(0, 15, size=(n, size, size))
    return np.clip(X, 0, 255).astype(np.uint8), y.astype(np.uint8)


def make_dataset(folder, n_train=200, n_test=100, gz=True, seed=0):
    os.makedirs(folder, exist_ok=True)
    ext = ".gz" if gz else ""
    Xtr, ytr = patterns(n_train, seed)
    Xte, yte = patterns(n_test, seed + 1)
    write_idx(os.path.join(folder, "train-images-idx3-ubyte" + ext), Xtr)
    write_idx(os.path.join(folder, "train-labels-idx1-ubyte" + ext), ytr)
    write_idx(os.path.join(folder, "t10k-images-idx3-ubyte" + ext), Xte)
    write_idx(os.path.join(folder, "t10k-labels-idx1-ubyte" + ext), yte)
    return folder
