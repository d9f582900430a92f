"""Datasets behind one interface (common/inputs/datasets.py): image folders (reading rules, the
cache, bad data), CIFAR-10's python format, Fashion-MNIST unchanged, and every backend
training on a generated folder of coloured shapes with identical batches.

No network, no real data: folders, IDX files and CIFAR archives are generated in tmp_path.
"""
import hashlib
import io
import json
import os
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from common.inputs import data as D, datasets as DS
from common.net import oracle
from common.net.spec import Conv, Dense, Flatten, GlobalAvgPool, Inception, MaxPool, Spec, get_spec, stage
from tests.datagen import make_dataset, make_image_folder, patterns, shape_image

SIZE = 16


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(D.ENV_CACHE, str(tmp_path / "cache"))
    return tmp_path / "cache"


def load(root, size=SIZE, **kw):
    return DS.load_dataset("folder", str(root), size, **kw)


def save(path, im, **kw):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im.save(path, **kw)
    return path


def rows_files(ds, part="train"):
    """The relative file of each row of a cached part, in row order."""
    with open(os.path.join(ds.describe()["cache"], f"{part}-files.txt")) as f:
        return f.read().split("\n")[:-1]


class CountOpens:
    """Counts Image.open calls (every decode starts with one)."""

    def __init__(self, monkeypatch):
        self.n, real = 0, Image.open

        def counting(*a, **kw):
            self.n += 1
            return real(*a, **kw)
        monkeypatch.setattr(Image, "open", counting)


# ----------------------------------------------------------------------------- reading rules

def test_classes_are_sorted_folder_names_and_labels_follow(tmp_path):
    root = make_image_folder(str(tmp_path / "f"), n_train=2, n_test=1, names=["b", "A", "c10", "c9"])
    ds = load(root)
    assert ds.classes == ("A", "b", "c10", "c9")          # sorted(), like torchvision and Keras
    assert ds.num_classes == 4 and ds.model_options() == dict(in_channels=3, num_classes=4)
    for part, split in (("train", ds.train), ("test", ds.test)):
        for label, rel in zip(split.labels, rows_files(ds, part)):
            assert rel.split(os.sep)[:2] == [part, ds.classes[label]]
    d = ds.describe()
    assert d["class_counts"] == dict(train=[2, 2, 2, 2], test=[1, 1, 1, 1])
    assert d["layout"] == "train/test" and d["dir"] == str(tmp_path / "f")
    json.dumps(d)                                         # fit for the run record


def test_extensions_case_insensitive_nested_and_hidden_ignored(tmp_path):
    root = make_image_folder(str(tmp_path / "f"), n_train=1, n_test=1)
    rng = np.random.default_rng(1)
    cls = tmp_path / "f" / "train" / "circle"
    save(str(cls / "upper.PNG"), shape_image(0, rng), format="PNG")
    save(str(cls / "mixed.JpEg"), shape_image(0, rng), format="JPEG")
    save(str(cls / "bitmap.bmp"), shape_image(0, rng))
    save(str(cls / "deeper" / "nested.png"), shape_image(0, rng))
    save(str(cls / ".hidden.png"), shape_image(0, rng), format="PNG")          # ignored
    save(str(cls / ".ipynb_checkpoints" / "x.png"), shape_image(0, rng))        # ignored
    (cls / "notes.txt").write_text("not an image extension")                     # ignored
    os.makedirs(tmp_path / "f" / "train" / ".ipynb_checkpoints")                 # not a class
    os.makedirs(tmp_path / "f" / "test" / ".ipynb_checkpoints")
    (tmp_path / "f" / "train" / "README.md").write_text("stray file")           # ignored
    ds = load(root)
    assert ds.classes == ("circle", "cross", "square", "triangle")
    assert ds.describe()["class_counts"]["train"] == [5, 1, 1, 1]
    files = rows_files(ds)
    assert os.path.join("train", "circle", "deeper", "nested.png") in files
    assert ds.describe()["ignored"] == 3 and ds.describe()["skipped_count"] == 0


def test_channels_follow_the_images(tmp_path):
    grey = make_image_folder(str(tmp_path / "grey"), n_train=2, n_test=1, mode="L")
    ds = load(grey)
    assert ds.in_channels == 1 and ds.train.images.shape == (8, 1, SIZE, SIZE)
    assert ds.describe()["channels_rule"].startswith("1: all")
    assert len(ds.mean) == len(ds.std) == 1
    save(os.path.join(grey, "test", "square", "colour.png"), shape_image(2, np.random.default_rng(0)))
    ds = load(grey)                                        # one colour image: RGB for all
    assert ds.in_channels == 3 and ds.train.images.shape == (8, 3, SIZE, SIZE)
    g = np.asarray(ds.train.images)
    np.testing.assert_array_equal(g[:, 0], g[:, 1])       # grey pictures repeated
    np.testing.assert_array_equal(g[:, 0], g[:, 2])
    forced = load(grey, channels=1)
    assert forced.in_channels == 1 and forced.describe()["channels_rule"] == "1: requested"
    with pytest.raises(D.DataError, match="channels must be 1 .* or 3"):
        load(grey, channels=2)


