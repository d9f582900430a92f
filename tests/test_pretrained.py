"""The zoos' ImageNet weights (#28): the readers refuse what they must, the download keeps
nothing half-written, ``scripts/predict.py`` gives a zoo's own top 5, ``scripts/convert.py``
converts any zoo file.

The readers' main proof is in ``tests/test_zoo.py`` (each zoo's own file, written by its own
save call, gives the zoo's logits on all four backends).  Downloads here only ever talk to an
HTTP server on 127.0.0.1 that the test starts and stops (``GOOGLENET_WEIGHTS_MIRROR``).
"""
import contextlib
import errno
import functools
import hashlib
import http.server
import os
import pickle
import socket
import struct
import threading
import zipfile

import numpy as np
import pytest

from common.inputs import download as DL
from common.net import pretrained as PT, zoofiles as ZF
from tests.conftest import backend_or_skip


# --------------------------------------------------------------------------- a local server
@contextlib.contextmanager
def serving(folder, handler_class=http.server.SimpleHTTPRequestHandler):
    """An HTTP server on 127.0.0.1 serving ``folder``; stopped (and its thread joined) on exit."""
    handler = functools.partial(handler_class, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


class _CutShort(http.server.SimpleHTTPRequestHandler):
    """Announces the whole file, sends half of it, closes: an interrupted download."""

    def do_GET(self):
        path = self.translate_path(self.path)
        data = open(path, "rb").read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:len(data) // 2])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


def _quiet(cls):
    return type("Quiet", (cls,), {"log_message": lambda self, *a: None})


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]          # nothing listens there once the socket is closed


def _leftovers(folder):
    return sorted(f for f in os.listdir(folder) if f.endswith(".part") or f.startswith("."))


@pytest.fixture
def served(tmp_path):
    src = tmp_path / "served"
    src.mkdir()
    payload = np.random.default_rng(0).bytes(300_000)
    (src / "w.bin").write_bytes(payload)
    return src, payload


def test_download_checks_the_hash_and_keeps_the_file(served, tmp_path):
    src, payload = served
    cache = tmp_path / "cache"
    md5 = hashlib.md5(payload).hexdigest()
    with serving(src, _quiet(http.server.SimpleHTTPRequestHandler)) as url:
        path = DL.fetch_file(f"{url}/w.bin", str(cache), "w.bin", ("md5", md5), progress=True)
    assert open(path, "rb").read() == payload and _leftovers(cache) == []
    # the cached file is used as it is, with no server at all
    assert DL.fetch_file("http://127.0.0.1:9/w.bin", str(cache), "w.bin", ("md5", md5)) == path
    # a torchvision-style hash prefix (the sha256's first 8 digits)
    sha = hashlib.sha256(payload).hexdigest()[:8]
    assert DL.hash_ok(path, ("sha256", sha)) and not DL.hash_ok(path, ("sha256", "00000000"))


