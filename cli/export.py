"""``scripts/export.py``: a trained model in each framework's serving format and in ONNX.

The run's framework-neutral weights load into the backend whose exporter writes the
artifact (any run, any target); every artifact is the network in evaluation mode (logits
only), NCHW input of the trained size with a dynamic batch, with its metadata (classes,
normalisation, model, source run) beside it.  ``--all OUTDIR`` writes every serving format
and one ONNX file per backend, each backend in its own process (frameworks never share
one), then runs the four ONNX files in ONNX Runtime side by side.  Formats, files and
workarounds: docs/export.md.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time

import numpy as np

from common.train import checkpoint
from common.inputs import data as D
from common.serve import export as X, quantize as Q
from common.net import weights as W
from common.net.spec import SpecError
from backends.config import BACKENDS, FORMATS, FRAMEWORK_MODULE, INT8, format_of, is_installed, resolve

from .errors import UserError, guard
from .main import command
from .options import ArgumentParser, build_from_options, get_backend, spec_of

MARK = "EXPORT-RESULT "
#: an artifact whose logits differ from the eager model's by more than this (relative to
#: max(1, max |logit|)) is reported as broken; float32 reordering stays near 1e-6
CHECK_TOLERANCE = 1e-4
#: an int8 artifact whose top-1 class agrees with the eager float32 model's on fewer of the
#: held-out training images than this is reported as broken.  Not an accuracy target (the
#: measured agreement is 0.99-1.0, docs/export.md): a gross-error bound, far below what a
#: working quantization gives and far above the 1/classes of a broken graph.
INT8_MIN_AGREEMENT = 0.9


def parser():
    p = ArgumentParser(description="Export a trained model to a framework's serving format or to ONNX "
                                   "(formats: " + ", ".join(FORMATS) + "; docs/export.md).")
    p.add_argument("source", help="a run folder (its newest checkpoint) or one of its checkpoint folders")
    p.add_argument("out", nargs="?", help="the artifact to write: a file (.onnx, .pt2, .pt, .tflite) or, "
                                          "for savedmodel, paddle and mxnet, a folder")
    p.add_argument("--format", help="one of " + ", ".join(FORMATS) + " (default: from OUT's suffix)")
    p.add_argument("--backend", help="whose exporter writes the ONNX file (default: the run's backend); "
                                     "a serving format implies its framework")
    p.add_argument("--all", metavar="OUTDIR",
                   help="write every serving format and the four ONNX files (one per backend's exporter) "
                        "into OUTDIR/<backend>/, each backend in its own process; with --backend, only "
                        "that backend's")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="do not compare each artifact's logits with the eager model's")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per backend with --all")
    g = p.add_argument_group("int8 (docs/export.md#int8-inference)")
    g.add_argument("--int8", action="store_true",
                   help="write the int8 model of the format: ONNX (--format onnx-int8: ONNX Runtime's "
                        "post-training static quantization) or PyTorch's TorchScript (--format "
                        "torchscript-int8: torch.ao's); with --all, also every int8 format, each "
                        "calibrated on the run's training images")
    g.add_argument("--int8-format", choices=Q.INT8_FORMATS, default=Q.INT8_FORMATS[0],
                   help="the int8 ONNX layout: qoperator (quantized operators, uint8 activations: the "
                        "fastest in ONNX Runtime on a CPU) or qdq (Quantize/DequantizeLinear pairs, int8 "
                        "activations: what other runtimes read); default qoperator")
    g.add_argument("--calibration-size", type=int, default=Q.CALIBRATION_COUNT,
                   help=f"training images to calibrate on ({Q.CALIBRATION_COUNT}; never test images)")
    g.add_argument("--data-dir", help="the run's dataset folder, for the calibration (default: the run's own)")
    p.epilog = "formats: " + "; ".join(f"{f.name} ({f.backend or 'every backend'}): {f.what}"
                                       for f in FORMATS.values())
    return p


# --------------------------------------------------------------------------- the source
def locate_run(source: str):
    """(run folder, checkpoint folder, run record, checkpoint state) of a run folder or one
    of its checkpoint folders; UserError for anything else."""
    src = os.path.normpath(source)
    if not os.path.exists(src):
        raise UserError(f"{source} does not exist")
    if os.path.isdir(src) and os.path.exists(os.path.join(src, "weights.npz")):
        run_dir, ckpt = os.path.dirname(os.path.abspath(src)), src
    elif os.path.isdir(src):
        run_dir, ckpt = src, checkpoint.find(src)
    else:
        run_dir, ckpt = None, None
    if run_dir is None or not os.path.exists(os.path.join(run_dir, "run.json")):
        raise UserError(f"{source} is not a run folder or a run's checkpoint folder (it needs the run's "
                        f"run.json, for the model, the class names and the normalisation)")
    if ckpt is None:
        raise UserError(f"{source} has no complete checkpoint yet (no checkpoint/ with a state.json)")
    try:
        with open(os.path.join(run_dir, "run.json")) as f:
            run = json.load(f)
        model = dict(run["model"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{os.path.join(run_dir, 'run.json')} is not a readable run record ({e})") from None
    state = {}
    try:
        with open(os.path.join(ckpt, checkpoint.STATE)) as f:
            state = json.load(f)
    except (OSError, ValueError):
        pass
    model.setdefault("input_size", run.get("recipe", {}).get("resize", 96))
    run["model"] = complete_model(model, run_dir)
    return run_dir, ckpt, run, state


def complete_model(model: dict, where: str) -> dict:
    """The run's model options with the input channels and classes its table has where the
    record leaves them out (a member's own: 3 and 1000 for ``tv_googlenet``, not the book's
    1 and 10), so that the metadata and the probe batches fit the network."""
    if model.get("in_channels") is None or model.get("num_classes") is None:
        try:
            spec = spec_of(model)
        except SpecError as e:
            raise UserError(f"{os.path.join(where, 'run.json')}: its model is not a table ({e})") from None
        for key, value in (("in_channels", spec.in_channels), ("num_classes", spec.num_classes)):
            if model.get(key) is None:
                model[key] = value
    return model


def run_meta(run_dir, ckpt, run, state) -> dict:
    """The metadata every artifact of this run's checkpoint shares (:func:`common.serve.export.base_meta`)."""
    dataset = run.get("dataset") or {"name": "fashion-mnist", "classes": list(D.CLASSES), "normalize": False}
    classes = dataset.get("classes") or (list(D.CLASSES) if dataset.get("name", "fashion-mnist") == "fashion-mnist"
                                         else None)
    try:
        return X.base_meta(run["model"], classes, dataset, X.source_of(run_dir, ckpt, run, state))
    except X.ExportError as e:
        raise UserError(f"{run_dir}: {e}") from None


