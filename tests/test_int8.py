"""int8 inference (``scripts/export.py --int8`` / ``--format onnx-int8``; docs/export.md#int8-inference).

On a model trained to recognise generated colour pictures (``tests/test_export.py``'s
pictures and recipe: the book's net at 16x16, normalised inputs, 3 classes, Adam; with label
smoothing 0.1, which keeps the logits O(1-5) with margins of 2-4 as a real trained net's,
where without it one class was told apart by margins of 0.27 among logits of 800, a model
no 8-bit format can represent; 100 % test accuracy):

* the int8 file's top-1 class agrees with the float32 ONNX file's on the held-out (test)
  pictures wherever the float32 margin leaves room for the quantization error measured on
  the calibration images (the bound is derived in
  ``test_int8_agrees_with_float32_on_held_out_pictures``);
* every convolution runs as ``QLinearConv`` in a plain ONNX Runtime session (the graph fix in
  ``common/serve/quantize.py``);
* the calibration reads only training images: the test split is made to raise when touched,
  and the calibration batches are the training rows the documented rule picks, prepared as
  the Loader prepares them;
* ``predict.py`` and ``evaluate.py`` run the int8 file; the mistakes are one ``error:`` line.
"""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from common.inputs import data as D
from common.serve import export as X, quantize as Q
from backends.config import is_installed, format_of
from tests.test_export import ROOT, colour_pictures, only_error_line, predicted

NEEDS = ("onnx", "onnxruntime")


def _ready():
    if not is_installed("pytorch") or not all(importlib.util.find_spec(m) for m in NEEDS):
        pytest.skip("needs torch, onnx and onnxruntime")


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory):
    """The colour model (module docstring), trained with PyTorch."""
    _ready()
    tmp = tmp_path_factory.mktemp("int8")
    for part, n, seed in (("train", 20, 0), ("test", 4, 1)):
        colour_pictures(str(tmp / "data" / part), n, seed, by_class=True)
    run = str(tmp / "run")
    env = dict(os.environ, GOOGLENET_CACHE=str(tmp / "cache"), OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "train.py"), "--backend", "pytorch",
                        "--dataset", "folder", "--data-dir", str(tmp / "data"), "--resize", "16",
                        "--batch-size", "10", "--epochs", "6", "--optimizer", "adam", "--lr", "0.001",
                        "--label-smoothing", "0.1", "--run-dir", run, "--no-progress", "--no-tensorboard"],
                       capture_output=True, text=True, timeout=1800, env=env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    with open(os.path.join(run, "run.json")) as f:
        assert json.load(f)["test_acc"] == 1.0
    return dict(run=run, pictures=colour_pictures(str(tmp / "new"), 2, seed=7), tmp=tmp)


@pytest.fixture(scope="module")
def int8(colour_run):
    """The colour run exported with PyTorch's exporter: float32 ONNX, int8 ONNX (the default
    layout, QOperator) and int8 ONNX in the QDQ layout."""
    from cli.export import main as export
    tmp = colour_run["tmp"]
    paths = dict(float=str(tmp / "m.onnx"), int8=str(tmp / "m.int8.onnx"), qdq=str(tmp / "m.qdq.int8.onnx"))
    assert export([colour_run["run"], paths["qdq"], "--backend", "pytorch", "--int8-format", "qdq"]) == 0
    assert export([colour_run["run"], paths["float"], "--backend", "pytorch"]) == 0
    assert export([colour_run["run"], paths["float"], "--backend", "pytorch", "--int8"]) == 0   # .onnx + --int8
    os.replace(paths["float"], paths["int8"])            # ... wrote the int8 model there; keep it aside
    os.replace(paths["float"] + ".json", paths["int8"] + ".json")
    assert export([colour_run["run"], paths["float"], "--backend", "pytorch"]) == 0
    with open(os.path.join(colour_run["run"], "run.json")) as f:
        run = json.load(f)
    from cli.options import load_dataset
    ds = load_dataset(run["data"], run["data_dir"], run["model"]["input_size"])
    return dict(colour_run, paths=paths, run_record=run, ds=ds)


def _logits(path, x):
    return X.onnx_predictor(path)(x)


