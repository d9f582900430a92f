"""Every dataset behind one interface, framework-free: Fashion-MNIST, image folders, CIFAR-10.

    ds = load_dataset("folder", "~/pictures", 96)          # or "fashion-mnist", "cifar10"
    train_iter, test_iter = ds.loaders(batch_size=128, seed=0)
    net = bk.build("bn", input_size=96, **ds.model_options())   # in_channels, num_classes
    record["dataset"] = ds.describe()

Every dataset becomes two :class:`~common.inputs.data.Split` of uint8 images (``(N, H, W)`` for
Fashion-MNIST, ``(N, C, H, W)`` otherwise) resized once with :func:`common.inputs.data.resize`
and cached in ``$GOOGLENET_CACHE``, plus int64 labels, class names, the channel count
and the per-channel mean and standard deviation of the training split (in [0, 1]
units).  :class:`~common.inputs.data.Loader` turns them into the same float32 NCHW batches for
every backend.  Fashion-MNIST keeps the book's ``ToTensor`` scaling (no normalisation);
image folders and CIFAR-10 are normalised with their training split's mean and std.

An image folder is read in one of two layouts::

    DIR/train/<class>/*.jpg  and  DIR/test/<class>/*.jpg     (the test split is given)
    DIR/<class>/*.jpg        with val_fraction=0.2          (a seeded, stratified part of
                                                              each class is held out)

The rules (classes, channels, modes, resizing, bad files, the cache, memory) are in
``docs/datasets.md``.  Every problem with the data raises :class:`~common.inputs.data.DataError`
with one message naming the folder, class or file.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from . import data as D
from ..net import safepickle
from .data import DataError, Loader, Split

#: Bumped whenever the bytes a cache holds would change (decoding, resizing, layout).
CACHE_FORMAT = 1
DATASETS = ("fashion-mnist", "folder", "cifar10")
ALIASES = {"fashion-mnist": "fashion-mnist", "fashion_mnist": "fashion-mnist",
           "fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist",
           "folder": "folder", "image-folder": "folder", "imagefolder": "folder",
           "images": "folder", "cifar10": "cifar10", "cifar-10": "cifar10", "cifar_10": "cifar10"}
#: torchvision's IMG_EXTENSIONS (also Paddle's) plus Keras's .gif; compared case-insensitively.
IMG_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff",
                  ".webp")
#: Pillow modes without colour; any other mode (RGB, RGBA, P, CMYK, YCbCr, ...) is colour.
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
#: 16-bit grey (and 32-bit integer 'I', e.g. a 16-bit PGM, when a value exceeds 255): scaled by
#: 255/65535, because Pillow's convert('L') clips them at 255 (a white picture).
WIDE_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
CHUNK = 256                      # images decoded and written per step while building a cache

CIFAR_FILE = "cifar-10-python.tar.gz"
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR_MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = ("test_batch",)
CIFAR_META = "batches.meta"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck")


def resolve_name(name: Optional[str]) -> str:
    """The canonical dataset name (``None`` or empty: ``'fashion-mnist'``)."""
    key = (name or "fashion-mnist").strip().lower()
    if key not in ALIASES:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return ALIASES[key]


def default_dir(name: str) -> Optional[str]:
    """Where a dataset lives when no folder is given (``None`` for image folders)."""
    name = resolve_name(name)
    if name == "fashion-mnist":
        return D.data_dir(None)              # $GOOGLENET_DATA, else ~/.cache/googlenet/fashion-mnist
    if name == "cifar10":
        return os.path.join(os.path.expanduser("~"), ".cache", "googlenet", "cifar-10")
    return None


# ----------------------------------------------------------------------------- containers

class ImageView:
    """Rows of a uint8 image array (often a read-only memmap) without copying it.

    ``index`` picks rows (a split of one tree, a ``limit``); ``channels=3`` on a grey
    ``(N, H, W)`` array gives ``(N, 3, H, W)`` rows, the grey value repeated (what
    ``convert('RGB')`` does).  Indexing with integers returns a NumPy array of those rows
    only; slicing returns another view.
    """

    def __init__(self, base, index=None, channels: Optional[int] = None):
        self.base = base
        self.index = None if index is None else np.asarray(index, np.int64)
        self.expand = channels == 3 and base.ndim == 3

    def __len__(self):
        return len(self.base) if self.index is None else len(self.index)

    @property
    def shape(self):
        rest = tuple(self.base.shape[1:])
        return (len(self),) + ((3,) + rest if self.expand else rest)

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def dtype(self):
        return self.base.dtype

    def __getitem__(self, key):
        if isinstance(key, slice):
            rows = np.arange(len(self.base))[key] if self.index is None else self.index[key]
            return ImageView(self.base, rows, 3 if self.expand else None)
        key = np.asarray(key)
        rows = key if self.index is None else self.index[key]
        out = np.asarray(self.base[rows])
        if self.expand:
            out = np.repeat(np.expand_dims(out, -3), 3, axis=-3)
        return out

    def __array__(self, dtype=None):
        out = self[np.arange(len(self))]
        return out if dtype is None else out.astype(dtype)


@dataclass
class Dataset:
    """Train and test splits plus everything a model and a run record need.

    ``mean`` / ``std``: per channel, in [0, 1] units, of the training split as the network
    sees it (after resizing and channel conversion, after ``limit``).  ``normalize``: whether
    :meth:`loaders` applies them (image folders and CIFAR-10: yes; Fashion-MNIST: no, the
    book's recipe).
    """
    name: str
    train: Split
    test: Split
    classes: Tuple[str, ...]
    in_channels: int
    size: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    normalize: bool
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def model_options(self) -> dict:
        """What the model takes from the data: ``in_channels`` and ``num_classes``."""
        return dict(in_channels=self.in_channels, num_classes=self.num_classes)

    def loaders(self, batch_size: int, seed: int = 0, prefetch: int = 2) -> Tuple[Loader, Loader]:
        """(train loader shuffled from ``seed + epoch``, test loader in order), normalised
        with the training split's mean and std when :attr:`normalize`."""
        norm = dict(mean=self.mean, std=self.std) if self.normalize else {}
        return (Loader(self.train, batch_size, shuffle=True, seed=seed, prefetch=prefetch, **norm),
                Loader(self.test, batch_size, prefetch=prefetch, **norm))

    def recipe_loaders(self, recipe, at_sizes: Optional[Dict[int, "Dataset"]] = None):
        """(train, test) loaders for a :class:`common.train.train_config.Recipe`: its batch size,
        seed and augmentation, and its train / test scales (``at_sizes``: the same dataset
        loaded at each of those sizes; this one is at ``recipe.resize``)."""
        at_sizes = {**(at_sizes or {}), self.size: self}
        norm = dict(mean=self.mean, std=self.std) if self.normalize else {}
        train_scales = {s: at_sizes[s].train for s in recipe.train_scales} or None
        test_scales = {s: at_sizes[s].test for s in recipe.test_scales} or None
        return (Loader(self.train, recipe.batch_size, shuffle=True, seed=recipe.seed, augment=recipe.augment(),
                       scales=train_scales, scale_every=recipe.scale_every, **norm),
                Loader(self.test, recipe.batch_size, scales=test_scales, **norm))

    def describe(self) -> dict:
        """The dataset's entry in a run record (JSON-serialisable)."""
        counts = lambda s: np.bincount(s.labels, minlength=self.num_classes).tolist()
        out = dict(name=self.name, classes=list(self.classes), num_classes=self.num_classes,
                   in_channels=self.in_channels, size=self.size,
                   train_examples=len(self.train), test_examples=len(self.test),
                   class_counts=dict(train=counts(self.train), test=counts(self.test)),
                   mean=list(self.mean), std=list(self.std), normalize=self.normalize)
        out.update(self.info)
        return out

    def summary(self) -> str:
        """One line for a terminal (two when the shipped sample stands in for Fashion-MNIST)."""
        names = ", ".join(self.classes[:8]) + (", ..." if self.num_classes > 8 else "")
        line = (f"{self.name} ({self.info.get('dir')}): {self.num_classes} classes ({names}), "
                f"{self.in_channels} channel{'s' if self.in_channels > 1 else ''}, "
                f"{len(self.train)} train / {len(self.test)} test images at {self.size}x{self.size}")
        if self.info.get("val_fraction"):
            line += f" (test = {self.info['val_fraction']:g} of each class, held out with seed " \
                    f"{self.info['split_seed']})"
        if self.normalize:
            line += "; normalised with the training mean/std"
        n = self.info.get("skipped_count", 0)
        if n:
            first = self.info["skipped"][0]
            line += (f"; {n} unreadable file{'s' if n > 1 else ''} skipped (first: "
                     f"{first['file']}: {first['reason']})")
        if self.info.get("sample"):
            line = line.replace(f"{self.name} (", f"{self.name} SAMPLE (", 1)
        return f"{self.info['notice']}\n{line}" if self.info.get("notice") else line


# ----------------------------------------------------------------------------- statistics

def image_sums(block: np.ndarray) -> np.ndarray:
    """Per image and channel, the exact (sum, sum of squares) of the pixel values:
    ``(n, C, 2)`` int64 for uint8 ``(n, C, H, W)`` (or ``(n, H, W)``, C = 1) images."""
    block = np.asarray(block)
    n = len(block)
    c = block.shape[1] if block.ndim == 4 else 1
    flat = block.reshape(n, c, -1)
    wide = flat.astype(np.uint16)                     # 255 ** 2 fits in uint16
    return np.stack([flat.sum(-1, dtype=np.int64), (wide * wide).sum(-1, dtype=np.int64)], -1)


def channel_totals(images, chunk: int = 1024) -> np.ndarray:
    """``(C, 2)`` exact totals of :func:`image_sums` over a whole split, chunk by chunk."""
    total = None
    for i in range(0, len(images), chunk):
        part = image_sums(np.asarray(images[i:i + chunk])).sum(0)
        total = part if total is None else total + part
    return total


def mean_std(totals: np.ndarray, pixels: int) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation in [0, 1] units from exact
    totals over ``pixels`` pixels per channel; a constant channel gets std 1 (no scaling)."""
    means, stds = [], []
    for s, q in np.asarray(totals, dtype=object):
        s, q = int(s), int(q)
        var = (q * pixels - s * s) / (pixels * pixels)      # exact integers until here
        means.append(s / pixels / 255)
        std = max(var, 0.0) ** 0.5 / 255
        stds.append(std if std > 0 else 1.0)
    return tuple(means), tuple(stds)


# ----------------------------------------------------------------------------- splitting

def stratified_split(labels: np.ndarray, fraction: float, seed: int = 0,
                     classes: Optional[Tuple[str, ...]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows), both sorted: ``round(fraction * n_k)`` examples of each
    class k (at least one, and at least one left for training) drawn with
    ``numpy.random.default_rng(seed)``, class by class in label order."""
    if not 0 < fraction < 1:
        raise DataError(f"the validation fraction must be between 0 and 1 (exclusive), "
                        f"not {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    test = []
    for k in range(int(labels.max()) + 1 if labels.size else 0):
        rows = np.flatnonzero(labels == k)
        if len(rows) < 2:
            name = classes[k] if classes else k
            raise DataError(f"class {name!r} has {len(rows)} image{'s' if len(rows) != 1 else ''}: "
                            f"splitting off a validation fraction needs at least 2 per class "
                            f"(one to train on, one to test)")
        n_test = min(max(int(np.floor(fraction * len(rows) + 0.5)), 1), len(rows) - 1)
        test.append(rows[rng.permutation(len(rows))[:n_test]])
    test = np.sort(np.concatenate(test)) if test else np.zeros(0, np.int64)
    train = np.setdiff1d(np.arange(len(labels)), test)
    return train, test


# ----------------------------------------------------------------------------- the cache

def _cache_root(key: str) -> str:
    return os.path.join(D.cache_dir(), key)


def _read_cache(key: str):
    """(meta, {part: (images memmap, labels, sums)}) of a complete cache entry, or None."""
    path = _cache_root(key)
    try:
        with open(os.path.join(path, "meta.json")) as f:
            meta = json.load(f)
        if meta.get("format") != CACHE_FORMAT:
            return None
        parts = {}
        for part in meta["parts"]:
            images = np.load(os.path.join(path, f"{part}.npy"), mmap_mode="r")
            labels = np.load(os.path.join(path, f"{part}-labels.npy"))
            sums = np.load(os.path.join(path, f"{part}-sums.npy"))
            if not len(images) == len(labels) == len(sums):
                return None
            parts[part] = (images, labels, sums)
        return meta, parts
    except (OSError, ValueError, KeyError, TypeError):
        return None                                  # missing or broken: rebuilt


class _CacheBuilder:
    """Writes one cache entry into a private temporary folder, renamed into place when
    complete (so a crash or a concurrent run never leaves a half-written entry)."""

    def __init__(self, key: str, use_cache: bool):
        self.key, self.use_cache = key, use_cache
        self.tmp = None
        if use_cache:
            os.makedirs(D.cache_dir(), exist_ok=True)
            self.tmp = tempfile.mkdtemp(prefix=key + ".tmp-", dir=D.cache_dir())
        self.parts = {}

    def images(self, part: str, shape) -> np.ndarray:
        if self.tmp is None:
            return np.empty(shape, np.uint8)
        return np.lib.format.open_memmap(os.path.join(self.tmp, f"{part}.npy"), mode="w+",
                                         dtype=np.uint8, shape=tuple(shape))

    def shrink(self, part: str, images: np.ndarray, n: int) -> np.ndarray:
        """The first ``n`` rows of ``images`` (files that failed to decode are dropped)."""
        if n == len(images):
            return images
        if self.tmp is None:
            return images[:n].copy()
        small = np.lib.format.open_memmap(os.path.join(self.tmp, f"{part}.small.npy"), mode="w+",
                                          dtype=np.uint8, shape=(n,) + images.shape[1:])
        for i in range(0, n, CHUNK):
            small[i:i + CHUNK] = images[i:min(i + CHUNK, n)]
        small.flush()
        del images
        os.replace(os.path.join(self.tmp, f"{part}.small.npy"), os.path.join(self.tmp, f"{part}.npy"))
        return small

    def add(self, part: str, images, labels, sums, files: List[str]):
        self.parts[part] = (images, np.asarray(labels, np.int64), np.asarray(sums, np.int64), files)

    def finish(self, meta: dict):
        """Write labels, sums, file lists and meta.json; move into place; return the parts
        (re-opened read-only as memmaps when cached) and the cache path (or None)."""
        meta = dict(meta, format=CACHE_FORMAT, parts=list(self.parts))
        if self.tmp is None:
            return meta, {p: v[:3] for p, v in self.parts.items()}, None
        for part, (images, labels, sums, files) in self.parts.items():
            if isinstance(images, np.memmap):
                images.flush()
            np.save(os.path.join(self.tmp, f"{part}-labels.npy"), labels)
            np.save(os.path.join(self.tmp, f"{part}-sums.npy"), sums)
            with open(os.path.join(self.tmp, f"{part}-files.txt"), "w", encoding="utf-8") as f:
                f.writelines(name + "\n" for name in files)
        with open(os.path.join(self.tmp, "meta.json"), "w") as f:
            json.dump(meta, f, indent=1)
        self.parts.clear()
        final = _cache_root(self.key)
        if os.path.exists(final):                     # a broken or stale entry of the same key
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.rename(self.tmp, final)
        except OSError:                               # another run finished first: use its copy
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = None
        cached = _read_cache(self.key)
        if cached is None:
            raise DataError(f"the cache {final} could not be read back; is the disk full? "
                            f"(set ${D.ENV_CACHE} to another folder)")
        return cached[0], cached[1], final

    def abort(self):
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


# ----------------------------------------------------------------------------- image folders

def _layout_message(root: str, what: str) -> str:
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        entries = []
    shown = ", ".join(entries[:8]) + (", ..." if len(entries) > 8 else "") if entries else "nothing"
    return (f"{root}: {what}. An image folder is read in one of two layouts:\n"
            f"  {root}/train/<class>/*.jpg and {root}/test/<class>/*.jpg  (the test split is given), or\n"
            f"  {root}/<class>/*.jpg with a validation fraction (--val-fraction 0.2): a seeded, "
            f"stratified part of each class is held out as the test split.\n"
            f"One sub-folder per class; the class names are the sub-folder names in sorted order. "
            f"Found in {root}: {shown}.")


def _walk(top: str, root: str):
    """Image files under ``top`` (recursively, following links once, hidden names
    skipped), sorted: ([(relative path, size, mtime_ns)], number of other files ignored)."""
    files, ignored, seen = [], 0, set()
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:                              # a link cycle
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or not name.lower().endswith(IMG_EXTENSIONS):
                ignored += 1
                continue
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
                stat = (st.st_size, st.st_mtime_ns)
            except OSError:                           # a dangling link: skipped when opened
                stat = (-1, -1)
            files.append((os.path.relpath(path, root),) + stat)
    return files, ignored


def _class_dirs(path: str) -> List[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


# Over the complexity limit on purpose: one branch per kind of bad picture, each with its own
# message.
def scan_folder(root: str, val_fraction: Optional[float] = None) -> dict:  # noqa: C901
    """The listing of an image folder, checked, without opening any image.

    Returns ``dict(root, layout, classes, parts={part: [(class index, relative path, size,
    mtime_ns), ...]}, ignored)`` with parts ``train`` and ``test``, or ``all`` (one tree,
    for ``val_fraction``).  Raises :class:`DataError` for a missing folder, a wrong
    layout, fewer than two classes, classes that differ between train and test, or an
    empty class folder.
    """
    root = D.check_folder(os.path.abspath(os.path.expanduser(root)), "one sub-folder of images per class")
    if not os.path.isdir(root):
        raise DataError(f"{root}: no such folder (an image folder holds one sub-folder of "
                        f"images per class; see docs/datasets.md)")
    has_train = os.path.isdir(os.path.join(root, "train"))
    has_test = os.path.isdir(os.path.join(root, "test"))
    if val_fraction is None:
        if not (has_train and has_test):
            what = ("no test/ sub-folder next to train/ (pass a validation fraction to split "
                    "train/ itself: point at {root}/train)".format(root=root) if has_train else
                    "no train/ and test/ sub-folders, and no validation fraction")
            raise DataError(_layout_message(root, what))
        places = [("train", os.path.join(root, "train")), ("test", os.path.join(root, "test"))]
        layout = "train/test"
    else:
        if not 0 < val_fraction < 1:
            raise DataError(f"the validation fraction must be between 0 and 1 (exclusive), "
                            f"not {val_fraction}")
        if has_train and has_test:
            raise DataError(f"{root} has train/ and test/ sub-folders: its test split is "
                            f"given, so drop the validation fraction; to hold out part of "
                            f"train/ instead, point at {root}/train with the fraction")
        places = [("all", root)]
        layout = "one tree, split by val_fraction"

    found = {part: _class_dirs(path) for part, path in places}
    for part, path in places:
        if not found[part]:
            raise DataError(_layout_message(path, "no class sub-folders"))
        if len(found[part]) == 1:
            raise DataError(f"{path}: only one class folder ({found[part][0]!r}); a classifier "
                            f"needs at least two classes, one sub-folder each"
                            + ("" if part != "all" else
                               f" (if {found[part][0]}/ holds the classes, point at "
                               f"{os.path.join(path, found[part][0])})"))
    classes = found[places[0][0]]
    if layout == "train/test" and found["train"] != found["test"]:
        only_train = sorted(set(found["train"]) - set(found["test"]))
        only_test = sorted(set(found["test"]) - set(found["train"]))
        msg = []
        if only_train:
            msg.append(f"class{'es' if len(only_train) > 1 else ''} {', '.join(map(repr, only_train))} "
                       f"{'have' if len(only_train) > 1 else 'has'} a folder in train/ but none in test/")
        if only_test:
            msg.append(f"class{'es' if len(only_test) > 1 else ''} {', '.join(map(repr, only_test))} "
                       f"{'have' if len(only_test) > 1 else 'has'} a folder in test/ but none in train/")
        raise DataError(f"{root}: {'; '.join(msg)}. Both splits need the same class folders, "
                        f"so that label k means the same class in both (train: "
                        f"{', '.join(found['train'])}; test: {', '.join(found['test'])})")

    parts, ignored, empty = {}, 0, []
    for part, path in places:
        rows = []
        for name in os.listdir(path):                 # stray files next to the class folders
            if not name.startswith(".") and os.path.isfile(os.path.join(path, name)):
                ignored += 1
        for k, cls in enumerate(classes):
            files, skipped = _walk(os.path.join(path, cls), root)
            ignored += skipped
            if not files:
                empty.append(os.path.join(path, cls))
            rows.extend((k,) + f for f in files)
        parts[part] = rows
    if empty:
        raise DataError(f"empty class folder{'s' if len(empty) > 1 else ''}: {', '.join(empty)} "
                        f"(no files with an image extension: {' '.join(IMG_EXTENSIONS)}). Put "
                        f"images in {'them' if len(empty) > 1 else 'it'} or remove "
                        f"{'them' if len(empty) > 1 else 'it'}.")
    return dict(root=root, layout=layout, classes=tuple(classes), parts=parts, ignored=ignored)


def _reason(e: BaseException) -> str:
    from PIL import UnidentifiedImageError
    if isinstance(e, UnidentifiedImageError):
        return "not an image Pillow can read"
    text = str(e).replace("\n", " ")
    if "truncated" in text.lower():
        return f"truncated ({text})"
    return f"cannot be decoded ({type(e).__name__}: {text})"


def _probe(path: str):
    """(Pillow mode, None) from the header only, or (None, why it cannot be read)."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            return im.mode, None
    except Exception as e:                            # Pillow raises many kinds; all mean unreadable
        return None, _reason(e)


def pixels(im, mode: str) -> np.ndarray:
    """A decoded Pillow image as uint8 ``(H, W)`` (``mode='L'``) or ``(H, W, 3)`` (``'RGB'``).

    Pillow's ``convert`` does the work (colour to grey by ITU-R 601-2 luma, grey to colour
    by repetition, alpha dropped, palettes expanded, CMYK converted), except for 16-bit
    grey, which ``convert`` clips at 255: it is scaled by 255/65535 instead (a 32-bit
    ``'I'`` image counts as 16-bit when any value exceeds 255, else as 8-bit).
    """
    if im.mode in WIDE_MODES:
        wide = np.asarray(im).astype(np.float64)
        if im.mode != "I" or wide.max(initial=0) > 255:   # 'I' holding 8-bit values stays
            wide = wide / 257.0
        grey = np.clip(np.rint(wide), 0, 255).astype(np.uint8)
        return grey if mode == "L" else np.repeat(grey[:, :, None], 3, axis=2)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")                       # what Pillow asks for; same colours
    if im.mode != mode:
        im = im.convert(mode)
    return np.asarray(im)


def _decode(path: str, mode: str, size: int):
    """(resized ``(C, size, size)`` uint8, None) or (None, why it cannot be read)."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            im.load()                                 # the full decode: truncation shows here
            arr = pixels(im, mode)
    except Exception as e:
        return None, _reason(e)
    chw = arr[None] if arr.ndim == 2 else np.ascontiguousarray(arr.transpose(2, 0, 1))
    return D.resize(chw[None], size)[0], None


def decode_image(path: str, channels: int, size: int) -> np.ndarray:
    """One picture read exactly as an image folder's pictures are: ``(channels, size, size)``
    uint8 (Pillow's decode, :func:`pixels`, :func:`common.inputs.data.resize`); a picture that
    cannot be read raises :class:`DataError` saying why."""
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (grey) or 3 (RGB), not {channels!r}")
    image, why = _decode(path, "RGB" if channels == 3 else "L", size)
    if image is None:
        raise DataError(f"{path}: {why}")
    return image


def _folder_key(listing: dict, size: int, channels: Optional[int]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([CACHE_FORMAT, size, channels, listing["layout"],
                         list(listing["classes"])]).encode())
    for part, rows in listing["parts"].items():
        h.update(f"\n[{part}]\n".encode())
        for k, rel, size_, mtime in rows:
            h.update(f"{k}\0{rel}\0{size_}\0{mtime}\n".encode("utf-8", "surrogateescape"))
    return f"folder-{h.hexdigest()[:24]}-{size}"


def _strict_error(root: str, bad: List[Tuple[str, str]], total: Optional[int] = None) -> DataError:
    shown = "\n".join(f"  {f}: {r}" for f, r in bad[:10])
    more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
    n = total or len(bad)
    return DataError(f"{root}: {n} file{'s' if n > 1 else ''} cannot be read (strict mode stops "
                     f"on unreadable files; without it they are skipped and listed in the run "
                     f"record):\n{shown}{more}")


# Over the complexity limit on purpose: the layouts an image folder may have (train/test, one tree
# and a split, classes).
def load_folder(root: str, size: int, *, channels: Optional[int] = None,  # noqa: C901
                val_fraction: Optional[float] = None, strict: bool = False,
                use_cache: bool = True, workers: Optional[int] = None):
    """Read (or re-open from the cache) an image folder: ``(meta, parts, cache path)``.

    ``parts`` maps ``train``/``test`` (or ``all``) to ``(images, labels, sums)``: uint8
    ``(N, C, size, size)`` (a read-only memmap when cached), int64 labels and
    :func:`image_sums`.  ``meta`` holds the classes, channels, skipped files and counts.
    """
    listing = scan_folder(root, val_fraction)
    root = listing["root"]
    key = _folder_key(listing, size, channels)
    cached = _read_cache(key) if use_cache else None
    if cached is not None:
        meta, parts = cached
        if strict and meta["skipped"]:
            raise _strict_error(root, [(s["file"], s["reason"]) for s in meta["skipped"]])
        return meta, parts, _cache_root(key)

    workers = workers or min(8, os.cpu_count() or 1)
    skipped: List[Tuple[str, str]] = []
    builder = _CacheBuilder(key, use_cache)
    try:
        with ThreadPoolExecutor(workers) as pool:
            # pass 1: headers only (modes), so that the channel count is known up front
            probed = {}
            for part, rows in listing["parts"].items():
                probed[part] = []
                for start in range(0, len(rows), 16 * CHUNK):      # bounded: no future per file
                    paths = [os.path.join(root, r[1]) for r in rows[start:start + 16 * CHUNK]]
                    probed[part].extend(pool.map(_probe, paths))
                bad = [(rel, why) for (_, rel, _, _), (_, why) in zip(rows, probed[part]) if why]
                skipped.extend(bad)
            if strict and skipped:
                raise _strict_error(root, skipped)
            modes = [m for part in probed.values() for m, _ in part if m is not None]
            colour = [m for m in modes if m not in GREY_MODES]
            if channels is None:
                n_channels = 3 if colour else 1
                rule = (f"3: {len(colour)} of {len(modes)} images are colour" if colour else
                        f"1: all {len(modes)} images are grey")
            else:
                n_channels, rule = channels, f"{channels}: requested"
            mode = "RGB" if n_channels == 3 else "L"

            # pass 2: decode, convert, resize, write, CHUNK images at a time
            class_counts = {}
            for part, rows in listing["parts"].items():
                good = [r for r, (m, _) in zip(rows, probed[part]) if m is not None]
                images = builder.images(part, (len(good), n_channels, size, size))
                labels, sums, files = [], [], []
                for start in range(0, len(good), CHUNK):
                    block = good[start:start + CHUNK]
                    results = list(pool.map(lambda r: _decode(os.path.join(root, r[1]), mode, size),
                                            block))
                    failed = [(r[1], why) for r, (_, why) in zip(block, results) if why]
                    if strict and failed:
                        raise _strict_error(root, failed)
                    skipped.extend(failed)
                    ok = [(r, img) for r, (img, _) in zip(block, results) if img is not None]
                    if ok:
                        n = len(labels)
                        stack = np.stack([img for _, img in ok])
                        images[n:n + len(ok)] = stack
                        sums.append(image_sums(stack))
                        labels.extend(r[0] for r, _ in ok)
                        files.extend(r[1] for r, _ in ok)
                images = builder.shrink(part, images, len(labels))
                counts = np.bincount(np.asarray(labels, np.int64), minlength=len(listing["classes"]))
                lost = [os.path.join(part if part != "all" else "", c)
                        for c, n in zip(listing["classes"], counts) if n == 0]
                if lost:
                    why = [f"{f}: {r}" for f, r in skipped
                           if any(f.startswith(c + os.sep) for c in lost)]
                    raise DataError(f"{root}: no readable image in class folder"
                                    f"{'s' if len(lost) > 1 else ''} {', '.join(lost)}; every file "
                                    f"was skipped ({'; '.join(why[:3])}"
                                    f"{'; ...' if len(why) > 3 else ''})")
                class_counts[part] = counts.tolist()
                builder.add(part, images, labels,
                            np.concatenate(sums) if sums else np.zeros((0, n_channels, 2), np.int64),
                            files)
        skipped.sort()
        meta = dict(kind="folder", root=root, layout=listing["layout"],
                    classes=list(listing["classes"]), channels=n_channels, channels_rule=rule,
                    size=size, class_counts=class_counts, ignored=listing["ignored"],
                    skipped=[dict(file=f, reason=r) for f, r in skipped])
        meta, parts, path = builder.finish(meta)
        return meta, parts, path
    except BaseException:
        builder.abort()
        raise


# ----------------------------------------------------------------------------- CIFAR-10

def safe_unpickle(raw: bytes, what: str):
    """Unpickle ``raw`` with :class:`common.net.safepickle.RestrictedUnpickler` (``encoding='bytes'``, the CIFAR
    page's own recipe); a dict with ``str`` keys.  Anything else raises :class:`DataError`."""
    try:
        obj = safepickle.loads(raw, encoding="bytes")
    except safepickle.Refused as e:
        raise DataError(f"{what}: {e}") from None
    except Exception as e:
        raise DataError(f"{what}: not a readable CIFAR pickle ({type(e).__name__}: {e}); the file "
                        f"is corrupt or truncated. Delete it to download it again.") from None
    if not isinstance(obj, dict) or not safepickle.is_plain(obj):
        raise DataError(f"{what}: not a CIFAR batch (expected a dict of plain data, got "
                        f"{type(obj).__name__})")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_offline_message(directory: str, error) -> str:
    return (f"CIFAR-10 is not in {directory} and could not be downloaded ({error}).\n"
            f"Put {CIFAR_FILE} (md5 {CIFAR_MD5}) from {CIFAR_MIRRORS[0]} there, or its "
            f"extracted folder {CIFAR_FOLDER}/, or point --data-dir at a folder that has "
            f"either.")


def locate_cifar(directory: Optional[str] = None, download_missing: bool = True) -> Tuple[str, str]:
    """``('folder', path)`` of the extracted batches or ``('archive', path)`` of the
    official ``.tar.gz`` in ``directory`` (downloaded, MD5 checked, if missing and allowed)."""
    directory = D.check_folder(os.path.abspath(os.path.expanduser(directory or default_dir("cifar10"))),
                               f"{CIFAR_FILE} or its extracted batches")
    for folder in (os.path.join(directory, CIFAR_FOLDER), directory):
        if os.path.isfile(os.path.join(folder, CIFAR_TRAIN[0])):
            return "folder", folder
    archive = os.path.join(directory, CIFAR_FILE)
    if os.path.isfile(archive):
        return "archive", archive
    if not download_missing:
        raise DataError(_cifar_offline_message(directory, "downloads disabled"))
    return "archive", D.fetch(directory, CIFAR_FILE, CIFAR_MD5, CIFAR_MIRRORS,
                              lambda error: _cifar_offline_message(directory, error))


def _cifar_members(kind: str, path: str) -> Dict[str, bytes]:
    names = CIFAR_TRAIN + CIFAR_TEST + (CIFAR_META,)
    out = {}
    if kind == "folder":
        for name in names:
            p = os.path.join(path, name)
            if not os.path.isfile(p):
                if name == CIFAR_META:
                    continue
                raise DataError(f"{path}: {name} is missing (a CIFAR-10 folder holds "
                                f"{', '.join(names)})")
            with open(p, "rb") as f:
                out[name] = f.read()
        return out
    try:
        with tarfile.open(path, "r:gz") as tar:     # members are read, never extracted
            for name in names:
                try:
                    member = tar.getmember(f"{CIFAR_FOLDER}/{name}")
                except KeyError:
                    if name == CIFAR_META:
                        continue
                    raise DataError(f"{path}: {CIFAR_FOLDER}/{name} is missing from the archive") from None
                f = tar.extractfile(member)
                if f is None:
                    raise DataError(f"{path}: {CIFAR_FOLDER}/{name} is not a file")
                out[name] = f.read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{path}: cannot be read ({type(e).__name__}: {e}); the file is corrupt "
                        f"or truncated. Delete it to download it again.") from None
    return out


def _cifar_batch(raw: bytes, what: str):
    d = safe_unpickle(raw, what)
    data, labels = d.get("data"), d.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{what}: 'data' must be uint8 (N, 3072) (32x32 RGB rows), got "
                        f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64).reshape(-1)
    if len(labels) != len(data):
        raise DataError(f"{what}: {len(data)} images but {len(labels)} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{what}: labels must be 0..9, found {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels


def rgb_to_grey(images: np.ndarray) -> np.ndarray:
    """``(N, 3, H, W)`` uint8 to ``(N, 1, H, W)`` by Pillow's ``convert('L')`` arithmetic
    (ITU-R 601-2 luma, L = R 299/1000 + G 587/1000 + B 114/1000, in 16-bit fixed point)."""
    x = images.astype(np.uint32)
    return ((x[:, 0] * 19595 + x[:, 1] * 38470 + x[:, 2] * 7471 + 0x8000) >> 16).astype(np.uint8)[:, None]


def load_cifar10(directory: Optional[str], size: int, *, channels: Optional[int] = None,
                 download_missing: bool = True, use_cache: bool = True):
    """CIFAR-10 from the official python archive (or its extracted folder):
    ``(meta, parts, cache path)`` as :func:`load_folder`."""
    kind, path = locate_cifar(directory, download_missing)
    n_channels = channels or 3
    if kind == "archive":
        digest = D.md5(path)
    else:
        h = hashlib.md5()
        for name in CIFAR_TRAIN + CIFAR_TEST:
            p = os.path.join(path, name)
            h.update(D.md5(p).encode() if os.path.isfile(p) else b"-")
        digest = h.hexdigest()
    key = f"cifar10-{digest[:16]}-v{CACHE_FORMAT}-{size}-c{n_channels}"
    cached = _read_cache(key) if use_cache else None
    if cached is not None:
        return cached[0], cached[1], _cache_root(key)
    members = _cifar_members(kind, path)
    classes = CIFAR_CLASSES
    if CIFAR_META in members:
        names = safe_unpickle(members[CIFAR_META], f"{path}: {CIFAR_META}").get("label_names")
        if isinstance(names, list) and len(names) == 10:
            classes = tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)
    builder = _CacheBuilder(key, use_cache)
    try:
        for part, names in (("train", CIFAR_TRAIN), ("test", CIFAR_TEST)):
            batches = [_cifar_batch(members.pop(n), f"{path}: {n}") for n in names]
            raw = np.concatenate([b[0] for b in batches])
            labels = np.concatenate([b[1] for b in batches])
            if n_channels == 1:
                raw = rgb_to_grey(raw)
            images = builder.images(part, (len(raw), n_channels, size, size))
            sums = np.zeros((len(raw), n_channels, 2), np.int64)
            for i in range(0, len(raw), 1024):
                images[i:i + 1024] = D.resize(raw[i:i + 1024], size)
                sums[i:i + 1024] = image_sums(images[i:i + 1024])
            builder.add(part, images, labels, sums,
                        [f"{n}[{i}]" for n, b in zip(names, batches) for i in range(len(b[1]))])
        meta = dict(kind="cifar10", root=path, layout=kind, classes=list(classes),
                    channels=n_channels, channels_rule=f"{n_channels}: " +
                    ("requested" if channels else "CIFAR-10 is RGB"),
                    size=size, official=kind == "archive" and digest == CIFAR_MD5,
                    ignored=0, skipped=[])
        return builder.finish(meta)
    except BaseException:
        builder.abort()
        raise