def load_net(bk, run, ckpt):
    """The run's network on backend ``bk`` with the checkpoint's weights, evaluation mode."""
    net = build_from_options(bk, run["model"], seed=None)
    path = os.path.join(ckpt, "weights.npz")
    try:
        bk.set_weights(net, W.load(path))
    except W.WeightsError as e:
        raise UserError(f"{path} does not fit the run's {run['model'].get('preset')} network: {e}") from None
    return net


# --------------------------------------------------------------------------- one artifact
def check_out(out: str, fmt: str):
    """Refuse an output path the format cannot take: a folder for a file format, a file for
    a folder format, or a folder that holds anything but an earlier export."""
    if FORMATS[fmt].layout == "file":
        if os.path.isdir(out):
            raise UserError(f"{out} is a folder; the {fmt} format is one file (give a file name)")
    elif os.path.isfile(out):
        raise UserError(f"{out} is a file; the {fmt} format is a folder")
    elif os.path.isdir(out) and os.listdir(out) and not os.path.exists(os.path.join(out, X.META_FILE)):
        raise UserError(f"{out} exists and is not an earlier export (no {X.META_FILE}); give a new "
                        f"folder name")


def _remove(path):
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


def calibration_for(run: dict, data_dir=None, count: int = Q.CALIBRATION_COUNT) -> Q.Calibration:
    """The int8 calibration of a run: ``count`` of its **training** images (read from the
    run's dataset at its input size, normalised as the run was; only ``ds.train`` is passed
    on)."""
    from .options import load_dataset
    if count < 1:
        raise UserError(f"--calibration-size must be at least 1, not {count}")
    options = run.get("data") or {"dataset": (run.get("dataset") or {}).get("name", "fashion-mnist")}
    where = data_dir or run.get("data_dir")
    size = run["model"]["input_size"]
    try:
        ds = load_dataset(dict(options, sample=False), where, size)
    except Exception as e:
        raise UserError(f"the int8 calibration needs the run's training images ({options.get('dataset')} in "
                        f"{where or 'its default folder'}): {e}. Pass --data-dir DIR") from None
    recorded = run.get("dataset") or {}
    norm = dict(mean=recorded["mean"], std=recorded["std"]) if recorded.get("normalize") else {}
    return Q.calibration_from_train(ds.train, count, what=f"{options.get('dataset')} in {where}", **norm)