def test_a_wrong_hash_keeps_nothing(served, tmp_path):
    src, _ = served
    cache = tmp_path / "cache"
    with serving(src, _quiet(http.server.SimpleHTTPRequestHandler)) as url:
        with pytest.raises(DL.DownloadError) as e:
            DL.fetch_file(f"{url}/w.bin", str(cache), "w.bin", ("md5", "0" * 32), progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "does not have the publisher's md5" in msg and "nothing was kept" in msg
    assert os.listdir(cache) == []


def test_an_interrupted_download_keeps_nothing(served, tmp_path):
    src, payload = served
    cache = tmp_path / "cache"
    with serving(src, _CutShort) as url:
        with pytest.raises(DL.DownloadError, match=r"\(the connection was cut short\); nothing was kept"):
            DL.fetch_file(f"{url}/w.bin", str(cache), "w.bin", ("md5", hashlib.md5(payload).hexdigest()),
                          progress=False)
    assert os.listdir(cache) == []


def test_a_full_disk_keeps_nothing(served, tmp_path, monkeypatch):
    """The write fails with ENOSPC half way (as on a full disk): one line, the part file removed."""
    src, payload = served
    cache = tmp_path / "cache"
    real = DL._stream

    def fill_up(url, out, progress, timeout, desc):
        out.write(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(DL, "_stream", fill_up)
    with pytest.raises(DL.DownloadError, match=r"failed \(the disk is full\); nothing was kept"):
        DL.fetch_file("http://127.0.0.1:9/w.bin", str(cache), "w.bin", ("md5", "0" * 32), progress=False)
    assert os.listdir(cache) == [] and real is not None


def test_offline_names_the_file_and_the_folder(tmp_path, monkeypatch, capsys):
    """No server: ``scripts/predict.py imagenet:...`` stops with one line naming the file, its
    hash, the folder to put it in and its address, and leaves nothing behind."""
    from cli.predict import main
    cache = tmp_path / "weights"
    monkeypatch.setenv(PT.ENV_WEIGHTS, str(cache))
    monkeypatch.setenv(PT.ENV_MIRROR, f"http://127.0.0.1:{_closed_port()}")
    pic = str(tmp_path / "pic.png")
    _picture(pic)
    rc = main(["imagenet:torchvision.googlenet", pic])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1, err
    assert err[0].startswith("error: the ImageNet weights imagenet:torchvision.googlenet")
    assert f"put googlenet-1378be20.pth (sha256 1378be20) into {cache} by hand" in err[0]
    assert err[0].endswith("/googlenet-1378be20.pth")
    assert not cache.exists() or _leftovers(cache) == []


def test_a_gluon_zip_keeps_only_its_params(tmp_path):
    """Gluon's model store serves a zip holding ``<name>.params``; its sha1 is the file's."""
    src, cache = tmp_path / "served", tmp_path / "cache"
    src.mkdir()
    params = np.random.default_rng(1).bytes(50_000)
    with zipfile.ZipFile(src / "m.zip", "w") as zf:
        zf.writestr("m-1234.params", params)
    sha1 = hashlib.sha1(params).hexdigest()
    with serving(src, _quiet(http.server.SimpleHTTPRequestHandler)) as url:
        path = DL.fetch_file(f"{url}/m.zip", str(cache), "m-1234.params", ("sha1", sha1), member="m-1234.params",
                             progress=False)
        assert open(path, "rb").read() == params and sorted(os.listdir(cache)) == ["m-1234.params"]
        with pytest.raises(DL.DownloadError, match="does not hold other.params"):
            DL.fetch_file(f"{url}/m.zip", str(cache), "other.params", ("sha1", sha1), member="other.params",
                          progress=False)
    assert sorted(os.listdir(cache)) == ["m-1234.params"]


def test_every_source_names_its_zoos_address_and_hash():
    """The addresses and hashes are the ones the zoos' own code uses (read from the installed
    packages where they are importable; torchvision's from its source, vendored in tests/vendor)."""
    s = PT.SOURCES
    assert len(s) == 9 and {x.format for x in s.values()} == set(ZF.FORMATS)
    for x in s.values():
        assert x.url.startswith("https://") and x.file and x.hash[0] in ("md5", "sha1", "sha256")
    assert s["torchvision.googlenet"].url.endswith("googlenet-1378be20.pth")
    import importlib
    import importlib.util
    if importlib.util.find_spec("paddle"):
        pg = importlib.import_module("paddle.vision.models.googlenet")
        pi = importlib.import_module("paddle.vision.models.inceptionv3")
        assert pg.model_urls["googlenet"] == (s["paddle.googlenet"].url, s["paddle.googlenet"].hash[1])
        assert pi.model_urls["inception_v3"] == (s["paddle.inception_v3"].url, s["paddle.inception_v3"].hash[1])
    if importlib.util.find_spec("mxnet"):
        from mxnet.gluon.model_zoo import model_store as ms
        g = s["gluon.inception_v3"]
        assert ms._model_sha1["inceptionv3"] == g.hash[1]
        assert ms._url_format.format(repo_url=ms.apache_repo_url, file_name="inceptionv3-" + g.hash[1][:8]) == g.url
    if importlib.util.find_spec("tensorflow"):
        import inspect
        from keras.src.applications import inception_v3 as kv3, inception_resnet_v2 as kr
        text = inspect.getsource(kv3) + inspect.getsource(kr)
        for name in ("keras.inception_v3", "keras.inception_v3_notop", "keras.inception_resnet_v2",
                     "keras.inception_resnet_v2_notop"):
            assert s[name].hash[1] in text
        for name in ("keras.inception_resnet_v2", "keras.inception_resnet_v2_notop"):
            assert s[name].url == kr.BASE_WEIGHT_URL + s[name].file
        assert s["keras.inception_v3"].url == kv3.WEIGHTS_PATH and s["keras.inception_v3_notop"].url == \
            kv3.WEIGHTS_PATH_NO_TOP


def test_imagenet_class_names():
    names = PT.imagenet_classes()
    assert len(names) == 1000 == len(set(names))
    assert (names[0], names[1], names[207], names[999]) == ("tench", "goldfish", "golden retriever",
                                                            "toilet tissue")


# --------------------------------------------------------------------------- what the readers refuse
class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/googlenet-pwned",))


def test_a_pth_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"conv1.weight": _Evil()}, protocol=2))
    with pytest.raises(ZF.ZooFileError, match=r"refusing to unpickle (posix|os)\.system"):
        ZF.read_arrays(str(path))
    assert not os.path.exists("/tmp/googlenet-pwned")


