"""Fashion-MNIST, framework-free: download with checksums, IDX parsing, resize, batches.

Where the data lives (first that is set): ``--data-dir`` > ``$GOOGLENET_DATA`` >
``~/.cache/googlenet/fashion-mnist``.  The four official files are downloaded there on
first use and their MD5 checked (the checksums torchvision uses).  Any folder holding
the four IDX files (gzipped or not) works, for example a subset: counts are read from
the headers, and every file is checked for a valid header and a complete body.

Resizing (bilinear, half-pixel centres, like ``transforms.Resize`` on a PIL image, then
rounded to uint8 as PIL does) is done once, vectorised, and cached in
``$GOOGLENET_CACHE`` (default ``~/.cache/googlenet/resized``) keyed by the files'
digests and the size.  Batches are ``float32`` in [0, 1] (``ToTensor``), NCHW, with
examples shuffled each epoch from ``seed + epoch``.

Image folders and CIFAR-10, and one interface for every dataset (Fashion-MNIST
included): ``common/inputs/datasets.py`` and ``docs/datasets.md``.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import os
import queue
import tempfile
import threading
import urllib.request
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import numpy as np

ENV_DATA = "GOOGLENET_DATA"
ENV_CACHE = "GOOGLENET_CACHE"
#: comma-separated base addresses to download Fashion-MNIST from instead of :data:`MIRRORS`
#: (a local mirror; the tests point it at a closed port on 127.0.0.1 to be offline)
ENV_MIRRORS = "GOOGLENET_MIRRORS"
MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
           "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/")
#: file name -> (MD5 of the official file, IDX dimensions)
FILES = {
    "train-images-idx3-ubyte.gz": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", 3),
    "train-labels-idx1-ubyte.gz": ("25c81989df183df01b3e8a0aad5dffbe", 1),
    "t10k-images-idx3-ubyte.gz": ("bef4ecab320f06d8554ea6380940ec79", 3),
    "t10k-labels-idx1-ubyte.gz": ("bb300cfdad3c16e7a12a480ee83cd310", 1),
}
CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
           "bag", "ankle boot")


#: the small real sample shipped in the package (common/inputs/sample/README.md): what training
#: falls back to when the full dataset is neither in its folder nor downloadable
SAMPLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample")
SAMPLE_SHA256 = {
    "train-images-idx3-ubyte.gz": "cb5e51a566f2aca42eeb3c302b4cd5568d9fc4668ce325bc06f513eb6e5b3eec",
    "train-labels-idx1-ubyte.gz": "c7753bcc1c5b772b1445314782d2cdcb4ead8885025bcd54ef8e59ad3feba0f8",
    "t10k-images-idx3-ubyte.gz": "6a95173fbad9ae2f5a5da8a0bbe458be56bd27fa19ee2d74b3bcc808e1651c49",
    "t10k-labels-idx1-ubyte.gz": "01ce94eac2cc954e8137f9443c00a8847b04bff776f1c00b8af721fa8468e518",
}


class DataError(RuntimeError):
    """Missing, corrupt, truncated or mismatched data files."""


class Unavailable(DataError):
    """The files are not in their folder and could not be downloaded (offline, or downloads
    disabled): the one case where Fashion-MNIST falls back to the shipped sample.  ``reason``:
    why the download failed, in a few words."""

    def __init__(self, message: str, reason=None):
        super().__init__(message)
        self.reason = str(reason) if reason is not None else None


def default_dir() -> str:
    return os.path.join(os.path.expanduser("~"), ".cache", "googlenet", "fashion-mnist")


def data_dir(path: Optional[str] = None) -> str:
    """``path`` > ``$GOOGLENET_DATA`` > ``~/.cache/googlenet/fashion-mnist``."""
    return os.path.abspath(os.path.expanduser(path or os.environ.get(ENV_DATA) or default_dir()))


def check_folder(directory: str, holds: str = "the dataset's files", option: str = "--data-dir") -> str:
    """``directory``, refused with a :class:`DataError` if it is a file (``--data-dir`` names
    a folder; ``os.makedirs`` would fail on it with an unexplained ``FileExistsError``)."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise DataError(f"{directory} is a file, not a folder: {option} names the folder that "
                        f"holds {holds}")
    return directory