def export_int8(bk, net, out: str, base: dict, calibration: Q.Calibration, layout: str = Q.INT8_FORMATS[0]) -> dict:
    """The backend's ONNX file, quantized to int8 in ``layout`` (``common/serve/quantize.py``),
    with its metadata (the ONNX file's, format ``onnx-int8``, and how it was quantized)."""
    with tempfile.TemporaryDirectory() as tmp:
        float_path = os.path.join(tmp, "model.onnx")
        meta = bk.export.export_onnx(net, float_path, base)
        settings = Q.quantize(float_path, out, calibration.batches, format=layout)
    onnx = X.require("onnx", "int8 quantization")
    meta = dict(meta, format=X.ONNX_INT8.name, artifact=os.path.basename(out),
                exporter=meta["exporter"] + "; int8: " + settings["method"],
                quantization=dict(settings, calibration=calibration.describe))
    model = onnx.load(out)
    onnx.save(X.embed_meta(model, meta), out)
    return X.write_meta(out, meta)


def _write(bk, net, fmt, out, base, calibration, layout):
    """The artifact written by the backend's exporter (ONNX's int8: ONNX Runtime's quantizer on it)."""
    if fmt == X.ONNX_INT8.name:
        return export_int8(bk, net, out, base, calibration, layout)
    if fmt == "onnx":
        return bk.export.export_onnx(net, out, base)
    return bk.export.export(net, out, fmt, base, calibration=calibration)   # used by a card's own int8 format


def export_one(bk, net, fmt: str, out: str, base: dict, check: bool = True, log=print,
               calibration: Q.Calibration = None, layout: str = Q.INT8_FORMATS[0]) -> dict:
    """Write one artifact with backend ``bk``'s exporter; check it against the eager model
    with the serving runtime; the result (path, seconds, max |diff|).  An int8 format
    (``onnx-int8``, ``torchscript-int8``) needs ``calibration`` (:func:`calibration_for`)."""
    int8 = bool(FORMATS[fmt].int8_of)
    check_out(out, fmt)
    if FORMATS[fmt].layout == "folder":
        _remove(out)                                     # an earlier export of it (check_out)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    t0 = time.perf_counter()
    try:
        meta = _write(bk, net, fmt, out, base, calibration, layout)
    except Exception:
        for p in (out, X.meta_path(out)):               # nothing half-written stays behind
            _remove(p)
        raise
    res = dict(backend=bk.NAME, format=fmt, path=os.path.abspath(out), seconds=round(time.perf_counter() - t0, 2),
               exporter=meta["exporter"], bytes=_size(out))
    line = f"wrote {out} ({fmt}, {meta['exporter']}) in {res['seconds']:.1f} s"
    if check and int8:
        res.update(check_int8(bk, net, out, fmt, calibration))
        line += (f"; top-1 vs eager float32 {bk.NAME} on {res['examples']} {res['checked_on']}: "
                 f"{100 * res['top1_agreement']:.1f} % agree, max |diff| {res['max_diff']:.2f} "
                 f"(max |logit| {res['max_logit']:.1f})")
    elif check:
        res.update(check_artifact(bk, net, out, meta))
        line += f"; logits vs eager {bk.NAME}: max |diff| {res['max_diff']:.1e} (max |logit| {res['max_logit']:.1f})"
    log(line, flush=True)
    if check and int8 and not res["ok"]:
        raise UserError(f"{out}: its top-1 class agrees with the float32 model's on only "
                        f"{100 * res['top1_agreement']:.1f} % of {res['examples']} {res['checked_on']} (less than "
                        f"{100 * INT8_MIN_AGREEMENT:.0f} %): the quantization got the network wrong")
    if check and not res["ok"]:
        raise UserError(f"{out}: its logits differ from the eager model's by {res['max_diff']:.2e}, more than "
                        f"{CHECK_TOLERANCE:g} x max(1, max |logit|): the exporter got the network wrong")
    return res


