"""Data: IDX parsing, every data error, resizing, batches and shuffling."""
import gzip
import os

import numpy as np
import pytest

from common.inputs import data as D
from tests.datagen import make_dataset, patterns


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv(D.ENV_CACHE, str(tmp_path / "cache"))
    return make_dataset(str(tmp_path / "fm"), n_train=50, n_test=20)


def test_counts_come_from_headers(folder):
    train, test = D.load_fashion_mnist(folder, 32, download_missing=False)
    assert train.images.shape == (50, 32, 32) and test.images.shape == (20, 32, 32)
    _, y = patterns(50, 0)
    np.testing.assert_array_equal(train.labels, y)


def test_plain_idx_files_work(tmp_path, monkeypatch):
    monkeypatch.setenv(D.ENV_CACHE, str(tmp_path / "cache"))
    folder = make_dataset(str(tmp_path / "plain"), 30, 10, gz=False)
    train, _ = D.load_fashion_mnist(folder, 28, download_missing=False)
    np.testing.assert_array_equal(train.images, patterns(30, 0)[0])


def test_missing_files_offline_error_names_files(tmp_path):
    with pytest.raises(D.DataError) as e:
        D.load_fashion_mnist(str(tmp_path / "empty"), download_missing=False)
    for name in D.FILES:
        assert name in str(e.value)
    assert str(tmp_path / "empty") in str(e.value)


def test_download_failure_is_clear(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "MIRRORS", ("http://127.0.0.1:9/",))
    with pytest.raises(D.DataError, match="train-images-idx3-ubyte.gz"):
        D.load_fashion_mnist(str(tmp_path / "none"))
    assert not [f for f in os.listdir(tmp_path / "none") if f.endswith(".part")]


def test_truncated_file_named(folder):
    path = os.path.join(folder, "train-images-idx3-ubyte.gz")
    raw = gzip.open(path).read()
    with gzip.open(path, "wb") as f:
        f.write(raw[:-100])
    with pytest.raises(D.DataError, match="train-images-idx3-ubyte.gz.*truncated"):
        D.load_fashion_mnist(folder, 28, download_missing=False)


def test_corrupt_gzip_named(folder):
    path = os.path.join(folder, "t10k-labels-idx1-ubyte.gz")
    with open(path, "wb") as f:
        f.write(b"\x1f\x8b this is not gzip data")
    with pytest.raises(D.DataError, match="t10k-labels-idx1-ubyte.gz"):
        D.load_fashion_mnist(folder, 28, download_missing=False)


def test_wrong_magic_named(folder):
    path = os.path.join(folder, "train-labels-idx1-ubyte.gz")
    D.write_idx(path, np.zeros((50, 2), np.uint8))       # 2-D where labels are 1-D
    with pytest.raises(D.DataError, match="train-labels-idx1-ubyte.gz.*not an IDX"):
        D.load_fashion_mnist(folder, 28, download_missing=False)


def test_mismatched_counts_named(folder):
    D.write_idx(os.path.join(folder, "train-labels-idx1-ubyte.gz"), np.zeros(49, np.uint8))
    with pytest.raises(D.DataError, match="50 images but .* 49 labels"):
        D.load_fashion_mnist(folder, 28, download_missing=False)


def test_bad_labels_named(folder):
    D.write_idx(os.path.join(folder, "t10k-labels-idx1-ubyte.gz"), np.full(20, 12, np.uint8))
    with pytest.raises(D.DataError, match="labels must be 0..9"):
        D.load_fashion_mnist(folder, 28, download_missing=False)


def test_resize_matches_pil_bilinear():
    from PIL import Image
    X, _ = patterns(3, 5)
    ours = D.resize(X, 96)
    for i in range(3):
        ref = np.asarray(Image.fromarray(X[i]).resize((96, 96), Image.BILINEAR))
        assert np.abs(ours[i].astype(int) - ref).max() <= 1


def test_resized_cache_is_reused(folder, tmp_path):
    a, _ = D.load_fashion_mnist(folder, 40, download_missing=False)
    cached = os.listdir(tmp_path / "cache")
    assert any(f.startswith("train-") and f.endswith("-40.npy") for f in cached)
    b, _ = D.load_fashion_mnist(folder, 40, download_missing=False)
    np.testing.assert_array_equal(a.images, b.images)


def test_loader_batches_scale_and_shuffle(folder):
    train, _ = D.load_fashion_mnist(folder, 28, download_missing=False)
    loader = D.Loader(train, 16, shuffle=True, seed=3)
    batches = list(loader.epoch(0))
    assert [len(y) for _, y in batches] == [16, 16, 16, 2] and len(loader) == 4
    X, y = batches[0]
    assert X.shape == (16, 1, 28, 28) and X.dtype == np.float32 and 0 <= X.min() and X.max() <= 1
    order = loader.order(0)
    np.testing.assert_array_equal(y, train.labels[order[:16]])
    np.testing.assert_allclose(X[:, 0], train.images[order[:16]] / 255, rtol=1e-6)
    assert sorted(order) == list(range(50))                      # a permutation of examples
    assert not np.array_equal(loader.order(0), loader.order(1))  # a new one each epoch
    np.testing.assert_array_equal(loader.order(1), D.Loader(train, 16, True, 3).order(1))


@pytest.fixture
def server(tmp_path):
    """A loopback HTTP server over a folder of generated files."""
    import functools
    import http.server
    import threading
    src = make_dataset(str(tmp_path / "served"), 30, 10)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=src)
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield src, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


def test_download_verifies_checksums(server, tmp_path, monkeypatch):
    src, url = server
    monkeypatch.setenv(D.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.setattr(D, "MIRRORS", (url,))
    good = {n: (D.md5(os.path.join(src, n)), d) for n, (_, d) in D.FILES.items()}
    monkeypatch.setattr(D, "FILES", good)
    train, test = D.load_fashion_mnist(str(tmp_path / "dl"), 28)
    assert len(train) == 30 and len(test) == 10
    assert D.official(str(tmp_path / "dl"))
    bad = dict(good, **{"t10k-images-idx3-ubyte.gz": ("0" * 32, 3)})
    monkeypatch.setattr(D, "FILES", bad)
    with pytest.raises(D.DataError, match="t10k-images-idx3-ubyte.gz.*MD5"):
        D.download(str(tmp_path / "dl2"), "t10k-images-idx3-ubyte.gz")
    assert not os.path.exists(tmp_path / "dl2" / "t10k-images-idx3-ubyte.gz")