def test_pixels_are_pils_convert_then_our_resize(tmp_path):
    rng = np.random.default_rng(2)
    root = make_image_folder(str(tmp_path / "f"), n_train=1, n_test=1)
    big = save(str(tmp_path / "f" / "train" / "circle" / "big.png"), shape_image(0, rng, (70, 50)))
    small = save(str(tmp_path / "f" / "train" / "circle" / "small.png"), shape_image(0, rng, (12, 10)))
    for channels, mode in ((3, "RGB"), (1, "L")):
        ds = load(root, 32, channels=channels)
        files = rows_files(ds)
        for path in (big, small):
            row = np.asarray(ds.train.images[[files.index(os.path.relpath(path, root))]])[0]
            im = Image.open(path).convert(mode)
            a = np.asarray(im)
            chw = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
            np.testing.assert_array_equal(row, D.resize(chw[None], 32)[0])     # our resize ...
            ref = np.asarray(im.resize((32, 32), Image.BILINEAR))              # ... within 1 of PIL's
            ref = ref[None] if ref.ndim == 2 else ref.transpose(2, 0, 1)
            assert np.abs(row.astype(int) - ref).max() <= 1


def _old_resize(images, size):
    """common.inputs.data.resize before image folders (enlarging only); the reference."""
    n, h, w = images.shape
    if (h, w) == (size, size):
        return images.copy()

    def weights(src, dst):
        x = (np.arange(dst) + 0.5) * src / dst - 0.5
        x = np.clip(x, 0, src - 1)
        lo = np.floor(x).astype(int)
        hi = np.minimum(lo + 1, src - 1)
        m = np.zeros((dst, src), np.float32)
        m[np.arange(dst), lo] += 1 - (x - lo)
        m[np.arange(dst), hi] += x - lo
        return m

    A, B = weights(h, size), weights(w, size)
    out = np.empty((n, size, size), np.uint8)
    for i in range(0, n, 4096):
        block = A @ images[i:i + 4096].astype(np.float32) @ B.T
        out[i:i + 4096] = np.clip(np.rint(block), 0, 255)
    return out


def test_resize_enlarging_unchanged_shrinking_antialiased_like_pil():
    X, _ = patterns(6, 3)
    for size in (28, 32, 40, 96):                         # Fashion-MNIST's numbers, bit for bit
        np.testing.assert_array_equal(D.resize(X, size), _old_resize(X, size))
    rng = np.random.default_rng(0)
    for h, w, size in ((64, 64, 32), (100, 37, 32), (31, 200, 17), (28, 28, 20)):
        img = rng.integers(0, 256, (h, w), dtype=np.uint8)
        ref = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))
        assert np.abs(D.resize(img[None], size)[0].astype(int) - ref).max() <= 1, (h, w, size)
    colour = rng.integers(0, 256, (2, 3, 30, 50), dtype=np.uint8)       # (N, C, H, W)
    out = D.resize(colour, 24)
    assert out.shape == (2, 3, 24, 24)
    np.testing.assert_array_equal(out[:, 1], D.resize(colour[:, 1], 24))


def test_an_images_pixels_do_not_depend_on_its_neighbours_or_layout():
    """The cache must not depend on how images were grouped: each image (and channel) is
    resized by products of its own, whatever the block or the memory layout."""
    rng = np.random.default_rng(1)
    for h, w in ((60, 45), (20, 70), (12, 10), (300, 200)):
        stack = rng.integers(0, 256, (5, 3, h, w), dtype=np.uint8)
        stack[:, 2] = stack[:, 0]                                      # two equal channels
        out = D.resize(stack, 24)
        np.testing.assert_array_equal(out[:, 0], out[:, 2])
        for i in range(5):
            np.testing.assert_array_equal(out[i], D.resize(stack[i:i + 1], 24)[0])
        hwc = np.ascontiguousarray(stack[0].transpose(1, 2, 0))       # a decoded (H, W, C) image
        np.testing.assert_array_equal(D.resize(hwc.transpose(2, 0, 1)[None], 24)[0], out[0])


def test_mixed_image_modes_are_converted(tmp_path):
    root = make_image_folder(str(tmp_path / "f"), n_train=1, n_test=1)
    rng = np.random.default_rng(3)
    d = tmp_path / "f" / "train" / "square"
    base = shape_image(2, rng, (40, 40))
    p = base.convert("P")
    p.info["transparency"] = 0
    modes = dict(l=base.convert("L"), rgba=base.convert("RGBA"), la=base.convert("LA"),
                 bw=base.convert("1"), p=p)
    for name, im in modes.items():
        save(str(d / f"{name}.png"), im)
    save(str(d / "cmyk.jpg"), base.convert("CMYK"), quality=95)
    save(str(d / "wide.png"), Image.fromarray(np.full((20, 20), 32896, np.uint16)))  # 16-bit grey
    rgba = base.convert("RGBA")
    rgba.putalpha(0)                                     # fully transparent: colours kept
    save(str(d / "clear.png"), rgba)
    ds = load(root)
    assert ds.describe()["skipped_count"] == 0 and ds.in_channels == 3
    files = rows_files(ds)
    row = lambda name: np.asarray(ds.train.images[[files.index(os.path.join("train", "square", name))]])[0]
    assert (row("wide.png") == 128).all()                 # 32896 / 257, not clipped to white
    np.testing.assert_array_equal(row("clear.png"), row("rgba.png"))   # alpha dropped
    np.testing.assert_array_equal(row("l.png")[0], row("l.png")[2])


