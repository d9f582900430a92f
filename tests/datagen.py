"""Small generated Fashion-MNIST-like IDX folders for the tests (no network, no real data)."""
import os

import numpy as np

from common.inputs.data import write_idx


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


def module_dataset(tmp_path_factory, name, **sizes):
    """:func:`make_dataset` in a temporary folder of its own for a test module, with
    ``$GOOGLENET_CACHE`` (the resized arrays) beside it."""
    tmp = tmp_path_factory.mktemp(name)
    os.environ["GOOGLENET_CACHE"] = str(tmp / "cache")
    return make_dataset(str(tmp / "data"), **sizes)


#: shape and colour of each generated class (a folder per class, in this order)
SHAPES = ("circle", "square", "triangle", "cross", "bar")
COLOURS = ((220, 40, 40), (40, 180, 60), (50, 80, 220), (230, 200, 40), (160, 60, 200))


def shape_image(k, rng, size=(48, 40), mode="RGB"):
    """A Pillow image of class ``k``: its shape in its colour (jittered) at a random place
    and scale on a noisy background; converted to ``mode``."""
    from PIL import Image, ImageDraw
    w, h = size
    bg = rng.integers(60, 140, size=3)
    noise = rng.normal(0, 12, size=(h, w, 3))
    im = Image.fromarray(np.clip(bg + noise, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(im)
    r = rng.uniform(0.25, 0.4) * min(w, h)
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    colour = tuple(int(c) for c in np.clip(np.array(COLOURS[k % 5]) + rng.integers(-25, 26, 3), 0, 255))
    kind = SHAPES[k % 5]
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif kind == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif kind == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    elif kind == "cross":
        t = r / 3
        draw.rectangle([cx - r, cy - t, cx + r, cy + t], fill=colour)
        draw.rectangle([cx - t, cy - r, cx + t, cy + r], fill=colour)
    else:
        draw.rectangle([cx - r, cy - r / 4, cx + r, cy + r / 4], fill=colour)
    return im.convert(mode) if mode != "RGB" else im


def make_image_folder(root, n_classes=4, n_train=8, n_test=4, one_tree=False, seed=0,
                      sizes=((48, 40), (64, 64), (24, 30), (36, 52)), formats=("png", "jpg"),
                      mode="RGB", names=None):
    """``root/train/<class>/*`` and ``root/test/<class>/*`` (or ``root/<class>/*`` with
    ``one_tree``, ``n_train + n_test`` images per class) of :func:`shape_image` pictures
    of several sizes, saved alternately in ``formats``.  Returns ``root``."""
    rng = np.random.default_rng(seed)
    names = names or [SHAPES[k % 5] + ("" if k < 5 else str(k)) for k in range(n_classes)]
    parts = [("", n_train + n_test)] if one_tree else [("train", n_train), ("test", n_test)]
    i = 0
    for part, n in parts:
        for k, name in enumerate(names):
            d = os.path.join(root, part, name)
            os.makedirs(d, exist_ok=True)
            for j in range(n):
                im = shape_image(k, rng, sizes[i % len(sizes)], mode)
                fmt = formats[i % len(formats)]
                im.save(os.path.join(d, f"{name}_{j:03d}.{fmt}"))
                i += 1
    return root