def check_artifact(bk, net, path, meta) -> dict:
    """Run the artifact with its serving runtime on a probe batch (and batch 1): max |diff|
    against the eager model."""
    c, s = meta["input"]["shape"][1], meta["input"]["shape"][2]
    batch = X.probe_batch(c, s)
    ref = bk.forward(net, batch)
    run = X.onnx_predictor(path) if meta["format"] in X.ONNX_FORMATS else bk.export.predictor(path, meta["format"])
    diff = max(float(np.abs(run(batch) - ref).max()), float(np.abs(run(batch[:1]) - ref[:1]).max()))
    scale = float(np.abs(ref).max())
    return dict(max_diff=diff, max_logit=scale, ok=bool(diff <= CHECK_TOLERANCE * max(1.0, scale)))


def check_int8(bk, net, path, fmt, calibration: Q.Calibration) -> dict:
    """The int8 artifact in its runtime against the eager float32 model on the training
    images held out of the calibration (the calibration images if none are left): top-1
    agreement and max |diff|."""
    held = calibration.held_out
    checked_on = "held-out training images" if len(held) else "calibration images (no training image was left)"
    batch = held if len(held) else np.concatenate(calibration.batches)
    run = X.onnx_predictor(path) if fmt in X.ONNX_FORMATS else bk.export.predictor(path, fmt)
    ref = np.concatenate([bk.forward(net, batch[i:i + 64]) for i in range(0, len(batch), 64)])
    got = np.concatenate([run(batch[i:i + 64]) for i in range(0, len(batch), 64)])
    a = Q.agreement(ref, got)
    return dict(a, checked_on=checked_on, max_logit=float(np.abs(ref).max()),
                ok=bool(a["top1_agreement"] >= INT8_MIN_AGREEMENT))


