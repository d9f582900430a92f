#!/usr/bin/env python
"""Print the layer table of GoogLeNet as built by one backend (like torchinfo / paddle.summary).

    GOOGLENET_BACKEND=paddle python scripts/summary.py
    python scripts/summary.py --backend tf --preset paper --aux

Output shapes and parameter counts are read from the built framework model; the
multiply-adds are the oracle's for those shapes.  Shapes are shown channels-first
(C x H x W) for every backend; TensorFlow computes in NHWC.
"""
import argparse
import sys

import _path  # noqa: F401
from common.cli import add_backend_arg, add_model_args, build_from_options, get_backend_or_exit
from common.oracle import InputTooSmall
from common.spec import SpecError
from common.switch import BackendError, resolve


def fmt(shape):
    return " x ".join(map(str, shape))


def table(rows, title):
    lines = [title, "=" * 78, f"{'Layer (name: kind)':<34}{'Output shape (C x H x W)':>22}"
             f"{'Param #':>11}{'Mult-adds':>11}", "=" * 78]
    for r in rows:
        if r["kind"] == "stage":
            lines.append(f"{'  = stage ' + r['name']:<34}{fmt(r['out_shape']):>22}{r['params']:>11,}"
                         f"{r['macs']:>11,}")
            lines.append("-" * 78)
        else:
            lines.append(f"{r['name'] + ': ' + r['kind']:<34}{fmt(r['out_shape']):>22}"
                         f"{r['params']:>11,}{r['macs']:>11,}")
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_backend_arg(p)
    p.add_argument("--input-size", type=int, help="square input size (the preset's by default)")
    add_model_args(p)
    args = p.parse_args(argv)
    try:
        name = resolve(args.backend)
    except BackendError as e:
        sys.exit(f"error: {e}")
    bk = get_backend_or_exit(name)
    model = dict(preset=args.preset, **{k: v for k, v in dict(
        aux_logits=args.aux_logits, norm=args.norm, branch3_kernel=args.branch3_kernel,
        dropout=args.dropout, input_size=args.input_size).items() if v is not None})
    try:
        net = build_from_options(bk, model, seed=None)
    except (SpecError, InputTooSmall) as e:
        sys.exit(f"error: {e}")
    spec = net.spec
    rows = bk.layer_table(net)
    title = (f"GoogLeNet '{args.preset}' on {name} {bk.framework_version()} ({bk.device()}), input "
             f"{spec.in_channels} x {net.input_size} x {net.input_size}")
    lines = table(rows, title)
    main_params = sum(r["params"] for r in rows if r["kind"] == "stage")
    aux_params = sum(r["params"] for r in rows if r["kind"] == "aux")
    total = bk.count_params(net)
    macs = sum(r["macs"] for r in rows if r["kind"] == "stage")
    lines += ["=" * 78,
              f"Stage outputs: " + ", ".join(f"{r['name']} {fmt(r['out_shape'])}"
                                             for r in rows if r["kind"] == "stage")]
    if aux_params:
        lines.append(f"Params without auxiliary heads: {main_params:,}; auxiliary heads: {aux_params:,}")
    lines += [f"Total params: {total:,}", f"Trainable params: {total:,}",
              f"Mult-adds per example (forward, main network): {macs:,}", "=" * 78]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
