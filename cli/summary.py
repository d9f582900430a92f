"""``scripts/summary.py``: the layer table of GoogLeNet as one backend builds it."""
from __future__ import annotations

import dataclasses

from backends.config import resolve
from common.net import oracle

from .errors import guard
from .options import ArgumentParser, add_backend_arg, add_model_args, build_from_options, get_backend


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


FAMILY_TITLES = {"googlenet": "GoogLeNet", "inception_v3": "Inception v3", "bn_inception": "BN-Inception",
                 "inception_v4": "Inception-v4", "inception_resnet_v2": "Inception-ResNet-v2",
                 "alexnet": "AlexNet", "vgg": "VGG", "nin": "NiN"}


def counts(spec, trainable: int, input_size=None):
    """(total, non-trainable) as the table's anchor counts its parameters: torchvision and
    torchinfo count trainable parameters only (batch-norm running statistics are buffers);
    Keras, Paddle and Gluon also count the batch-norm moving statistics
    (``spec.config['counts_bn_statistics']``)."""
    stats = oracle.bn_statistics(spec, input_size) if spec.config.get("counts_bn_statistics") else 0
    return trainable + stats, stats


def smallest_inputs(spec):
    """The book's exercise 2: the smallest square input the table takes, with and without its
    auxiliary heads."""
    smallest = oracle.min_input_size(spec)
    if not spec.aux:
        return f"Smallest input: {smallest} x {smallest}"
    bare = oracle.min_input_size(dataclasses.replace(spec, aux=()))
    return f"Smallest input: {smallest} x {smallest} with the auxiliary heads, {bare} x {bare} without"


def summary(bk, net, preset, title=None) -> str:
    """The whole printout for a built network (``title``: the first line instead of one naming
    the backend, e.g. for a printout that is the same on every backend)."""
    rows = bk.layer_table(net)
    cfg = net.spec.config
    family = FAMILY_TITLES.get(cfg.get("family"), "GoogLeNet")
    title = title or (f"{family} '{preset}' on {bk.NAME} {bk.framework_version()} ({bk.device()}), input "
                      f"{net.spec.in_channels} x {net.input_size} x {net.input_size}")
    lines = table(rows, title)
    main_params = sum(r["params"] for r in rows if r["kind"] == "stage")
    aux_params = sum(r["params"] for r in rows if r["kind"] == "aux")
    trainable = bk.count_params(net)
    total, stats = counts(net.spec, trainable, net.input_size)
    macs = sum(r["macs"] for r in rows if r["kind"] == "stage")
    lines += ["=" * 78, "Stage outputs: " + ", ".join(f"{r['name']} {fmt(r['out_shape'])}"
                                                       for r in rows if r["kind"] == "stage")]
    if aux_params:
        lines.append(f"Params without auxiliary heads: {main_params:,}; auxiliary heads: {aux_params:,}")
    lines += [f"Total params: {total:,}", f"Trainable params: {trainable:,}"]
    if stats:
        lines.append(f"Non-trainable params: {stats:,} (batch-norm moving statistics, counted as "
                     f"{cfg['counts_bn_statistics']} counts them)")
    lines += [f"Mult-adds per example (forward, main network): {macs:,}", smallest_inputs(net.spec)]
    if cfg.get("anchor"):
        lines.append(f"Anchor: {cfg['anchor']}")
    lines.append("=" * 78)
    return "\n".join(lines)


def parser():
    p = ArgumentParser(description="Print the layer table of GoogLeNet as built by one backend "
                                   "(like torchinfo / paddle.summary).")
    add_backend_arg(p)
    p.add_argument("--input-size", type=int, help="square input size (the preset's by default)")
    p.add_argument("--in-channels", type=int, help="input channels (the preset's by default)")
    p.add_argument("--num-classes", type=int, help="classes (the preset's by default)")
    p.add_argument("--no-top", dest="include_top", action="store_false", default=None,
                   help="without the classifier (global pool, dropout, dense): the feature extractor")
    add_model_args(p)
    return p


@guard
def main(argv=None):
    args = parser().parse_args(argv)
    name = resolve(args.backend)
    bk = get_backend(name)
    model = dict(preset=args.preset or "d2l", **{k: v for k, v in dict(
        aux_logits=args.aux_logits, norm=args.norm, branch3_kernel=args.branch3_kernel,
        dropout=args.dropout, input_size=args.input_size, in_channels=args.in_channels,
        num_classes=args.num_classes, include_top=args.include_top).items() if v is not None})
    print(summary(bk, build_from_options(bk, model, seed=None), model["preset"]))
    return 0