def _size(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    return os.path.getsize(path)


# --------------------------------------------------------------------------- --all
def export_backend(args, name, run_dir, ckpt, run, state):
    """Every format of one backend (its serving formats, then ONNX) into OUTDIR/<backend>/."""
    bk = get_backend(name)
    base = run_meta(run_dir, ckpt, run, state)
    net = load_net(bk, run, ckpt)
    folder = os.path.join(args.all, name)
    os.makedirs(folder, exist_ok=True)
    results, failed = [], []
    calibration = calibration_for(run, args.data_dir, args.calibration_size) if args.int8 else None
    for fmt in bk.export.FORMATS + ("onnx",) + (bk.CARD.int8_names + (X.ONNX_INT8.name,) if args.int8 else ()):
        out = os.path.join(folder, FORMATS[fmt].default_name)
        try:
            results.append(export_one(bk, net, fmt, out, base, args.check, calibration=calibration,
                                      layout=args.int8_format))
        except Exception as e:                           # the other formats still get written
            msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            print(f"FAILED {out} ({fmt}): {msg}", flush=True)
            results.append(dict(backend=name, format=fmt, path=os.path.abspath(out), error=msg))
            failed.append(fmt)
    print(MARK + json.dumps(dict(backend=name, framework_version=bk.framework_version(), results=results)),
          flush=True)
    if failed:
        raise UserError(f"{name}: {', '.join(failed)} could not be exported (see above)")


def export_all(args, run_dir, ckpt, run, state):
    """Each backend's exporter in its own process, then the ONNX files side by side."""
    os.makedirs(args.all, exist_ok=True)
    summary = dict(source=os.path.abspath(args.source), checkpoint=os.path.abspath(ckpt), backends={})
    for name in BACKENDS:
        if not is_installed(name):
            summary["backends"][name] = dict(status="skipped", reason=f"{FRAMEWORK_MODULE[name]} is not installed")
            print(f"{name}: skipped ({FRAMEWORK_MODULE[name]} is not installed)", flush=True)
            continue
        print(f"{name}: exporting in its own process ...", flush=True)
        cmd = command("export") + [args.source, "--all", args.all, "--backend", name]
        cmd += [] if args.check else ["--no-check"]
        cmd += ["--int8", "--calibration-size", str(args.calibration_size),
                "--int8-format", args.int8_format] if args.int8 else []
        cmd += ["--data-dir", args.data_dir] if args.data_dir else []
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            summary["backends"][name] = dict(status="failed", error=f"timed out after {args.timeout:.0f} s")
            print(f"  FAILED: timed out after {args.timeout:.0f} s", flush=True)
            continue
        result = None
        for line in p.stdout.splitlines():
            if line.startswith(MARK):
                result = json.loads(line[len(MARK):])
            elif line.startswith(("wrote ", "FAILED ")):
                print("  " + line, flush=True)
        if result is None:
            err = [l for l in p.stderr.strip().splitlines() if l.strip()]
            summary["backends"][name] = dict(status="failed", error=err[-1] if err else f"exit code {p.returncode}")
            print(f"  FAILED: {summary['backends'][name]['error']}", flush=True)
            continue
        result["status"] = "ok" if p.returncode == 0 else "failed"
        summary["backends"][name] = result
    onnx_files = {name: r["path"] for name, b in summary["backends"].items() for r in b.get("results", [])
                  if r.get("format") == "onnx" and "error" not in r}
    if len(onnx_files) > 1:
        summary["onnx_agreement"] = compare_onnx(onnx_files, run["model"])
    with open(os.path.join(args.all, "export.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"summary: {os.path.join(args.all, 'export.json')}")
    bad = [n for n, b in summary["backends"].items() if b["status"] == "failed"]
    if bad:
        raise UserError(f"the export failed for {', '.join(bad)} (see above; the other artifacts are written)")


def compare_onnx(files: dict, model: dict) -> dict:
    """The ONNX files (backend -> path) in ONNX Runtime on one probe batch: the largest
    pairwise max |diff| of their logits."""
    c, s = int(model.get("in_channels") or 1), int(model["input_size"])
    batch = X.probe_batch(c, s)
    logits = {name: X.onnx_predictor(path)(batch) for name, path in files.items()}
    names = sorted(logits)
    pairs = {f"{a} vs {b}": float(np.abs(logits[a] - logits[b]).max())
             for i, a in enumerate(names) for b in names[i + 1:]}
    worst, scale = max(pairs.values()), max(float(np.abs(v).max()) for v in logits.values())
    print(f"the {len(names)} ONNX files in ONNX Runtime ({', '.join(names)}): largest pairwise max |diff| "
          f"of the logits {worst:.1e} (max |logit| {scale:.1f})")
    return dict(pairs=pairs, max_diff=worst, max_logit=scale)


# --------------------------------------------------------------------------- main
def int8_format(fmt: str) -> str:
    """``--int8``: a float32 format becomes its int8 sibling (``onnx`` -> ``onnx-int8``,
    ``torchscript`` -> ``torchscript-int8``); a format without one is refused."""
    if fmt in INT8.values():
        return fmt
    if fmt not in INT8:
        raise UserError(f"--int8 quantizes {' or '.join(INT8)} models; it cannot make a {fmt} artifact int8 "
                        f"(drop --int8, or write a .onnx file)")
    return INT8[fmt]


@guard
def main(argv=None):
    args = parser().parse_intermixed_args(argv)      # OUT may follow --format
    run_dir, ckpt, run, state = locate_run(args.source)
    if args.all:
        if args.out or args.format:
            raise UserError("--all writes every format into OUTDIR: give no OUT and no --format with it")
        if args.backend:
            return export_backend(args, resolve(args.backend), run_dir, ckpt, run, state) or 0
        return export_all(args, run_dir, ckpt, run, state) or 0
    if not args.out:
        raise UserError("give the artifact to write (OUT), or --all OUTDIR")
    if args.format:
        try:
            fmt = format_of(args.format).name
        except X.ExportError as e:
            raise UserError(str(e)) from None
    else:
        fmt = X.format_from_path(args.out)
        if fmt is None:
            raise UserError(f"cannot tell the format from {args.out!r}; name it .onnx, .pt2, .pt or .tflite, "
                            f"or pass --format ({', '.join(FORMATS)})")
    fmt = int8_format(fmt) if args.int8 else fmt
    owner = FORMATS[fmt].backend
    if owner and args.backend and resolve(args.backend) != owner:
        raise UserError(f"the {fmt} format is {owner}'s; drop --backend {args.backend} (or export ONNX with it)")
    name = owner or (resolve(args.backend) if args.backend else run.get("backend") or resolve(None))
    check_out(args.out, fmt)                          # before the framework loads
    bk = get_backend(name)
    calibration = calibration_for(run, args.data_dir, args.calibration_size) if FORMATS[fmt].int8_of else None
    net = load_net(bk, run, ckpt)
    export_one(bk, net, fmt, args.out, run_meta(run_dir, ckpt, run, state), args.check, calibration=calibration,
               layout=args.int8_format)
    return 0