def _keeps_top1(int8, float_logits, int8_logits):
    """Derivation of the agreement required.  The int8 model's logits differ from float32's
    by a quantization error e (per logit).  The top-1 class can change only if the float32
    margin m (top logit minus the runner-up) is at most |e_top| + |e_runner-up| <= 2 max|e|.
    The calibration fixes every activation's range on the calibration (training) images, so
    the error there, d = max|e| over them, measures the model's quantization error; held-out
    pictures of the same kind may exceed the calibrated ranges (clipping), so allow twice it.
    Hence: every held-out picture with m > 2 * 2d keeps its class, and the test requires
    that this covers most pictures (it would say nothing if d swamped the margins)."""
    ds, rec = int8["ds"], int8["run_record"]["dataset"]
    norm = dict(mean=rec["mean"], std=rec["std"])
    cal = Q.calibration_from_train(ds.train, Q.CALIBRATION_COUNT, **norm)
    xc = np.concatenate(cal.batches)
    d = float(np.abs(int8_logits(xc) - float_logits(xc)).max())
    xt = np.concatenate([x for x, _ in D.Loader(ds.test, 64, prefetch=0, **norm).epoch(0)])
    f, q = float_logits(xt), int8_logits(xt)
    top2 = np.sort(f, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    safe = margin > 4 * d
    assert safe.mean() >= 0.75, (d, margin)               # the bound covers most pictures
    assert (f.argmax(1) == q.argmax(1))[safe].all(), (d, margin, f, q)
    assert (q.argmax(1) == ds.test.labels).mean() == 1.0   # and the trained model's answers stay right
    assert 0 < d < 0.1 * float(np.abs(f).max())           # quantized (not float), and close


@pytest.mark.parametrize("layout", ["int8", "qdq"])
def test_int8_agrees_with_float32_on_held_out_pictures(int8, layout):
    """ONNX Runtime's int8 file (either layout) against the float32 ONNX file (:func:`_keeps_top1`)."""
    paths = int8["paths"]
    _keeps_top1(int8, lambda x: _logits(paths["float"], x), lambda x: _logits(paths[layout], x))


@pytest.fixture(scope="module")
def torch_int8(int8):
    """The colour run as PyTorch's own int8 TorchScript (torch.ao), ``--format torchscript --int8``."""
    from cli.export import main as export
    path = str(int8["tmp"] / "m.int8.pt")
    assert export([int8["run"], str(int8["tmp"] / "m.pt"), "--int8"]) == 0      # .pt + --int8
    os.replace(str(int8["tmp"] / "m.pt"), path)
    os.replace(str(int8["tmp"] / "m.pt") + ".json", path + ".json")
    return dict(int8, torch_int8=path)


def test_torch_int8_agrees_with_float32_on_held_out_pictures(torch_int8):
    """torch.ao's int8 TorchScript against the float32 model (the ONNX file: the same function
    as the eager model within 1e-4, checked at export), by the same derivation."""
    from backends import get_backend
    run = get_backend("pytorch").export.predictor(torch_int8["torch_int8"], "torchscript-int8")
    _keeps_top1(torch_int8, lambda x: _logits(torch_int8["paths"]["float"], x), run)


def test_every_convolution_runs_in_torch_int8(torch_int8):
    """The frozen TorchScript graph: every convolution of the float32 model is a quantized
    (int8) convolution, none is a float one."""
    import onnx
    import torch
    n_conv = sum(n.op_type == "Conv" for n in onnx.load(torch_int8["paths"]["float"]).graph.node)
    kinds = [n.kind() for n in torch.jit.load(torch_int8["torch_int8"]).graph.nodes()]
    quantized = [k for k in kinds if k.startswith("quantized::conv2d")]
    assert len(quantized) == n_conv, kinds
    assert not [k for k in kinds if k in ("aten::conv2d", "aten::_convolution")], kinds


def test_torch_int8_metadata_predict_and_evaluate(torch_int8, capsys):
    from cli.evaluate import main as evaluate
    from cli.predict import main as predict
    meta = X.read_meta(torch_int8["torch_int8"])
    assert meta["format"] == "torchscript-int8" and meta["backend"] == "pytorch"
    qz = meta["quantization"]
    assert qz["method"].startswith("torch.ao.quantization.quantize_fx") and qz["weights"] == "int8"
    assert qz["calibration"]["split"] == "train"
    assert X.format_from_path("a/model.int8.pt") == "torchscript-int8" and X.format_from_path("m.pt") == "torchscript"
    pics = torch_int8["pictures"]
    assert predict([torch_int8["torch_int8"], *[p for p, _ in pics]]) == 0
    out = capsys.readouterr().out
    assert "torch.jit.load (torchscript-int8)" in out and predicted(out) == {p: n for p, n in pics}
    assert evaluate([torch_int8["torch_int8"]]) == 0
    assert "test acc 1.0000 (12 examples; torchscript-int8" in capsys.readouterr().out


@pytest.mark.parametrize("layout", ["int8", "qdq"])
def test_every_convolution_runs_in_int8(int8, layout, tmp_path):
    """ONNX Runtime's optimised graph of the int8 file (either layout): every Conv is a QLinearConv."""
    import onnx
    import onnxruntime as ort
    n_conv = sum(n.op_type == "Conv" for n in onnx.load(int8["paths"]["float"]).graph.node)
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(int8["paths"][layout], opts, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node]
    assert ops.count("QLinearConv") == n_conv and "Conv" not in ops, ops


def test_the_metadata_says_how_it_was_quantized(int8):
    meta = X.read_meta(int8["paths"]["int8"])
    assert meta["format"] == "onnx-int8" and meta["backend"] == "pytorch"
    qz = meta["quantization"]
    assert qz["format"] == "QOperator" and qz["activations"] == "uint8" and qz["weights"] == "int8"
    assert qz["per_channel"] and qz["reduce_range"] == Q.needs_reduce_range()
    qdq = X.read_meta(int8["paths"]["qdq"])["quantization"]
    assert qdq["format"] == "QDQ" and qdq["activations"] == "int8" and qdq["dedicated_qdq_pairs"]
    cal = qz["calibration"]
    assert cal["split"] == "train" and cal["examples"] == len(int8["ds"].train) == cal["training_examples"]
    import onnx
    props = {p.key: p.value for p in onnx.load(int8["paths"]["int8"]).metadata_props}
    assert json.loads(props["googlenet"])["quantization"] == qz          # it travels inside the file too
    assert X.format_from_path("a/model.int8.onnx") == "onnx-int8" and X.format_from_path("m.onnx") == "onnx"
    assert format_of("int8").name == "onnx-int8"


def test_predict_and_evaluate_run_the_int8_file(int8, capsys):
    from cli.evaluate import main as evaluate
    from cli.predict import main as predict
    pics = int8["pictures"]
    assert predict([int8["paths"]["int8"], *[p for p, _ in pics]]) == 0
    out = capsys.readouterr().out
    assert "ONNX Runtime (pytorch's exporter, int8)" in out and predicted(out) == {p: n for p, n in pics}
    assert evaluate([int8["paths"]["int8"]]) == 0
    out = capsys.readouterr().out
    assert "test acc 1.0000 (12 examples; onnx-int8" in out, out


def test_calibration_reads_only_training_images(int8, monkeypatch, tmp_path, capsys):
    """By construction: the export gets a dataset whose test split raises when touched, and
    still writes and checks the int8 file; and the calibration batches are exactly the
    training rows of the documented rule, prepared as the Loader prepares them."""
    import cli.options
    from cli.export import main as export
    real = cli.options.load_dataset

    class Untouchable:
        def __getattr__(self, name):
            raise AssertionError(f"the int8 export read the test split ({name})")

        def __len__(self):
            raise AssertionError("the int8 export read the test split (len)")

    def no_test_split(*a, **k):
        ds = real(*a, **k)
        ds.test = Untouchable()
        return ds
    monkeypatch.setattr(cli.options, "load_dataset", no_test_split)
    out = str(tmp_path / "again.int8.onnx")
    assert export([int8["run"], out, "--backend", "pytorch", "--calibration-size", "20"]) == 0
    assert "agree" in capsys.readouterr().out                 # checked, on held-out training images
    assert X.read_meta(out)["quantization"]["calibration"]["held_out_for_the_check"] == 40
    train, rec = int8["ds"].train, int8["run_record"]["dataset"]
    idx = Q.calibration_indices(len(train), 20, 0)
    assert len(idx) == 20 and list(idx) == sorted(np.random.default_rng(0).choice(len(train), 20, replace=False))
    got = np.concatenate(Q.calibration_batches(train, 20, mean=rec["mean"], std=rec["std"]))
    mean, std = (np.float32(rec[k]).reshape(1, -1, 1, 1) for k in ("mean", "std"))
    want = (np.asarray(train.images)[idx].astype(np.float32) / np.float32(255) - mean) / std
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_reduce_range_only_without_vnni():
    """ONNX Runtime's advice: 7-bit weights on x86 without VNNI (VPMADDUBSW saturates)."""
    assert Q.needs_reduce_range({"avx2", "fma"}) is True
    assert Q.needs_reduce_range({"avx2", "avx512f", "avx512_vnni"}) is False
    assert Q.needs_reduce_range({"avx2", "avx_vnni"}) is False
    assert Q.needs_reduce_range({"neon", "asimd"}) is False


def test_int8_mistakes_are_one_error_line(int8, tmp_path, capsys):
    from cli.export import main as export
    assert export([int8["run"], str(tmp_path / "m.pt2"), "--int8"]) == 1
    assert "quantizes onnx or torchscript models" in only_error_line(capsys.readouterr().err)
    assert export([int8["run"], str(tmp_path / "m.int8.onnx"), "--data-dir", str(tmp_path / "nowhere")]) == 1
    assert "needs the run's training images" in only_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("layout", Q.INT8_FORMATS)
def test_a_minus_infinity_pad_and_the_classifier_stay_float32(tmp_path, layout):
    """tf2onnx writes a ceil-mode max pool as Pad(value=-inf) + MaxPool, and mxnet.onnx leaves
    nodes unnamed: a hand-made graph with both (conv, relu, -inf pad, pool, global pool,
    dense) quantizes with the pad and the dense layer in float32, and its logits stay within
    the 8-bit rounding of the float32 ones (each int8 activation is within half a step,
    range / 255 / 2, of its float value: a few per cent of the logits' scale after three
    quantized tensors; 10 % allows it)."""
    _ready()
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)
    d = rng.normal(0, 0.3, (8, 5)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.zeros(8, np.float32), "b"),
             numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64), "pads"),
             numpy_helper.from_array(np.array(-np.inf, np.float32), "minus_inf"),
             numpy_helper.from_array(d, "d"), numpy_helper.from_array(np.zeros(5, np.float32), "db")]
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),                                  # unnamed, as mxnet.onnx's
             helper.make_node("Pad", ["r", "pads", "minus_inf"], ["p"], name="pad"),
             helper.make_node("MaxPool", ["p"], ["m"], kernel_shape=[3, 3], strides=[2, 2], name="pool"),
             helper.make_node("GlobalAveragePool", ["m"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "d", "db"], ["logits"], name="dense")]
    x_in = helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 3, 12, 12])
    graph = helper.make_graph(nodes, "g", [x_in],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    src, out = str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx")
    onnx.save(model, src)
    batches = [rng.random((8, 3, 12, 12), dtype=np.float32) for _ in range(4)]
    settings = Q.quantize(src, out, batches, format=layout)
    assert {"pad", "dense"} <= set(settings["kept_float32"])
    ops = [n.op_type for n in onnx.load(out).graph.node]
    assert "QuantizeLinear" in ops                                # the input is quantized ...
    assert ops.count("Conv") == 1 if layout == "qdq" else ops.count("QLinearConv") == 1   # ... and the conv
    assert "Pad" in ops and "Gemm" in ops                         # the two kept in float32
    x = rng.random((16, 3, 12, 12), dtype=np.float32)
    f, q = _logits(src, x), _logits(out, x)
    assert np.isfinite(q).all() and np.abs(q - f).max() <= 0.1 * np.abs(f).max(), (f, q)