def test_val_fraction_split_is_stratified_and_seeded(tmp_path):
    root = make_image_folder(str(tmp_path / "tree"), n_train=7, n_test=3, one_tree=True)
    a = load(root, val_fraction=0.3, seed=0)
    assert a.describe()["class_counts"] == dict(train=[7, 7, 7, 7], test=[3, 3, 3, 3])
    tr, te = a.train.images.index, a.test.images.index
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(40)) and not set(tr) & set(te)
    assert "held out" in a.describe()["test_is"] and a.describe()["split_seed"] == 0
    assert "held out with seed 0" in a.summary()
    b = load(root, val_fraction=0.3, seed=0)
    np.testing.assert_array_equal(b.test.images.index, te)
    c = load(root, val_fraction=0.3, seed=1)
    assert not np.array_equal(c.test.images.index, te)
    assert c.describe()["class_counts"]["test"] == [3, 3, 3, 3]
    np.testing.assert_array_equal(np.asarray(a.test.images)[0],
                                  np.load(os.path.join(a.describe()["cache"], "all.npy"))[te[0]])
    small = load(root, val_fraction=0.01)                 # at least one per class held out
    assert small.describe()["class_counts"]["test"] == [1, 1, 1, 1]


def test_val_fraction_errors(tmp_path):
    root = make_image_folder(str(tmp_path / "tree"), n_train=1, n_test=1, one_tree=True)
    os.remove(os.path.join(root, "cross", "cross_001.jpg"))
    with pytest.raises(D.DataError, match="class 'cross' has 1 image: .*at least 2 per class"):
        load(root, val_fraction=0.5)
    for bad in (0, 1, 1.5):
        with pytest.raises(D.DataError, match="between 0 and 1"):
            load(root, val_fraction=bad)
    split = make_image_folder(str(tmp_path / "split"), n_train=1, n_test=1)
    with pytest.raises(D.DataError, match="has train/ and test/ .*drop the validation fraction"):
        load(split, val_fraction=0.2)


def test_fashion_mnist_holds_out_part_of_its_training_split(tmp_path, monkeypatch):
    """--val-fraction on Fashion-MNIST: the test split becomes a stratified part of the
    training split, the official test set is not used, and the rest trains."""
    from tests.datagen import make_dataset
    monkeypatch.setenv("GOOGLENET_CACHE", str(tmp_path / "cache"))
    folder = make_dataset(str(tmp_path / "fm"), n_train=200, n_test=50)
    full = DS.load_dataset("fashion-mnist", folder, 28)
    ds = DS.load_dataset("fashion-mnist", folder, 28, val_fraction=0.25, seed=3)
    assert len(ds.train) + len(ds.test) == len(full.train) == 200 and len(ds.test) == 50
    assert np.bincount(ds.test.labels).tolist() == [5] * 10            # 20 per class -> 5 held out
    rows = {np.asarray(full.train.images[i]).tobytes(): i for i in range(len(full.train))}
    held = [rows[np.asarray(ds.test.images[i]).tobytes()] for i in range(len(ds.test))]
    kept = [rows[np.asarray(ds.train.images[i]).tobytes()] for i in range(len(ds.train))]
    assert not set(held) & set(kept) and len(set(held) | set(kept)) == 200
    assert ds.describe()["test_is"].startswith("held out from the training split")
    again = DS.load_dataset("fashion-mnist", folder, 28, val_fraction=0.25, seed=3)
    assert np.array_equal(np.asarray(again.test.labels), np.asarray(ds.test.labels))
    X, _ = next(iter(ds.loaders(16)[1]))
    assert X.shape == (16, 1, 28, 28) and X.dtype == np.float32


def test_limit_draws_a_seeded_subset_of_a_folder(tmp_path):
    root = make_image_folder(str(tmp_path / "f"), n_train=5, n_test=1)
    ds = load(root, limit=6, seed=4)
    assert len(ds.train) == 6 and len(set(ds.train.labels.tolist())) > 1   # not just class 0
    np.testing.assert_array_equal(load(root, limit=6, seed=4).train.images.index, ds.train.images.index)
    full = load(root)
    np.testing.assert_array_equal(np.asarray(ds.train.images),
                                  np.asarray(full.train.images)[ds.train.images.index])


def test_links_are_followed_once_and_dangling_ones_skipped(tmp_path):
    root = make_image_folder(str(tmp_path / "f"), n_train=2, n_test=1)
    cls = os.path.join(root, "train", "circle")
    os.symlink(cls, os.path.join(cls, "loop"))                          # a cycle
    os.symlink(os.path.join(root, "missing.png"), os.path.join(cls, "gone.png"))
    ds = load(root)
    assert ds.describe()["class_counts"]["train"][0] == 2
    assert [(os.path.basename(x["file"]), x["reason"]) for x in ds.describe()["skipped"]] == \
        [("gone.png", "cannot be decoded (FileNotFoundError: [Errno 2] No such file or directory: "
          f"'{os.path.join(cls, 'gone.png')}')")]


# ----------------------------------------------------------------------------- the cache