# ----------------------------------------------------------------------------- Fashion-MNIST

def _fashion_totals(directory: str, images, n: int, size: int, use_cache: bool) -> np.ndarray:
    """Channel totals of the first ``n`` training images, cached next to the resized arrays
    (a pass over 60,000 96x96 images takes about two seconds)."""
    path = None
    if use_cache:
        src = D.locate(directory, download_missing=False)["train-images-idx3-ubyte.gz"]
        path = os.path.join(D.cache_dir(), f"stats-{D.md5(src)[:12]}-{size}-{n}.json")
        try:
            with open(path) as f:
                return np.asarray(json.load(f), dtype=np.int64)
        except (OSError, ValueError):
            pass
    totals = channel_totals(images[:n])
    if path is not None:
        os.makedirs(D.cache_dir(), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(totals.tolist(), f)
        os.replace(tmp, path)
    return totals


def hold_out(ds: Dataset, fraction: float, seed: int = 0) -> Dataset:
    """The dataset with its test split replaced by a seeded, stratified ``fraction`` of its
    training split (the rest trains): for choosing settings without looking at the test set.
    The mean and std are those of the remaining training images."""
    tr, te = stratified_split(ds.train.labels, fraction, seed, ds.classes)
    images = ds.train.images

    def rows(r):
        if isinstance(images, ImageView):
            if images.expand:
                return Split(np.asarray(images[r]), ds.train.labels[r])
            base_rows = r if images.index is None else images.index[r]
            return Split(ImageView(images.base, base_rows), ds.train.labels[r])
        return Split(ImageView(images, r), ds.train.labels[r])

    train, held = rows(tr), rows(te)
    mean, std = mean_std(channel_totals(train.images), len(tr) * ds.size * ds.size)
    if len(mean) != ds.in_channels:                # a grey set viewed as RGB
        mean, std = mean * ds.in_channels, std * ds.in_channels
    info = dict(ds.info, val_fraction=fraction, split_seed=seed,
                test_is="held out from the training split (val_fraction), not the official test set")
    return Dataset(ds.name, train, held, ds.classes, ds.in_channels, ds.size, mean, std, ds.normalize, info)


# ----------------------------------------------------------------------------- the interface

def _fashion_mnist_dir(data_dir, download_missing, sample):
    """(Fashion-MNIST's folder, the notice to print or None): the folder asked for, with its
    files found or downloaded; or, when none was asked for (neither ``data_dir`` nor
    ``$GOOGLENET_DATA``) and the default folder can be neither filled nor reached, the
    shipped sample (unless ``sample`` is False)."""
    directory = D.data_dir(data_dir)
    if data_dir or os.environ.get(D.ENV_DATA) or not sample or D.is_sample(directory):
        return directory, None
    try:
        D.locate(directory, download_missing)
    except D.Unavailable as e:
        return D.SAMPLE_DIR, D.sample_notice(directory, e)
    return directory, None


# Over the complexity limit on purpose: one branch per dataset kind and its options.
def load_dataset(name: str = "fashion-mnist", data_dir: Optional[str] = None, size: int = 96, *,  # noqa: C901
                 channels: Optional[int] = None, val_fraction: Optional[float] = None,
                 seed: int = 0, strict: bool = False, limit: Optional[int] = None,
                 download_missing: bool = True, normalize: Optional[bool] = None,
                 use_cache: bool = True, workers: Optional[int] = None, sample: bool = True) -> Dataset:
    """Load a dataset by name, resized to ``size x size``.

    Args:
        name: ``'fashion-mnist'`` (default), ``'folder'`` or ``'cifar10'`` (aliases in
            :data:`ALIASES`).
        data_dir: the dataset's folder. Fashion-MNIST: ``$GOOGLENET_DATA``, else
            ``~/.cache/googlenet/fashion-mnist``; CIFAR-10: ``~/.cache/googlenet/cifar-10``
            (downloaded there if missing); an image folder: required.
        channels: 1 or 3 to convert every image; ``None``: the dataset's own (Fashion-MNIST
            1, CIFAR-10 3, a folder 3 if any image is colour, else 1).
        val_fraction: hold out this fraction of each class as the test split (seeded by
            ``seed``, stratified): of one tree ``DIR/<class>/`` for an image folder; of the
            training split for Fashion-MNIST and CIFAR-10, whose official test split is then
            not used (for choosing settings without looking at it).
        seed: the seed of the validation split and of ``limit`` on a folder (not the
            training seed: changing the weights' seed keeps the same held-out images).
        strict: stop with :class:`DataError` on an unreadable image file instead of
            skipping it (skipped files are listed in :meth:`Dataset.describe`).
        limit: train on N examples only: the first N (Fashion-MNIST, CIFAR-10), or N drawn
            with ``seed`` (a folder, whose rows are sorted by class).
        download_missing: download Fashion-MNIST / CIFAR-10 if they are not there.
        normalize: apply the training mean/std in :meth:`Dataset.loaders` (default: True,
            except for Fashion-MNIST, where the book's recipe does not).
        use_cache: read and write the resized arrays in ``$GOOGLENET_CACHE``.
        workers: threads decoding a folder (default: the cores, at most 8).
        sample: Fashion-MNIST in its default folder (no ``data_dir``, no ``$GOOGLENET_DATA``)
            that is neither there nor downloadable falls back to the small sample shipped
            in the package (``common/inputs/sample``), saying so in ``info["notice"]`` and
            ``info["sample"]``; ``False`` raises the error instead.
    """
    name = resolve_name(name)
    if channels not in (None, 1, 3):
        raise DataError(f"channels must be 1 (grey) or 3 (RGB), not {channels!r}")
    if int(size) < 1:
        raise DataError(f"the image size must be positive, not {size}")
    if limit is not None and limit < 1:
        raise DataError(f"limit must be at least 1, not {limit}")
    size = int(size)
    info = dict(name=name, val_fraction=val_fraction, limit=limit, strict=strict)

    if name == "fashion-mnist":
        directory, notice = _fashion_mnist_dir(data_dir, download_missing, sample)
        train, test = D.load_fashion_mnist(directory, size, download_missing, use_cache)
        n = min(limit, len(train)) if limit else len(train)
        totals = _fashion_totals(directory, train.images, n, size, use_cache)
        if limit:
            train = Split(train.images[:limit], train.labels[:limit])
        classes, in_channels = tuple(D.CLASSES), 1
        if channels == 3:                           # grey repeated, lazily, per batch
            train = Split(ImageView(train.images, channels=3), train.labels)
            test = Split(ImageView(test.images, channels=3), test.labels)
            totals, in_channels = np.repeat(totals[None], 3, 0).reshape(3, 2), 3
        mean, std = mean_std(totals, n * size * size)
        info.update(dir=directory, layout="idx", cache=D.cache_dir(), sample=D.is_sample(directory),
                    channels_rule=f"{in_channels}: " + ("requested" if channels else
                                                        "Fashion-MNIST is grey"),
                    skipped=[], skipped_count=0, ignored=0, **({"notice": notice} if notice else {}))
        ds = Dataset(name, train, test, classes, in_channels, size, mean, std, bool(normalize), info)
        return hold_out(ds, val_fraction, seed) if val_fraction else ds

    if name == "cifar10" and val_fraction:
        return hold_out(load_dataset(name, data_dir, size, channels=channels, seed=seed, strict=strict,
                                     limit=limit, download_missing=download_missing,
                                     normalize=normalize, use_cache=use_cache), val_fraction, seed)
    if name == "folder":
        if not data_dir:
            raise DataError("an image folder needs its path (--data-dir DIR); see docs/datasets.md")
        meta, parts, cache = load_folder(data_dir, size, channels=channels,
                                         val_fraction=val_fraction, strict=strict,
                                         use_cache=use_cache, workers=workers)
    else:
        meta, parts, cache = load_cifar10(data_dir, size, channels=channels,
                                          download_missing=download_missing, use_cache=use_cache)
    classes = tuple(meta["classes"])
    if "all" in parts:
        images, labels, sums = parts["all"]
        tr, te = stratified_split(labels, val_fraction, seed, classes)
        train = (ImageView(images, tr), labels[tr], sums[tr])
        test = (ImageView(images, te), labels[te], sums[te])
    else:
        train, test = parts["train"], parts["test"]
    if limit and limit < len(train[1]):
        if name == "folder":
            rows = np.sort(np.random.default_rng(seed).permutation(len(train[1]))[:limit])
        else:
            rows = np.arange(limit)
        base = train[0]
        view = (ImageView(base.base, base.index[rows]) if isinstance(base, ImageView)
                else ImageView(base, rows))
        train = (view, train[1][rows], train[2][rows])
    n = len(train[1])
    mean, std = mean_std(train[2].sum(0), n * size * size)
    info.update(dir=meta["root"], layout=meta["layout"], cache=cache,
                channels_rule=meta["channels_rule"], split_seed=seed if val_fraction else None,
                skipped=meta["skipped"][:100], skipped_count=len(meta["skipped"]),
                ignored=meta["ignored"])
    if val_fraction:
        info["test_is"] = "held out from the training images (val_fraction), not a separate test set"
    if "official" in meta:
        info["official"] = meta["official"]
    return Dataset(name, Split(train[0], np.asarray(train[1])), Split(test[0], np.asarray(test[1])),
                   classes, int(meta["channels"]), size, mean, std,
                   True if normalize is None else bool(normalize), info)