def test_a_pdparams_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.pdparams"
    path.write_bytes(pickle.dumps({"w": _Evil()}, protocol=4))
    with pytest.raises(ZF.ZooFileError, match="refusing to unpickle"):
        ZF.read_arrays(str(path))


def test_damaged_files_give_one_line(tmp_path):
    params = tmp_path / "cut.params"
    head = struct.pack("<QQQ", ZF.MXNET_LIST_MAGIC, 0, 1) + struct.pack("<Iii", 0xF993FAC9, 0, 2)
    params.write_bytes(head + struct.pack("<qq", 64, 3))
    with pytest.raises(ZF.ZooFileError, match="truncated"):
        ZF.read_arrays(str(params))
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(ZF.ZooFileError, match="not a zoo weight file this project reads"):
        ZF.read_arrays(str(other))


def test_keras_creation_order_from_names():
    """Keras lists layers by depth and numbers its automatic names with one counter per kind (in a
    process that built other models first, convs and batch norms count differently: here by 40);
    each batch norm follows its conv, a named layer (Inception-ResNet-v2's up-projection) comes
    after the layers listed before it, ``X_bn`` belongs to ``X``."""
    names = ["conv2d_10", "batch_normalization_50", "conv2d_12", "conv2d_11", "batch_normalization_52",
             "batch_normalization_51", "block35_1_conv", "conv2d_13", "batch_normalization_53", "conv_7b",
             "conv_7b_bn", "predictions"]
    got = [names[i] for i in ZF.keras_creation_order(names)]
    assert got == ["conv2d_10", "batch_normalization_50", "conv2d_11", "batch_normalization_51", "conv2d_12",
                   "batch_normalization_52", "block35_1_conv", "conv2d_13", "batch_normalization_53", "conv_7b",
                   "conv_7b_bn", "predictions"]


def test_legacy_and_zip_pth_read_alike(tmp_path):
    """Both of ``torch.save``'s formats (zip since 1.6, the older pickle sequence, in which
    torchvision's first files were written) read without torch into the same arrays."""
    torch = pytest.importorskip("torch")
    sd = {"a.weight": torch.randn(4, 3, 3, 3), "a.bn.running_var": torch.rand(4),
          "fc.weight": torch.randn(5, 4).t(), "n": torch.tensor(3)}          # a transposed view too
    for legacy in (False, True):
        p = tmp_path / f"sd{legacy}.pth"
        torch.save(sd, p, _use_new_zipfile_serialization=not legacy)
        fmt, arrays = ZF.read_arrays(str(p))
        assert fmt == "torch" and list(arrays) == list(sd)
        for k, v in sd.items():
            assert np.array_equal(arrays[k], v.numpy()), (legacy, k)


# --------------------------------------------------------------------------- predict and convert
def _picture(path):
    from PIL import Image
    rng = np.random.default_rng(0)
    img = (rng.random((240, 320, 3)) * 255).astype(np.uint8)
    img[60:180, 100:220] = (200, 30, 30)
    Image.fromarray(img).save(path)


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory):
    """Keras's own InceptionV3 (softmax head, as users build it), random weights with batch norms
    drawn around a batch's statistics, saved by Keras in the format it publishes; and Keras's own
    top 5 of a 320x240 picture, read as its examples do (``load_img(target_size=(299, 299))``,
    ``preprocess_input``)."""
    backend_or_skip("tensorflow")
    import tensorflow as tf
    import backends.tensorflow.zoo as ZM
    tmp = tmp_path_factory.mktemp("keras")
    pic, path = str(tmp / "pic.png"), str(tmp / "inception_v3.h5")
    _picture(pic)
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.applications.InceptionV3(weights=None)
    batch = np.random.default_rng(1).integers(0, 256, (4, 299, 299, 3), dtype=np.uint8)
    ZM.randomize(model, 0, ZM.MODELS["inception_v3"].preprocess(batch))
    model.save_weights(path)
    x = tf.keras.utils.img_to_array(tf.keras.utils.load_img(pic, target_size=(299, 299)))
    probs = model.predict(tf.keras.applications.inception_v3.preprocess_input(x[None]), verbose=0)[0]
    del model
    return path, pic, probs.astype(np.float64)