def cache_dir() -> str:
    return os.path.abspath(os.path.expanduser(os.environ.get(ENV_CACHE) or os.path.join(
        os.path.expanduser("~"), ".cache", "googlenet", "resized")))


def md5(path: str) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _find(directory: str, name: str) -> Optional[str]:
    for candidate in (name, name[:-3]):          # gzipped or plain
        path = os.path.join(directory, candidate)
        if os.path.exists(path):
            return path
    return None


def _offline_message(directory: str, error) -> str:
    names = "\n".join(f"    {n}  (md5 {m})" for n, (m, _) in FILES.items())
    return (f"Fashion-MNIST is not in {directory} and could not be downloaded ({error}).\n"
            f"Put these four files there (gzipped or not):\n{names}\n"
            f"from {' or '.join(mirrors())}\n"
            f"or point --data-dir / ${ENV_DATA} at a folder that has them "
            f"(offline here: ../shared/data/fashion-mnist-subset).")


def fetch(directory: str, name: str, expected_md5: str, mirrors, offline_message,
          timeout: float = 30.0) -> str:
    """Fetch ``name`` from the first mirror that has it into ``directory``, checking its MD5;
    atomic (a ``.part`` file renamed into place; nothing is kept on failure).
    ``offline_message(error)`` is the text of the error when no mirror can be reached."""
    os.makedirs(directory, exist_ok=True)
    last = None
    for mirror in mirrors:
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".part")
        os.close(fd)
        try:
            with urllib.request.urlopen(mirror + name, timeout=timeout) as r, open(tmp, "wb") as f:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
            got = md5(tmp)
            if got != expected_md5:
                last = DataError(f"{name} from {mirror}: MD5 {got} != {expected_md5}")
                continue
            path = os.path.join(directory, name)
            os.replace(tmp, path)
            return path
        except OSError as e:
            last = e
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    if isinstance(last, DataError):
        raise DataError(f"{last}: the download is corrupt (or the mirror changed); nothing was "
                        f"kept. Try again, or fetch the file by hand.")
    raise Unavailable(offline_message(last), last)


def mirrors() -> tuple:
    """Where Fashion-MNIST is downloaded from: ``$GOOGLENET_MIRRORS`` (comma-separated base
    addresses, each ending in ``/``), else :data:`MIRRORS`."""
    given = tuple(m.strip() for m in os.environ.get(ENV_MIRRORS, "").split(",") if m.strip())
    return tuple(m if m.endswith("/") else m + "/" for m in given) or MIRRORS


def download(directory: str, name: str, timeout: float = 30.0) -> str:
    """Fetch one official Fashion-MNIST file into ``directory``, checking its MD5; atomic."""
    return fetch(directory, name, FILES[name][0], mirrors(),
                 lambda error: _offline_message(directory, error), timeout)


def locate(directory: Optional[str] = None, download_missing: bool = True) -> dict:
    """Paths of the four files in ``directory`` (downloaded if missing and allowed)."""
    directory = check_folder(data_dir(directory), "the four Fashion-MNIST files",
                             f"--data-dir (or ${ENV_DATA})")
    paths = {}
    for name in FILES:
        path = _find(directory, name)
        if path is None:
            if not download_missing:
                raise Unavailable(_offline_message(directory, "downloads disabled"), "downloads disabled")
            path = download(directory, name)
        paths[name] = path
    return paths