def test_second_load_reads_the_cache_without_decoding(tmp_path, monkeypatch):
    root = make_image_folder(str(tmp_path / "f"), n_train=3, n_test=2)
    opens = CountOpens(monkeypatch)
    first = load(root)
    assert opens.n == 2 * 20                              # header pass + decode pass
    opens.n = 0
    second = load(root)
    assert opens.n == 0                                   # nothing decoded, nothing opened
    assert isinstance(second.train.images, np.memmap) and second.train.images.mode == "r"
    np.testing.assert_array_equal(np.asarray(first.train.images), np.asarray(second.train.images))
    assert (first.mean, first.std) == (second.mean, second.std)
    tree = load(os.path.join(root, "train"), val_fraction=0.3, seed=0)    # another entry
    opens.n = 0
    load(os.path.join(root, "train"), val_fraction=0.5, seed=9)           # same entry, new split
    assert opens.n == 0 and os.path.isdir(tree.describe()["cache"])


def test_cache_is_rebuilt_when_a_file_changes(tmp_path, monkeypatch):
    root = make_image_folder(str(tmp_path / "f"), n_train=2, n_test=1)
    before = load(root)
    path = os.path.join(root, "train", "circle", "circle_000.png")
    row = rows_files(before).index(os.path.relpath(path, root))
    Image.new("RGB", (30, 30), (255, 255, 255)).save(path)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    opens = CountOpens(monkeypatch)
    after = load(root)
    assert opens.n > 0 and after.describe()["cache"] != before.describe()["cache"]
    assert (np.asarray(after.train.images[[row]]) == 255).all()
    assert not np.array_equal(np.asarray(after.train.images[[row]]), np.asarray(before.train.images[[row]]))
    assert load(root, size=SIZE + 4).describe()["cache"] != after.describe()["cache"]   # size in key


def test_a_broken_cache_is_rebuilt(tmp_path):
    root = make_image_folder(str(tmp_path / "f"), n_train=2, n_test=1)
    ds = load(root)
    before, path = np.array(ds.train.images), ds.describe()["cache"]
    del ds                                                 # (its memmap must not see the truncation)
    with open(os.path.join(path, "train.npy"), "wb") as f:
        f.write(b"garbage")
    again = load(root)
    np.testing.assert_array_equal(np.asarray(again.train.images), before)


def test_without_the_cache_nothing_is_written(tmp_path, cache):
    root = make_image_folder(str(tmp_path / "f"), n_train=2, n_test=1)
    ds = load(root, use_cache=False)
    assert not os.path.exists(cache) and ds.describe()["cache"] is None
    np.testing.assert_array_equal(np.asarray(ds.train.images), np.asarray(load(root).train.images))