def test_predict_prints_keras_own_top5(keras_file, capsys):
    """``scripts/predict.py inception_v3.h5 picture --top 5`` on the TensorFlow backend: Keras's
    own five classes, in its order, with its probabilities to the printed 3 decimals (the
    pictures' preprocessing and the logits agree to float32 rounding: the softmax moves by far
    less than 5e-4)."""
    from cli.predict import main
    path, pic, probs = keras_file
    assert main([path, pic, "--top", "5", "--backend", "tensorflow"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert "keras_inception_v3 net, 1000 classes, 3x299x299 input" in out[0]
    assert "imagenet:keras.inception_v3" in out[0]
    names = PT.imagenet_classes()
    top = np.argsort(-probs, kind="stable")[:5]
    assert out[1] == f"{pic}: " + ", ".join(f"{names[i]} {probs[i]:.3f}" for i in top)


def test_convert_a_zoo_file_and_predict_with_the_npz(keras_file, tmp_path, capsys):
    """``scripts/convert.py ZOOFILE OUT.npz``: the source told from the file, the weights
    bit-identical, and the .npz keeps the source (predict then uses its preprocessing and classes)."""
    from cli.convert import main as convert
    from cli.predict import main as predict
    from common.net import weights as W
    path, pic, _ = keras_file
    out = str(tmp_path / "iv3.npz")
    assert convert([path, out]) == 0
    text = capsys.readouterr().out
    assert "keras.inception_v3:" in text and "bit-identical to the source" in text
    assert W.meta(out)["pretrained"] == "keras.inception_v3"
    assert predict([path, pic, "--top", "3", "--backend", "tensorflow"]) == 0
    from_h5 = capsys.readouterr().out.strip().splitlines()[1]
    assert predict([out, pic, "--top", "3", "--backend", "tensorflow"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[1] == from_h5


def test_a_file_of_no_source_is_refused_in_one_line(tmp_path, capsys):
    """A state dict that fits none of torchvision's tables: one ``error:`` line naming what was tried."""
    torch = pytest.importorskip("torch")
    p = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(8, 3, 3, 3), "fc.weight": torch.zeros(10, 8)}, p)
    from cli.convert import main
    assert main([str(p), str(tmp_path / "o.npz")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"error: {p} fits none of the torch sources (torchvision.googlenet, "
                             f"torchvision.inception_v3); the first: ")
    assert not (tmp_path / "o.npz").exists()


def test_read_bytes_stay_whole(tmp_path):
    """A .pth whose tensor reaches past its storage is refused, not read out of bounds."""
    path = tmp_path / "bad.pth"
    # _rebuild_tensor_v2(<storage '0' of 4 floats>, 0, (100,), (1,), False, None), written opcode by opcode
    data = (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n("
            b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQ"
            b"K\x00Kd\x85K\x01\x85\x89NtR.")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data)
        zf.writestr("archive/data/0", np.zeros(4, np.float32).tobytes())
    with pytest.raises(ZF.ZooFileError, match="reaches past its storage"):
        ZF.read_arrays(str(path))


def test_fine_tuning_starts_from_another_frameworks_zoo_file(tmp_path, capsys):
    """Paddle's own GoogLeNet file (``paddle.save`` of its state dict) fine-tuned in PyTorch on a
    3-class image folder, body frozen, aux heads dropped: the classifier is new, every body
    tensor is the file's, bit for bit, after an epoch."""
    backend_or_skip("pytorch")
    backend_or_skip("paddle")
    import backends.paddle.zoo as ZM
    from cli.train import main as train
    from common.net import weights as W
    from tests.datagen import make_image_folder
    folder = make_image_folder(str(tmp_path / "folder"), n_classes=3)
    zoo = str(tmp_path / "googlenet.pdparams")
    ZM.save(ZM.MODELS["googlenet"].make(0), zoo)
    run = str(tmp_path / "run")
    assert train(["--backend", "pytorch", "--preset", "paddle_googlenet", "--no-aux", "--aux-init", "drop",
                  "--init-from", zoo, "--dataset", "folder", "--data-dir", folder, "--channels", "3",
                  "--resize", "64", "--freeze", "body", "--epochs", "1", "--batch-size", "8", "--no-progress",
                  "--no-tensorboard", "--run-dir", run]) == 0
    out = capsys.readouterr().out
    assert "re-initialised head.dense1 (1000 -> 3 classes)" in out and "left out the file's 10 tensors of aux1, aux2" \
        in out
    _, pre = PT.read(zoo)
    now = W.load(os.path.join(run, "checkpoint", "weights.npz"))
    body = [k for k in now if not k.startswith("head.")]
    assert len(body) == 57 and all(np.array_equal(now[k], pre[k]) for k in body)        # 57 convs, no BN
    assert now["head.dense1.weight"].shape == (3, 1024)
    assert train(["--backend", "pytorch", "--init-from", zoo, "--dataset", "folder", "--data-dir", folder,
                  "--channels", "3", "--epochs", "1", "--run-dir", str(tmp_path / "r2")]) == 1
    err = capsys.readouterr().err
    assert "holds imagenet:paddle.googlenet's paddle_googlenet weights; train that network: add --preset " \
           "paddle_googlenet" in err
