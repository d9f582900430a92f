"""Run exported artifacts with their serving runtime ALONE: no module of this project.

    python -I tests/serving_check.py JOBS.json

``-I`` keeps the script's folder and the working directory off ``sys.path``.  This file
imports only the standard library, NumPy and one runtime (``torch``, ``tensorflow``,
``paddle``, ``mxnet`` or ``onnxruntime``), reads the metadata JSON beside each artifact
as plain JSON, and at the end proves that the project's code played no part: neither
``common``, ``backends`` nor ``cli`` is among the imported modules, and the repository
is not on ``sys.path``.

``JOBS.json``: ``{"repo": ROOT, "runtime": NAME, "jobs": [{"format", "path", "input",
"output"}, ...]}``; each job writes ``output`` (.npz) with the logits of the input batch
(``logits``) and of its first example alone (``logits1``: the batch is dynamic), for
every way its runtime loads it (e.g. Paddle Inference and ``paddle.jit.load``).  Prints
one JSON line ``SERVING-CHECK {...}``.
"""
import json
import os
import sys
import sysconfig
import warnings

import numpy as np

PROJECT = ("common", "backends", "cli")


def meta_of(path):
    meta = os.path.join(path, "googlenet.json") if os.path.isdir(path) else path + ".json"
    with open(meta) as f:
        return json.load(f)


def torch_loaders(fmt, path, meta):
    import torch
    if fmt == "torch-export":
        module = torch.export.load(path).module()
    else:
        module = torch.jit.load(path, map_location="cpu")

    def run(x):
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()
    return {fmt: run}


def tensorflow_loaders(fmt, path, meta):
    import tensorflow as tf
    if fmt == "savedmodel":
        loaded = tf.saved_model.load(path)
        serve = loaded.signatures[meta.get("signature", "serving_default")]
        name, out = meta["input"]["name"], meta["output"]["name"]
        return {fmt: lambda x: serve(**{name: tf.constant(x)})[out].numpy()}

    def run(x):
        it = tf.lite.Interpreter(model_path=path)
        inp = it.get_input_details()[0]
        it.resize_tensor_input(inp["index"], list(x.shape))     # dynamic batch
        it.allocate_tensors()
        it.set_tensor(inp["index"], x)
        it.invoke()
        return it.get_tensor(it.get_output_details()[0]["index"])
    return {fmt: run}


def paddle_loaders(fmt, path, meta):
    import paddle
    import paddle.inference as pi
    paddle.set_device("cpu")
    prefix = os.path.join(path, meta.get("prefix", "model"))
    config = pi.Config(prefix + ".json", prefix + ".pdiparams")
    config.disable_gpu()
    config.disable_glog_info()
    predictor = pi.create_predictor(config)

    def inference(x):
        h = predictor.get_input_handle(predictor.get_input_names()[0])
        h.reshape(list(x.shape))
        h.copy_from_cpu(x)
        predictor.run()
        return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()

    layer = paddle.jit.load(prefix)
    layer.eval()

    def jit(x):
        with paddle.no_grad():
            return layer(paddle.to_tensor(x)).numpy()
    return {"paddle.inference": inference, "paddle.jit.load": jit}


def mxnet_loaders(fmt, path, meta):
    import mxnet as mx
    mx.npx.set_np()            # the parameters were saved with NumPy shape semantics
    prefix = os.path.join(path, meta.get("prefix", "model"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        block = mx.gluon.SymbolBlock.imports(prefix + "-symbol.json", [meta["input"]["name"]],
                                             f"{prefix}-{meta.get('epoch', 0):04d}.params", ctx=mx.cpu())
    return {fmt: lambda x: block(mx.np.array(x)).asnumpy()}


def onnxruntime_loaders(fmt, path, meta):
    import onnxruntime as ort
    try:
        import onnx
        onnx.checker.check_model(onnx.load(path))
    except ImportError:
        pass
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return {fmt: lambda x: session.run(None, {name: x})[0]}


LOADERS = {"torch": torch_loaders, "tensorflow": tensorflow_loaders, "paddle": paddle_loaders,
           "mxnet": mxnet_loaders, "onnxruntime": onnxruntime_loaders}


def main(jobs_file):
    with open(jobs_file) as f:
        spec = json.load(f)
    loaders = LOADERS[spec["runtime"]]
    report = {}
    for job in spec["jobs"]:
        x = np.ascontiguousarray(np.load(job["input"]), np.float32)
        runs = loaders(job["format"], job["path"], meta_of(job["path"]))
        arrays = {}
        for how, run in runs.items():
            arrays[f"{how}/logits"] = np.asarray(run(x))
            arrays[f"{how}/logits1"] = np.asarray(run(x[:1]))
        np.savez(job["output"], **arrays)
        report[job["path"]] = sorted(runs)
    repo = os.path.realpath(spec["repo"])
    on_path = [p for p in sys.path if p and os.path.realpath(p) == repo]
    loaded = [m for m in PROJECT if m in sys.modules]
    this = os.path.realpath(__file__)            # the checker itself (also __mp_main__ under multiprocessing)
    # the interpreter's own installation is not the project, even where the virtual
    # environment lies inside the repository (make's .venv, as in CI)
    places = {sys.prefix, sys.exec_prefix, *sysconfig.get_paths().values()}
    installed = tuple(os.path.realpath(p) + os.sep for p in places)
    files = sorted({f for f in (os.path.realpath(getattr(m, "__file__", None) or "/")
                                for m in list(sys.modules.values()))
                    if f.startswith(repo + os.sep) and f != this and not f.startswith(installed)})
    print("SERVING-CHECK " + json.dumps(dict(runtime=spec["runtime"], loaded=report, project_modules=loaded,
                                             repo_on_path=on_path, repo_files=files)), flush=True)
    assert not loaded and not on_path and not files, (loaded, on_path, files)


if __name__ == "__main__":
    main(sys.argv[1])