def test_mean_std_come_from_the_training_split(tmp_path):
    root = make_image_folder(str(tmp_path / "f"), n_train=3, n_test=2)
    for name in os.listdir(os.path.join(root, "test", "circle")):      # a white test split
        Image.new("RGB", (20, 20), (255, 255, 255)).save(os.path.join(root, "test", "circle", name))
    ds = load(root)
    X = np.asarray(ds.train.images).astype(np.float64) / 255
    np.testing.assert_allclose(ds.mean, X.mean((0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(ds.std, X.std((0, 2, 3)), rtol=1e-10)
    both = np.concatenate([X, np.asarray(ds.test.images) / 255])
    assert not np.allclose(ds.mean, both.mean((0, 2, 3)))
    d = ds.describe()
    assert d["mean"] == list(ds.mean) and d["std"] == list(ds.std) and d["normalize"] is True
    train, test = ds.loaders(5, seed=1)
    Xb, yb = next(iter(train))
    rows = train.order(0)[:5]
    expect = (np.asarray(ds.train.images)[rows].astype(np.float32) / np.float32(255)
              - np.float32(ds.mean).reshape(1, 3, 1, 1)) / np.float32(ds.std).reshape(1, 3, 1, 1)
    assert Xb.dtype == np.float32 and Xb.shape == (5, 3, SIZE, SIZE)
    np.testing.assert_array_equal(Xb, expect)
    np.testing.assert_array_equal(yb, ds.train.labels[rows])
    whole = np.concatenate([X for X, _ in train.epoch(0)])
    np.testing.assert_allclose(whole.mean((0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(whole.std((0, 2, 3)), 1, atol=1e-4)
    tree = load(os.path.join(root, "train"), val_fraction=0.34)
    Xt = np.asarray(tree.train.images).astype(np.float64) / 255
    np.testing.assert_allclose(tree.mean, Xt.mean((0, 2, 3)), rtol=1e-12)


# ----------------------------------------------------------------------------- bad data

def test_empty_class_folder_is_named(tmp_path):
    root = make_image_folder(str(tmp_path / "f"), n_train=1, n_test=1)
    os.makedirs(os.path.join(root, "train", "zebra"))
    os.makedirs(os.path.join(root, "test", "zebra"))
    (tmp_path / "f" / "test" / "zebra" / "readme.txt").write_text("no images")
    with pytest.raises(D.DataError, match=r"empty class folders: .*train/zebra, .*test/zebra"):
        load(root)


def _broken_files(root):
    """A text file named .jpg, a truncated PNG and a truncated JPEG in train/circle."""
    d = os.path.join(root, "train", "circle")
    with open(os.path.join(d, "notes.jpg"), "w") as f:
        f.write("this is not a picture")
    rng = np.random.default_rng(5)
    for name, fmt in (("cut.png", "PNG"), ("cut.jpg", "JPEG")):
        buf = io.BytesIO()
        shape_image(0, rng, (64, 64)).save(buf, fmt)
        with open(os.path.join(d, name), "wb") as f:
            f.write(buf.getvalue()[:len(buf.getvalue()) // 2])
    return ["cut.jpg", "cut.png", "notes.jpg"]


def test_unreadable_files_are_skipped_and_listed_by_default(tmp_path):
    root = make_image_folder(str(tmp_path / "f"), n_train=2, n_test=1)
    names = _broken_files(root)
    ds = load(root)
    d = ds.describe()
    assert d["skipped_count"] == 3 and len(ds.train) == 8
    assert [os.path.basename(s["file"]) for s in d["skipped"]] == names
    reasons = {os.path.basename(s["file"]): s["reason"] for s in d["skipped"]}
    assert reasons["notes.jpg"] == "not an image Pillow can read"
    assert reasons["cut.png"].startswith("truncated") and reasons["cut.jpg"].startswith("truncated")
    assert "3 unreadable files skipped" in ds.summary()
    assert load(root).describe()["skipped"] == d["skipped"]                # also from the cache


def test_strict_stops_on_unreadable_files_naming_them(tmp_path):
    root = make_image_folder(str(tmp_path / "f"), n_train=2, n_test=1)
    with open(os.path.join(root, "train", "circle", "notes.jpg"), "w") as f:
        f.write("this is not a picture")
    with pytest.raises(D.DataError, match=r"1 file cannot be read \(strict.*\n.*train/circle/notes.jpg: not an image"):
        load(root, strict=True)
    os.remove(os.path.join(root, "train", "circle", "notes.jpg"))
    _broken_files(root)
    os.remove(os.path.join(root, "train", "circle", "notes.jpg"))
    with pytest.raises(D.DataError, match=r"train/circle/cut.*: truncated"):
        load(root, strict=True)                           # found while decoding
    load(root)                                            # cached with two skipped files ...
    with pytest.raises(D.DataError, match="2 files cannot be read"):
        load(root, strict=True)                           # ... strict still stops on them
    assert not [f for f in os.listdir(os.environ[D.ENV_CACHE]) if ".tmp-" in f]   # nothing half-written


def test_a_class_whose_files_are_all_unreadable_is_named(tmp_path):
    root = make_image_folder(str(tmp_path / "f"), n_train=1, n_test=1)
    bad = os.path.join(root, "test", "cross", "cross_000.jpg")
    with open(bad, "w") as f:
        f.write("broken")
    with pytest.raises(D.DataError, match=r"no readable image in class folder test/cross; every file was "
                                          r"skipped \(test/cross/cross_000.jpg: not an image"):
        load(root)


def test_class_in_one_split_only_is_named(tmp_path):
    root = make_image_folder(str(tmp_path / "f"), n_train=1, n_test=1)
    import shutil
    shutil.rmtree(os.path.join(root, "test", "square"))
    with pytest.raises(D.DataError, match="class 'square' has a folder in train/ but none in test/.*"
                                          "label k means the same class"):
        load(root)
    os.makedirs(os.path.join(root, "test", "square"))
    save(os.path.join(root, "test", "zebra", "z.png"), shape_image(1, np.random.default_rng(0)))
    save(os.path.join(root, "test", "square", "s.png"), shape_image(1, np.random.default_rng(0)))
    with pytest.raises(D.DataError, match="class 'zebra' has a folder in test/ but none in train/"):
        load(root)


def test_a_single_class_is_an_error(tmp_path):
    root = make_image_folder(str(tmp_path / "f"), n_classes=1, n_train=2, n_test=1)
    with pytest.raises(D.DataError, match="only one class folder \\('circle'\\); a classifier needs at least two"):
        load(root)
    tree = make_image_folder(str(tmp_path / "tree"), n_classes=1, n_train=2, n_test=1, one_tree=True)
    with pytest.raises(D.DataError, match="only one class folder"):
        load(tree, val_fraction=0.5)


def test_wrong_layout_explains_both_layouts(tmp_path):
    tree = make_image_folder(str(tmp_path / "tree"), n_train=1, n_test=1, one_tree=True)
    with pytest.raises(D.DataError) as e:
        load(tree)
    msg = str(e.value)
    assert "no train/ and test/ sub-folders" in msg and "/train/<class>/" in msg
    assert "--val-fraction" in msg and "circle" in msg
    with pytest.raises(D.DataError, match="no such folder"):
        load(tmp_path / "missing")
    os.makedirs(tmp_path / "only" / "train" / "a")
    with pytest.raises(D.DataError, match="no test/ sub-folder next to train/"):
        load(tmp_path / "only")
    os.makedirs(tmp_path / "flat")
    Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "x.png")
    with pytest.raises(D.DataError, match="no class sub-folders"):
        load(tmp_path / "flat", val_fraction=0.2)
    with pytest.raises(D.DataError, match="needs its path"):
        DS.load_dataset("folder", None)
    with pytest.raises(D.DataError, match="unknown dataset 'mnist'; choose one of fashion-mnist, folder, cifar10"):
        DS.load_dataset("mnist")


# ----------------------------------------------------------------------------- Fashion-MNIST

@pytest.fixture
def fashion(tmp_path):
    return make_dataset(str(tmp_path / "fm"), n_train=50, n_test=20)


def test_fashion_mnist_through_the_interface_is_bit_identical(fashion):
    ds = DS.load_dataset("fashion-mnist", fashion, 32, download_missing=False)
    train, test = D.load_fashion_mnist(fashion, 32, download_missing=False)
    for new, old in ((ds.train, train), (ds.test, test)):
        assert new.images.shape == old.images.shape and new.images.dtype == np.uint8
        np.testing.assert_array_equal(new.images, old.images)
        np.testing.assert_array_equal(new.labels, old.labels)
    assert ds.classes == D.CLASSES and ds.in_channels == 1 and ds.normalize is False
    new_train, new_test = ds.loaders(16, seed=3)
    for new, old in ((new_train, D.Loader(train, 16, shuffle=True, seed=3)), (new_test, D.Loader(test, 16))):
        for epoch in (0, 1):
            a, b = list(new.epoch(epoch)), list(old.epoch(epoch))
            assert len(a) == len(b)
            for (Xa, ya), (Xb, yb) in zip(a, b):
                assert Xa.tobytes() == Xb.tobytes() and ya.tobytes() == yb.tobytes()
    X = train.images.astype(np.float64) / 255
    np.testing.assert_allclose(ds.mean, [X.mean()], rtol=1e-12)
    np.testing.assert_allclose(ds.std, [X.std()], rtol=1e-10)
    d = ds.describe()
    assert d["name"] == "fashion-mnist" and d["dir"] == fashion and d["train_examples"] == 50
    json.dumps(d)


def test_fashion_mnist_limit_channels_and_cached_statistics(fashion, monkeypatch):
    ds = DS.load_dataset("fashion-mnist", fashion, 28, limit=20, download_missing=False)
    train, _ = D.load_fashion_mnist(fashion, 28, download_missing=False)
    np.testing.assert_array_equal(ds.train.images, train.images[:20])          # the first N
    np.testing.assert_allclose(ds.mean, [train.images[:20].mean() / 255], rtol=1e-12)
    monkeypatch.setattr(DS, "channel_totals", lambda *a: pytest.fail("statistics recomputed"))
    again = DS.load_dataset("fashion-mnist", fashion, 28, limit=20, download_missing=False)
    assert again.mean == ds.mean and again.std == ds.std
    rgb = DS.load_dataset("fashion-mnist", fashion, 28, channels=3, limit=20, download_missing=False)
    assert rgb.in_channels == 3 and rgb.train.images.shape == (20, 3, 28, 28) and len(rgb.mean) == 3
    (X3, _), (X1, _) = next(iter(rgb.loaders(8)[0])), next(iter(ds.loaders(8)[0]))
    for c in range(3):
        assert X3[:, c].tobytes() == X1[:, 0].tobytes()


# ----------------------------------------------------------------------------- CIFAR-10

def _batch(rng, n, protocol):
    return pickle.dumps({b"batch_label": b"fake", b"labels": rng.integers(0, 10, n).tolist(),
                         b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"filenames": [b"x.png"] * n}, protocol=protocol)


def make_cifar(folder, n=4, protocol=2, archive=True, seed=0):
    """A tiny CIFAR-10 in the official python format: 5 training batches and a test batch
    of ``n`` images each, pickled dicts with bytes keys, in a .tar.gz or a folder."""
    rng = np.random.default_rng(seed)
    members = {name: _batch(rng, n, protocol) for name in DS.CIFAR_TRAIN + DS.CIFAR_TEST}
    members[DS.CIFAR_META] = pickle.dumps(
        {b"label_names": [c.encode() for c in DS.CIFAR_CLASSES], b"num_vis": 3072}, protocol=protocol)
    os.makedirs(folder, exist_ok=True)
    if archive:
        path = os.path.join(folder, DS.CIFAR_FILE)
        with tarfile.open(path, "w:gz") as tar:
            for name, raw in members.items():
                info = tarfile.TarInfo(f"{DS.CIFAR_FOLDER}/{name}")
                info.size = len(raw)
                tar.addfile(info, io.BytesIO(raw))
        return path
    d = os.path.join(folder, DS.CIFAR_FOLDER)
    os.makedirs(d, exist_ok=True)
    for name, raw in members.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(raw)
    return d


def _unpickled(raw):
    d = pickle.loads(raw, encoding="bytes")
    return d[b"data"].reshape(-1, 3, 32, 32), np.asarray(d[b"labels"])


def test_cifar10_official_python_format(tmp_path, monkeypatch):
    path = make_cifar(str(tmp_path / "c"))
    ds = DS.load_dataset("cifar10", str(tmp_path / "c"), 40, download_missing=False)
    with tarfile.open(path) as tar:
        raw = {n: tar.extractfile(f"{DS.CIFAR_FOLDER}/{n}").read() for n in DS.CIFAR_TRAIN + DS.CIFAR_TEST}
    X = np.concatenate([_unpickled(raw[n])[0] for n in DS.CIFAR_TRAIN])
    y = np.concatenate([_unpickled(raw[n])[1] for n in DS.CIFAR_TRAIN])
    assert ds.train.images.shape == (20, 3, 40, 40) and len(ds.test) == 4
    np.testing.assert_array_equal(ds.train.images, D.resize(X, 40))
    np.testing.assert_array_equal(ds.train.labels, y)
    assert ds.classes == DS.CIFAR_CLASSES and ds.in_channels == 3 and ds.normalize is True
    d = ds.describe()
    assert d["official"] is False and d["layout"] == "archive" and d["dir"] == path
    np.testing.assert_allclose(ds.mean, (D.resize(X, 40) / 255).mean((0, 2, 3)), rtol=1e-12)
    monkeypatch.setattr(tarfile, "open", lambda *a, **k: pytest.fail("archive read again"))
    again = DS.load_dataset("cifar10", str(tmp_path / "c"), 40, download_missing=False)
    np.testing.assert_array_equal(again.train.images, ds.train.images)


def test_cifar10_extracted_folder_and_grey(tmp_path):
    d = make_cifar(str(tmp_path / "c"), protocol=4, archive=False)
    ds = DS.load_dataset("cifar10", str(tmp_path / "c"), 32, download_missing=False)
    assert ds.describe()["layout"] == "folder" and len(ds.train) == 20
    with open(os.path.join(d, "test_batch"), "rb") as f:
        X, y = _unpickled(f.read())
    np.testing.assert_array_equal(ds.test.images, X)
    grey = DS.load_dataset("cifar10", d, 32, channels=1, download_missing=False)
    assert grey.in_channels == 1 and grey.test.images.shape == (4, 1, 32, 32)
    for i in range(4):
        pil = np.asarray(Image.fromarray(X[i].transpose(1, 2, 0)).convert("L"))
        np.testing.assert_array_equal(grey.test.images[i, 0], pil)       # Pillow's luma, exactly


def test_cifar10_pickles_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))
    d = make_cifar(str(tmp_path / "c"), archive=False)
    with open(os.path.join(d, "data_batch_3"), "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f, protocol=2)
    with pytest.raises(D.DataError, match=r"data_batch_3: refusing to unpickle posix.mkdir"):
        DS.load_dataset("cifar10", str(tmp_path / "c"), 32, download_missing=False)
    assert not marker.exists()
    with open(os.path.join(d, "data_batch_3"), "wb") as f:
        f.write(b"\x80\x02}q\x00(X")                                    # truncated pickle
    with pytest.raises(D.DataError, match="data_batch_3: not a readable CIFAR pickle"):
        DS.load_dataset("cifar10", str(tmp_path / "c"), 32, download_missing=False)
    with open(os.path.join(d, "data_batch_3"), "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(D.DataError, match=r"data_batch_3: 'data' must be uint8 \(N, 3072\)"):
        DS.load_dataset("cifar10", str(tmp_path / "c"), 32, download_missing=False)


def test_cifar10_offline_message_names_the_file(tmp_path, monkeypatch):
    with pytest.raises(D.DataError) as e:
        DS.load_dataset("cifar10", str(tmp_path / "none"), 32, download_missing=False)
    assert DS.CIFAR_FILE in str(e.value) and DS.CIFAR_MD5 in str(e.value)
    assert "cs.toronto.edu/~kriz" in str(e.value) and str(tmp_path / "none") in str(e.value)
    monkeypatch.setattr(DS, "CIFAR_MIRRORS", ("http://127.0.0.1:9/",))
    with pytest.raises(D.DataError, match=f"could not be downloaded.*\n.*{DS.CIFAR_FILE}"):
        DS.load_dataset("cifar10", str(tmp_path / "dl"), 32)
    assert not [f for f in os.listdir(tmp_path / "dl") if f.endswith(".part")]
    with open(tmp_path / "dl" / DS.CIFAR_FILE, "wb") as f:
        f.write(b"\x1f\x8b truncated")
    with pytest.raises(D.DataError, match=f"{DS.CIFAR_FILE}: cannot be read .*corrupt or truncated"):
        DS.load_dataset("cifar10", str(tmp_path / "dl"), 32)


def test_cifar10_download_checks_the_md5(tmp_path, monkeypatch):
    import functools
    import http.server
    import threading
    src = make_cifar(str(tmp_path / "served"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "served"))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(DS, "CIFAR_MIRRORS", (f"http://127.0.0.1:{httpd.server_address[1]}/",))
        monkeypatch.setattr(DS, "CIFAR_MD5", "0" * 32)
        with pytest.raises(D.DataError, match=f"{DS.CIFAR_FILE} from .*MD5"):
            DS.load_dataset("cifar10", str(tmp_path / "bad"), 32)
        assert not os.path.exists(tmp_path / "bad" / DS.CIFAR_FILE)
        monkeypatch.setattr(DS, "CIFAR_MD5", D.md5(src))
        ds = DS.load_dataset("cifar10", str(tmp_path / "good"), 32)
        assert len(ds.train) == 20 and ds.describe()["official"] is True
    finally:
        httpd.shutdown()


# ----------------------------------------------------------------------------- the Loader

def test_loader_channels_and_normalisation_checks():
    rng = np.random.default_rng(0)
    split = D.Split(rng.integers(0, 256, (10, 3, 4, 4), dtype=np.uint8), np.arange(10) % 2)
    X, _ = next(iter(D.Loader(split, 4)))
    assert X.shape == (4, 3, 4, 4) and X.dtype == np.float32
    np.testing.assert_array_equal(X, split.images[:4].astype(np.float32) / np.float32(255))
    with pytest.raises(ValueError, match="one value per channel \\(3\\)"):
        D.Loader(split, 4, mean=[0.5], std=[0.2])
    with pytest.raises(ValueError, match="std must be positive"):
        D.Loader(split, 4, mean=[0.5] * 3, std=[0.2, 0, 0.2])
    with pytest.raises(ValueError, match="both mean and std"):
        D.Loader(split, 4, mean=[0.5] * 3)
    view = DS.ImageView(split.images, [9, 0, 4])
    assert view.shape == (3, 3, 4, 4) and len(view[1:]) == 2
    np.testing.assert_array_equal(view[[0, 2]], split.images[[9, 4]])
    np.testing.assert_array_equal(np.asarray(view[1:]), split.images[[0, 4]])


# ----------------------------------------------------------------------------- the model follows the data

def test_the_model_takes_channels_and_classes_from_the_data(tmp_path):
    root = make_image_folder(str(tmp_path / "f"), n_classes=5, n_train=1, n_test=1)
    ds = load(root, 96)
    assert ds.model_options() == dict(in_channels=3, num_classes=5)
    for preset in ("bn", "paper", "d2l"):
        spec = get_spec(preset, input_size=96, **ds.model_options())
        a = oracle.check_input(spec, 96)
        assert a.input_shape == (3, 96, 96) and a.blocks[-1].out_shape == (5,)


SHAPES_SIZE = 32


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """A 3-channel, 4-class folder of coloured shapes (12 train, 6 test images per class)."""
    tmp = tmp_path_factory.mktemp("shapes")
    old = os.environ.get(D.ENV_CACHE)
    os.environ[D.ENV_CACHE] = str(tmp / "cache")
    try:
        ds = DS.load_dataset("folder", make_image_folder(str(tmp / "data"), n_train=12, n_test=6),
                             SHAPES_SIZE)
    finally:
        if old is None:
            os.environ.pop(D.ENV_CACHE, None)
        else:
            os.environ[D.ENV_CACHE] = old
    train, test = ds.loaders(16, seed=0)
    epochs = 3
    digest = lambda X, y: hashlib.sha256(X.tobytes() + y.tobytes()).hexdigest()
    reference = []                                         # what fit() feeds: an epoch, then the test
    for e in range(epochs):
        reference += [digest(X, y) for X, y in train.epoch(e)]
        reference += [digest(X, y) for X, y in test.epoch(0)]
    return ds, epochs, reference


def user_spec(in_channels, num_classes):
    """tests/test_training.py's small user table, sized by the data."""
    return Spec("smoke", in_channels, SHAPES_SIZE, (
        stage("s1", Conv(16, 3, 1, 1), MaxPool(3, 2, 1)),
        stage("s2", Inception(8, (8, 16), (4, 8), 8), MaxPool(3, 2, 1)),
        stage("head", GlobalAvgPool(), Flatten(), Dense(num_classes))))


class Spy:
    """A backend whose to_tensor records the bytes of every batch it is given (and checks
    that the framework tensor holds the same numbers)."""

    def __init__(self, bk):
        self.bk, self.seen = bk, []

    def __getattr__(self, name):
        return getattr(self.bk, name)

    def to_tensor(self, X, *a, **kw):
        t = self.bk.to_tensor(X, *a, **kw)
        X = np.asarray(X)
        if X.dtype == np.float32:
            self.images = X
            back = self.bk.to_numpy(t)
            if back.shape != X.shape:                     # TensorFlow holds NHWC
                back = back.transpose(0, 3, 1, 2)
            assert np.ascontiguousarray(back).tobytes() == X.tobytes()
        else:
            self.seen.append(hashlib.sha256(self.images.tobytes() + X.tobytes()).hexdigest())
        return t


def test_every_backend_learns_a_folder_from_identical_batches(bk, shapes, tmp_path):
    from common.train.loop import fit
    from common.train.train_config import Recipe
    ds, epochs, reference = shapes
    net = bk.build(user_spec(**ds.model_options()), seed=0)
    spy = Spy(bk)
    train, test = ds.loaders(16, seed=0)
    recipe = Recipe(num_epochs=epochs, batch_size=16, lr=0.05, momentum=0.9, resize=SHAPES_SIZE)
    rec = fit(spy, net, train, test, recipe, str(tmp_path), progress=False, log=lambda *a: None,
              record=dict(dataset=ds.describe()))
    assert rec["test_acc"] >= 0.5, rec["history"]          # chance is 0.25 (24 test images)
    assert spy.seen == reference                          # the same bytes on every backend
    saved = json.load(open(tmp_path / "run.json"))
    assert saved["dataset"]["classes"] == ["circle", "cross", "square", "triangle"]
    assert saved["dataset"]["mean"] == list(ds.mean)


def test_every_backend_builds_the_bn_preset_for_a_5_class_colour_folder(bk, tmp_path):
    root = make_image_folder(str(tmp_path / "f"), n_classes=5, n_train=1, n_test=1)
    ds = load(root, 96)
    net = bk.build("bn", input_size=96, seed=0, **ds.model_options())
    X, _ = next(iter(ds.loaders(2)[1]))
    out = bk.forward(net, X)
    assert np.asarray(out).shape == (2, 5) and np.isfinite(np.asarray(out)).all()