def read_idx(path: str, ndim: int) -> np.ndarray:
    """Parse an IDX file (``.gz`` or plain): uint8 data, dimensions from the header."""
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot be read ({e}); the file is corrupt or truncated. "
                        f"Delete it to download it again.") from None
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    zero, dtype, dims = raw[0] << 8 | raw[1], raw[2], raw[3]
    if zero != 0 or dtype != 0x08 or dims != ndim:
        raise DataError(f"{path}: not an IDX file of {ndim}-D uint8 data "
                        f"(magic {raw[:4].hex()}, expected 000008{ndim:02x})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = raw[4 + 4 * ndim:]
    need = int(np.prod(shape))
    if len(body) != need:
        raise DataError(f"{path}: header says {shape} ({need} bytes of data) but the file has "
                        f"{len(body)}; it is truncated or corrupt. Delete it to download it again.")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def _enlarge_weights(src: int, dst: int) -> np.ndarray:
    """(dst, src) bilinear weights, half-pixel centres, for ``dst >= src``: the triangle of
    width 1 around each output centre (what PIL does when enlarging)."""
    x = (np.arange(dst) + 0.5) * src / dst - 0.5
    x = np.clip(x, 0, src - 1)
    lo = np.floor(x).astype(int)
    hi = np.minimum(lo + 1, src - 1)
    m = np.zeros((dst, src), np.float32)
    m[np.arange(dst), lo] += 1 - (x - lo)
    m[np.arange(dst), hi] += x - lo
    return m


def _shrink_weights(src: int, dst: int) -> np.ndarray:
    """(dst, src) antialiased bilinear weights for ``dst < src``, PIL's rule
    (``Resample.c``): the triangle is stretched by the scale ``src / dst``, so every input
    pixel under an output pixel contributes (an area-like average, no aliasing); the
    weights of each row are normalised to sum to 1."""
    scale = src / dst
    center = (np.arange(dst) + 0.5) * scale
    lo = np.maximum((center - scale + 0.5).astype(int), 0)
    hi = np.minimum((center + scale + 0.5).astype(int), src)
    j = np.arange(src)
    w = np.maximum(1 - np.abs((j[None, :] - center[:, None] + 0.5) / scale), 0)
    w[(j[None, :] < lo[:, None]) | (j[None, :] >= hi[:, None])] = 0
    return (w / w.sum(1, keepdims=True)).astype(np.float32)


@functools.lru_cache(maxsize=64)
def resize_weights(src: int, dst: int) -> np.ndarray:
    """The (dst, src) matrix that resizes one axis (see :func:`resize`); read-only, cached
    (photos of a folder often share their sizes)."""
    m = _enlarge_weights(src, dst) if dst >= src else _shrink_weights(src, dst)
    m.setflags(write=False)
    return m


def _along(W: np.ndarray, X: np.ndarray, axis: int) -> np.ndarray:
    """``W`` (dst, src) applied to every float32 image of ``X`` (m, H, W) along ``axis`` 1
    (rows) or 2 (columns), one product of the same shape per image, so that an image's
    numbers never depend on the others in the block (or on its channel).  Shrinking
    works in blocks of 32 output rows, each over only its band of non-zero weights (a
    3000-pixel side shrunk to 96 costs ~10x less than the dense product; the same
    numbers up to float32 summation order)."""
    dst, src = W.shape
    if dst >= src:
        return W @ X if axis == 1 else X @ W.T
    shape = list(X.shape)
    shape[axis] = dst
    out = np.empty(shape, np.float32)
    for s in range(0, dst, 32):
        Wb = W[s:s + 32]
        nz = np.flatnonzero(Wb.any(0))
        lo, hi = nz[0], nz[-1] + 1
        if axis == 1:
            out[:, s:s + 32] = Wb[:, lo:hi] @ X[:, lo:hi]
        else:
            out[:, :, s:s + 32] = X[:, :, lo:hi] @ Wb[:, lo:hi].T
    return out


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of uint8 images to ``size x size`` uint8, vectorised.

    ``images`` is ``(N, H, W)`` (grey) or ``(N, C, H, W)``; the result has the same leading
    dimensions.  Half-pixel centres, as PIL / ``transforms.Resize`` on a PIL image.
    Enlarging samples the two nearest pixels per axis (PIL's bilinear); shrinking
    antialiases like PIL (the triangle is widened by the scale, so every input pixel
    counts; OpenCV's ``INTER_LINEAR`` and ``tf.image.resize(antialias=False)`` instead
    sample 2x2 pixels and alias).  Each axis may enlarge or shrink independently
    (non-square images are squashed to a square, not cropped).  One rounding at the end
    (PIL rounds after each axis, in fixed point): within one grey level of PIL's.
    """
    if images.ndim == 4:
        n, c, h, w = images.shape
        flat = resize(images.reshape(n * c, h, w), size)
        return flat.reshape(n, c, size, size)
    n, h, w = images.shape
    if (h, w) == (size, size):
        return images.copy()
    A, B = resize_weights(h, size), resize_weights(w, size)
    out = np.empty((n, size, size), np.uint8)
    for i in range(0, n, 4096):                     # bounded memory
        X = np.ascontiguousarray(images[i:i + 4096], dtype=np.float32)  # BLAS needs C order
        if h <= size and w <= size:                 # enlarging (Fashion-MNIST): as it always was
            block = A @ X @ B.T
        else:                                       # columns, then rows, banded when shrinking
            block = _along(A, _along(B, X, 2), 1)
        out[i:i + 4096] = np.clip(np.rint(block), 0, 255)
    return out


@dataclass
class Split:
    images: np.ndarray   # uint8 (N, H, W) grey or (N, C, H, W); may be a memmap or a row view
    labels: np.ndarray   # int64 (N,)

    def __len__(self):
        return len(self.labels)


def _load_split(paths: dict, prefix: str, size: int, use_cache: bool) -> Split:
    img_path, lbl_path = paths[f"{prefix}-images-idx3-ubyte.gz"], paths[f"{prefix}-labels-idx1-ubyte.gz"]
    labels = read_idx(lbl_path, 1).astype(np.int64)
    # Fashion-MNIST is 28x28: below that, resize() antialiases (since the image-folder
    # work); the tag keeps caches written by the older, aliasing shrink from being reused.
    key = f"{prefix}-{md5(img_path)[:12]}-{size}{'-aa' if size < 28 else ''}.npy"
    cached = os.path.join(cache_dir(), key)
    images = None
    if use_cache and os.path.exists(cached):
        try:
            images = np.load(cached)
        except (OSError, ValueError):
            images = None                            # a broken cache is rebuilt
    if images is None:
        raw = read_idx(img_path, 3)
        if len(raw) != len(labels):
            raise DataError(f"{img_path} has {len(raw)} images but {lbl_path} has {len(labels)} labels")
        images = resize(raw, size)
        if use_cache:
            os.makedirs(cache_dir(), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=cache_dir(), suffix=".npy")
            os.close(fd)
            np.save(tmp, images)
            os.replace(tmp, cached)
    if len(images) != len(labels):
        raise DataError(f"{img_path} has {len(images)} images but {lbl_path} has {len(labels)} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise DataError(f"{lbl_path}: labels must be 0..9, found {labels.min()}..{labels.max()}")
    return Split(images, labels)


def is_sample(directory: Optional[str]) -> bool:
    """Whether ``directory`` is the package's shipped sample (:data:`SAMPLE_DIR`)."""
    try:
        return bool(directory) and os.path.samefile(directory, SAMPLE_DIR)
    except OSError:
        return False


def check_sample() -> dict:
    """The sample's four paths, each checked against :data:`SAMPLE_SHA256` (a damaged or
    edited install is refused, naming the file)."""
    paths = {}
    for name, digest in SAMPLE_SHA256.items():
        path = os.path.join(SAMPLE_DIR, name)
        try:
            with open(path, "rb") as f:
                got = hashlib.sha256(f.read()).hexdigest()
        except OSError as e:
            raise DataError(f"the shipped Fashion-MNIST sample is incomplete ({e}); reinstall the "
                            f"package") from None
        if got != digest:
            raise DataError(f"{path}: SHA-256 {got} != {digest}: the shipped sample is damaged; "
                            f"reinstall the package")
        paths[name] = path
    return paths


def sample_notice(directory: str, error: Exception) -> str:
    """The one line training prints when it falls back to the sample."""
    why = getattr(error, "reason", None)
    return (f"note: Fashion-MNIST is not in {directory} and could not be downloaded"
            + (f" ({why})" if why else "") + f": training on the sample shipped with the package "
            f"(1,000 train / 200 held-out pictures, {SAMPLE_DIR}), whose accuracy is not Fashion-MNIST's. "
            f"For the full dataset put its four files in {directory} or give --data-dir DIR; --no-sample "
            f"stops instead.")


def load_fashion_mnist(directory: Optional[str] = None, resize_to: int = 96,
                       download_missing: bool = True, use_cache: bool = True) -> Tuple[Split, Split]:
    """(train, test) splits, resized to ``resize_to``; see the module docstring.  The shipped
    sample (``directory`` = :data:`SAMPLE_DIR`) is checked against its SHA-256 first."""
    paths = check_sample() if is_sample(directory) else locate(directory, download_missing)
    return (_load_split(paths, "train", resize_to, use_cache),
            _load_split(paths, "t10k", resize_to, use_cache))


def official(directory: Optional[str] = None) -> bool:
    """Whether the folder holds exactly the official files (MD5 match)."""
    paths = locate(directory, download_missing=False)
    return all(p.endswith(".gz") and md5(p) == FILES[n][0] for n, p in paths.items())


class Loader:
    """Mini-batches of a split: ``float32`` NCHW images in [0, 1] and int64 labels.

    Images are ``(N, H, W)`` (one channel) or ``(N, C, H, W)`` uint8 (a memmap or a row
    view works: only the rows of a batch are read).  With ``mean`` and ``std`` (one value
    per channel, in [0, 1] units) batches are normalised like ``ToTensor`` then
    ``Normalize(mean, std)``: ``(x / 255 - mean) / std`` in float32; without them they
    are ``x / 255`` (the book's Fashion-MNIST recipe, unchanged).

    ``shuffle`` draws a new permutation of the examples each epoch from
    ``numpy.random.default_rng(seed + epoch)``, so epoch ``e`` sees the same order in
    every run and every backend (and after a resume).  Batches are prepared in a
    background thread so that the data never waits on the model.

    ``augment`` (a :class:`common.train.augment.Augment`) transforms the uint8 images of each
    batch with a generator seeded from ``(seed, epoch, step)``.  ``scales`` maps input sizes
    to splits of the same examples resized to them (multi-scale training or testing): a
    training loader draws one size per ``scale_every`` steps from the same seed; an
    evaluation reads every size (``common.train.loop.evaluate``).
    """

    def __init__(self, split: Split, batch_size: int, shuffle: bool = False, seed: int = 0,
                 prefetch: int = 2, mean=None, std=None, augment=None, scales=None, scale_every: int = 1,
                 shard=None):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.split, self.batch_size, self.shuffle, self.seed = split, batch_size, shuffle, seed
        self.prefetch = prefetch
        self.augment = augment if augment else None
        self.scales = dict(sorted(scales.items())) if scales else None
        self.scale_every = max(int(scale_every), 1)
        self.shard = shard                  # (rank, size): this worker's rows of every batch
        if self.scales and any(len(s) != len(split) for s in self.scales.values()):
            raise ValueError("every scale needs the same examples as the split")
        self.mean = self.std = None
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        if mean is not None:
            shape = np.shape(split.images)
            channels = shape[1] if len(shape) == 4 else 1
            mean = np.asarray(mean, np.float32).reshape(-1)
            std = np.asarray(std, np.float32).reshape(-1)
            if mean.size != channels or std.size != channels:
                raise ValueError(f"mean and std need one value per channel ({channels}), "
                                 f"got {mean.size} and {std.size}")
            if not np.all(std > 0):
                raise ValueError(f"std must be positive, got {std.tolist()}")
            self.mean, self.std = mean.reshape(1, -1, 1, 1), std.reshape(1, -1, 1, 1)

    def __len__(self):
        return -(-len(self.split) // self.batch_size)

    def global_rows(self, k: int) -> int:
        """The rows of batch ``k`` over all workers (the global batch: the last one may be short)."""
        return min(self.batch_size, len(self.split) - k * self.batch_size)

    def order(self, epoch: int = 0) -> np.ndarray:
        n = len(self.split)
        return np.random.default_rng(self.seed + epoch).permutation(n) if self.shuffle else np.arange(n)

    def scale_of(self, epoch: int, step: int) -> Optional[int]:
        """The input size of training step ``step`` (0-based) of ``epoch`` (None: one size)."""
        if not self.scales:
            return None
        sizes = list(self.scales)
        rng = np.random.default_rng([int(self.seed), int(epoch), step // self.scale_every, 1])
        return sizes[int(rng.integers(len(sizes)))]

    def at_scale(self, size: int) -> "Loader":
        """This loader over the examples resized to ``size`` (one of ``scales``)."""
        norm = {} if self.mean is None else dict(mean=self.mean.reshape(-1), std=self.std.reshape(-1))
        return Loader(self.scales[size], self.batch_size, self.shuffle, self.seed, self.prefetch,
                      shard=self.shard, **norm)

    def _batch(self, idx, epoch=0, step=0):
        split = self.scales[self.scale_of(epoch, step)] if self.scales and self.shuffle else self.split
        images = np.asarray(split.images[idx])
        labels = split.labels[idx]
        if self.augment is not None:
            from ..train.augment import step_rng
            images = self.augment(images, step_rng(self.seed, epoch, step))
        if self.shard is not None:          # the same pixels as one process, then this worker's rows
            from ..train.distributed import shard_rows
            rows = shard_rows(len(idx), *self.shard)
            images, labels = images[rows], labels[rows]
        if images.ndim == 3:
            X = images.astype(np.float32)[:, None] / np.float32(255)
        else:
            X = images.astype(np.float32) / np.float32(255)
        if self.mean is not None:
            X -= self.mean
            X /= self.std
        return X, labels

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """The batches of ``epoch``, from batch ``start`` (0-based: a run resumed in the middle
        of an epoch gets the batches it had not trained on, the same as without the stop)."""
        idx = self.order(epoch)
        starts = range(start * self.batch_size, len(idx), self.batch_size)
        if self.prefetch <= 0:
            for k, s in enumerate(starts, start):
                yield self._batch(idx[s:s + self.batch_size], epoch, k)
            return
        q, stop = queue.Queue(self.prefetch), threading.Event()

        def work():
            for k, s in enumerate(starts, start):
                if stop.is_set():
                    return
                q.put(self._batch(idx[s:s + self.batch_size], epoch, k))
            q.put(None)

        t = threading.Thread(target=work, daemon=True)
        t.start()
        try:
            while (item := q.get()) is not None:
                yield item
        finally:
            stop.set()
            while t.is_alive():
                try:
                    q.get_nowait()
                except queue.Empty:
                    t.join(0.01)

    __iter__ = lambda self: self.epoch(0)


def write_idx(path: str, array: np.ndarray) -> str:
    """Write a uint8 array as an IDX file (gzipped if ``path`` ends in .gz); used by tests
    and to make small datasets."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())
    return path
