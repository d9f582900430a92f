"""The family's members as tables: GoogLeNet as the book, the paper, torchvision and Paddle
build it, and Inception v3 as torchvision, Keras, Paddle and Gluon build it.

``PRESETS`` lists every member (timm's model table with its ``pretrained_cfg``): the
builder, the keyword defaults that make it that member, and its metadata (``cfg``: the
anchor it reproduces, the parameter counts and multiply-adds the anchor publishes, the
way the anchor counts parameters, its preprocessing).  Where an anchor differs from the
paper, the difference is a named keyword of the builder, never a silent copy
(docs/family.md lists each).

    get_spec("tv_inception_v3")                       # torchvision's, with its aux head
    get_spec("keras_inception_v3", num_classes=10, input_size=75)
    googlenet("paper", aux_logits=False)
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Union

from .spec import (AdaptiveAvgPool, Affine, AuxHead, AvgPool, Concat, Conv, Dense, Dropout,
                   Flatten, GlobalAvgPool, GlobalMaxPool, Inception, LRN, MaxPool, Residual, Spec,
                   SpecError, Stage, _named, branch, stage, validate)

__all__ = ["PRESETS", "Preset", "get_spec", "googlenet", "inception_v3", "bn_inception", "inception_v4",
           "inception_resnet_v2", "scale_channels",
           "preset_names", "INCEPTION_TABLE"]

#: ImageNet's mean and standard deviation (torchvision's, Paddle's and Gluon's preprocessing)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: Inception's preprocessing (Keras's ``preprocess_input`` mode 'tf'): [0, 1] -> [-1, 1]
INCEPTION_MEAN, INCEPTION_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

#: The nine Inception blocks of the paper (Table 1), named as there.
INCEPTION_TABLE = (
    ("3a", 64, (96, 128), (16, 32), 32),
    ("3b", 128, (128, 192), (32, 96), 64),
    ("4a", 192, (96, 208), (16, 48), 64),
    ("4b", 160, (112, 224), (24, 64), 64),
    ("4c", 128, (128, 256), (24, 64), 64),
    ("4d", 112, (144, 288), (32, 64), 64),
    ("4e", 256, (160, 320), (32, 128), 128),
    ("5a", 256, (160, 320), (32, 128), 128),
    ("5b", 384, (192, 384), (48, 128), 128),
)


# --------------------------------------------------------------------------- GoogLeNet
_GOOGLENET = dict(in_channels=3, num_classes=1000, input_size=224, aux_logits=True, dropout=0.4,
                  dropout_aux=0.7, dropout_mode="upscale_in_train", norm="none", eps=1e-3,
                  branch3_kernel=5, bias=True, pool="same", act="conv", aux_pool="avg",
                  aux_fc_act=("relu", "relu"), transform_input=False)


def _googlenet_pools(style):
    """The four grid-reducing max pools of GoogLeNet: the paper's and the book's ``3/2 pad 1``
    (``'same'``), torchvision's ``ceil`` mode (and a 2/2 pool before 5a, ported from
    TF-slim), Paddle's unpadded floor-mode ``3/2`` (``'valid'``)."""
    if style == "same":
        return [MaxPool(3, 2, 1)] * 4
    if style == "ceil":
        return [MaxPool(3, 2, ceil=True)] * 3 + [MaxPool(2, 2, ceil=True)]
    if style == "valid":
        return [MaxPool(3, 2)] * 4
    raise SpecError(f"pool must be 'same', 'ceil' or 'valid', not {style!r}")


# Over the complexity limit on purpose: the presets' named options, each a line.
def googlenet(preset: str = "d2l", *, include_top: bool = True,  # noqa: C901
              pooling: Optional[str] = "avg", **options) -> Spec:
    """The GoogLeNet table for a preset, with keyword overrides (torchvision style).

    Args:
        preset: ``'d2l'`` (default, the book's net), ``'paper'``, ``'bn'``, ``'tv_googlenet'``
            or ``'paddle_googlenet'`` (``PRESETS``).
        in_channels: input channels (d2l: 1; the others: 3).
        num_classes: classes of the final dense layer (d2l: 10; the others: 1000).
        input_size: default square input size (d2l: 96; the others: 224).
        aux_logits: add the two auxiliary heads on 4a and 4d (d2l: False).
        dropout: dropout before the final dense layer (d2l: 0; paper, bn: 0.4; torchvision 0.2).
        dropout_aux: dropout inside the auxiliary heads (0.7).
        dropout_mode: ``'upscale_in_train'`` or Paddle's ``'downscale_in_infer'``.
        norm: ``'none'``, ``'bn'`` (batch norm after every conv) or ``'lrn'``
            (local response normalisation after the first two pools).
        eps: batch-norm epsilon (1e-3).
        branch3_kernel: kernel of the third branch's second conv, 5 or 3 (torchvision).
        bias: conv bias (defaults to ``norm != 'bn'``).
        pool: the grid-reducing max pools: ``'same'`` (3/2 pad 1), ``'ceil'`` (torchvision's
            ceil mode and 2/2 before 5a) or ``'valid'`` (Paddle's unpadded 3/2).
        act: where the ReLUs are: ``'conv'`` (after every conv) or ``'concat'`` (Paddle: only
            after each Inception block's concatenation).
        aux_pool: the aux heads' pooling: ``'avg'`` (5/3, the paper's) or ``'adaptive'``
            (torchvision's adaptive pooling to 4x4, the same at 224 and any size up).
        aux_fc_act: the activation after each aux head's first dense layer (Paddle's second
            head has none).
        transform_input: torchvision's remapping of ImageNet-normalised inputs to [-1, 1]
            (an :class:`Affine` first layer), for weights ported from TensorFlow.
        include_top: keep the classifier (global pool, dropout, dense); without it
            the network ends after 5b, pooled according to ``pooling``.
        pooling: with ``include_top=False``: ``'avg'``, ``'max'`` or ``None``
            (Keras-applications conventions); ignored with the top.
    """
    preset_ = _preset(preset, "googlenet")
    o = _options(preset_, options, include_top)
    if options.get("norm") is not None and options.get("bias") is None:
        o["bias"] = o["norm"] != "bn"
    if o["norm"] not in ("none", "bn", "lrn"):
        raise SpecError(f"norm must be 'none', 'bn' or 'lrn', not {o['norm']!r}")
    if o["branch3_kernel"] not in (3, 5):
        raise SpecError("branch3_kernel must be 3 or 5")
    if o["act"] not in ("conv", "concat"):
        raise SpecError(f"act must be 'conv' or 'concat', not {o['act']!r}")
    if o["aux_pool"] not in ("avg", "adaptive"):
        raise SpecError(f"aux_pool must be 'avg' or 'adaptive', not {o['aux_pool']!r}")
    _common_checks(o, include_top, pooling)

    bn = "bn" if o["norm"] == "bn" else None
    lrn = o["norm"] == "lrn"
    conv_act = "relu" if o["act"] == "conv" else None

    def conv(out, k, s=1, p=0):
        return Conv(out, k, s, p, bias=o["bias"], norm=bn, act=conv_act, eps=o["eps"])

    inc = {name: (f"inception{name}", Inception(c1, c2, c3, c4, o["branch3_kernel"], o["bias"], bn,
                                                o["eps"], conv_act, None if conv_act else "relu"))
           for name, c1, c2, c3, c4 in INCEPTION_TABLE}
    p1, p2, p3, p4 = _googlenet_pools(o["pool"])

    b1 = _transform(o) + [conv(64, 7, 2, 3), p1] + ([LRN()] if lrn else [])
    b2 = [conv(64, 1), conv(192, 3, 1, 1), p2] + ([LRN()] if lrn else [])
    stages = [
        stage("b1", *b1),
        stage("b2", *b2),
        stage("b3", inc["3a"], inc["3b"], p3),
        stage("b4", inc["4a"], inc["4b"], inc["4c"], inc["4d"], inc["4e"], p4),
    ]
    if include_top:
        stages.append(stage("b5", inc["5a"], inc["5b"], GlobalAvgPool(), Flatten()))
        drop = [Dropout(o["dropout"], o["dropout_mode"])] if o["dropout"] > 0 else []
        stages.append(stage("head", *drop, Dense(o["num_classes"])))
    else:
        stages.append(stage("b5", inc["5a"], inc["5b"], *_tail(pooling)))

    aux = ()
    if o["aux_logits"]:
        def head(name, tap, fc_act):
            pool = AvgPool(5, 3) if o["aux_pool"] == "avg" else AdaptiveAvgPool(4)
            layers = [pool, conv(128, 1), Flatten(), Dense(1024, act=fc_act),
                      Dropout(o["dropout_aux"], o["dropout_mode"]), Dense(o["num_classes"])]
            return AuxHead(name, tap, _named(layers))
        acts = tuple(o["aux_fc_act"])
        aux = (head("aux1", "b4.inception4a", acts[0]), head("aux2", "b4.inception4d", acts[1]))

    spec = Spec(_name(preset, options, include_top), o["in_channels"], o["input_size"],
                tuple(stages), aux,
                features=("b3.inception3b", "b4.inception4a", "b4.inception4d", "b5.inception5b"),
                cfg=_cfg(preset_, o))
    return validate(spec)


# --------------------------------------------------------------------------- Inception v3
_INCEPTION_V3 = dict(in_channels=3, num_classes=1000, input_size=299, aux_logits=True, dropout=0.5,
                     dropout_mode="upscale_in_train", eps=1e-3, bn_scale=True, count_pad=True,
                     transform_input=False)


# Over the complexity limit on purpose: the five block shapes of Inception v3, each a few lines.
def inception_v3(preset: str = "tv_inception_v3", *, include_top: bool = True,  # noqa: C901
                 pooling: Optional[str] = "avg", **options) -> Spec:
    """The Inception v3 table (Szegedy et al. 2016), layers named as torchvision names them.

    Args:
        preset: ``'tv_inception_v3'`` (``'inception_v3'``), ``'keras_inception_v3'``,
            ``'paddle_inception_v3'`` or ``'gluon_inception_v3'`` (``PRESETS``).
        in_channels, num_classes, input_size: 3, 1000, 299 (the smallest input is 75).
        aux_logits: torchvision's auxiliary head on Mixed_6e (only torchvision has one).
        dropout: before the classifier (torchvision, Gluon 0.5; Paddle 0.2; Keras none).
        dropout_mode: ``'upscale_in_train'`` or Paddle's ``'downscale_in_infer'``.
        eps: batch-norm epsilon (1e-3; Paddle 1e-5).
        bn_scale: batch norm learns a scale (Keras: ``scale=False``).
        count_pad: the 3x3/1 average pools count their padded zeros (torchvision, Paddle,
            Gluon) or not (Keras's ``'same'``).
        transform_input: torchvision's remapping of ImageNet-normalised inputs to [-1, 1].
        include_top, pooling: as for :func:`googlenet`.
    """
    preset_ = _preset(preset, "inception_v3")
    o = _options(preset_, options, include_top)
    _common_checks(o, include_top, pooling)

    def cv(out, k, s=1, p=0):
        return Conv(out, k, s, p, bias=False, norm="bn", eps=o["eps"], scale=o["bn_scale"])

    def pool_branch(out):
        return branch(("pool", AvgPool(3, 1, 1, count_pad=o["count_pad"])), ("branch_pool", cv(out, 1)))

    def a(pf):
        return Concat((branch(("branch1x1", cv(64, 1))),
                       branch(("branch5x5_1", cv(48, 1)), ("branch5x5_2", cv(64, 5, 1, 2))),
                       branch(("branch3x3dbl_1", cv(64, 1)), ("branch3x3dbl_2", cv(96, 3, 1, 1)),
                              ("branch3x3dbl_3", cv(96, 3, 1, 1))),
                       pool_branch(pf)))

    def b():
        return Concat((branch(("branch3x3", cv(384, 3, 2))),
                       branch(("branch3x3dbl_1", cv(64, 1)), ("branch3x3dbl_2", cv(96, 3, 1, 1)),
                              ("branch3x3dbl_3", cv(96, 3, 2))),
                       branch(("pool", MaxPool(3, 2)))))

    def c(c7):
        r, q = ((1, 7), (0, 3)), ((7, 1), (3, 0))          # 1x7 and 7x1, with their paddings
        return Concat((branch(("branch1x1", cv(192, 1))),
                       branch(("branch7x7_1", cv(c7, 1)), ("branch7x7_2", cv(c7, r[0], 1, r[1])),
                              ("branch7x7_3", cv(192, q[0], 1, q[1]))),
                       branch(("branch7x7dbl_1", cv(c7, 1)), ("branch7x7dbl_2", cv(c7, q[0], 1, q[1])),
                              ("branch7x7dbl_3", cv(c7, r[0], 1, r[1])),
                              ("branch7x7dbl_4", cv(c7, q[0], 1, q[1])),
                              ("branch7x7dbl_5", cv(192, r[0], 1, r[1]))),
                       pool_branch(192)))

    def d():
        return Concat((branch(("branch3x3_1", cv(192, 1)), ("branch3x3_2", cv(320, 3, 2))),
                       branch(("branch7x7x3_1", cv(192, 1)), ("branch7x7x3_2", cv(192, (1, 7), 1, (0, 3))),
                              ("branch7x7x3_3", cv(192, (7, 1), 1, (3, 0))),
                              ("branch7x7x3_4", cv(192, 3, 2))),
                       branch(("pool", MaxPool(3, 2)))))

    def split(name):          # 1x3 and 3x1 side by side: the E block's branch that splits
        return Concat((branch((f"{name}a", cv(384, (1, 3), 1, (0, 1)))),
                       branch((f"{name}b", cv(384, (3, 1), 1, (1, 0))))))

    def e():
        return Concat((branch(("branch1x1", cv(320, 1))),
                       branch(("branch3x3_1", cv(384, 1)), ("branch3x3_2", split("branch3x3_2"))),
                       branch(("branch3x3dbl_1", cv(448, 1)), ("branch3x3dbl_2", cv(384, 3, 1, 1)),
                              ("branch3x3dbl_3", split("branch3x3dbl_3"))),
                       pool_branch(192)))

    stages = [
        stage("stem", *_transform(o), ("Conv2d_1a_3x3", cv(32, 3, 2)), ("Conv2d_2a_3x3", cv(32, 3)),
              ("Conv2d_2b_3x3", cv(64, 3, 1, 1)), ("maxpool1", MaxPool(3, 2)),
              ("Conv2d_3b_1x1", cv(80, 1)), ("Conv2d_4a_3x3", cv(192, 3)), ("maxpool2", MaxPool(3, 2))),
        stage("mixed5", ("Mixed_5b", a(32)), ("Mixed_5c", a(64)), ("Mixed_5d", a(64))),
        stage("mixed6", ("Mixed_6a", b()), ("Mixed_6b", c(128)), ("Mixed_6c", c(160)),
              ("Mixed_6d", c(160)), ("Mixed_6e", c(192))),
        stage("mixed7", ("Mixed_7a", d()), ("Mixed_7b", e()), ("Mixed_7c", e())),
    ]
    if include_top:
        drop = [("dropout", Dropout(o["dropout"], o["dropout_mode"]))] if o["dropout"] > 0 else []
        stages.append(stage("head", ("avgpool", GlobalAvgPool()), ("flatten", Flatten()), *drop,
                            ("fc", Dense(o["num_classes"]))))
    elif _tail(pooling):
        stages.append(stage("pool", *_tail(pooling)))
    aux = ()
    if o["aux_logits"]:
        aux = (AuxHead("aux", "mixed6.Mixed_6e", _named([
            ("pool", AvgPool(5, 3)), ("conv0", cv(128, 1)), ("conv1", cv(768, 5)),
            ("avgpool", AdaptiveAvgPool(1)), ("flatten", Flatten()), ("fc", Dense(o["num_classes"]))])),)
    spec = Spec(_name(preset, options, include_top), o["in_channels"], o["input_size"], tuple(stages),
                aux, features=("stem.Conv2d_2b_3x3", "stem.Conv2d_4a_3x3", "mixed5.Mixed_5d",
                               "mixed6.Mixed_6e", "mixed7.Mixed_7c"), cfg=_cfg(preset_, o))
    return validate(spec)


# --------------------------------------------------------------------------- BN-Inception
_BN_INCEPTION = dict(in_channels=3, num_classes=1000, input_size=224, dropout=0.0,
                     dropout_mode="upscale_in_train", eps=1e-5, bias=True, transform_input=False,
                     aux_logits=False)

#: BN-Inception's blocks (Ioffe & Szegedy 2015, Figure 5; Cadene's layout): name, 1x1, (3x3 reduce,
#: 3x3), (double 3x3 reduce, double 3x3), pool ('avg' / 'max') and its projection; a block without
#: a 1x1 branch strides 2 in its 3x3 convs and max-pools 3/2 without projection (3c, 4e).
BN_INCEPTION_TABLE = (
    ("3a", 64, (64, 64), (64, 96), "avg", 32), ("3b", 64, (64, 96), (64, 96), "avg", 64),
    ("3c", 0, (128, 160), (64, 96), "max", 0),
    ("4a", 224, (64, 96), (96, 128), "avg", 128), ("4b", 192, (96, 128), (96, 128), "avg", 128),
    ("4c", 160, (128, 160), (128, 160), "avg", 128), ("4d", 96, (128, 192), (160, 192), "avg", 128),
    ("4e", 0, (128, 192), (192, 256), "max", 0),
    ("5a", 352, (192, 320), (160, 224), "avg", 128), ("5b", 352, (192, 320), (192, 224), "max", 128),
)


def bn_inception(preset: str = "bn_inception", *, include_top: bool = True,
                 pooling: Optional[str] = "avg", **options) -> Spec:
    """BN-Inception (Ioffe & Szegedy 2015; "Inception v2" of the BN paper): GoogLeNet with batch
    norm after every conv, the 5x5 branch as two 3x3 convs, average pools in the pool branches,
    and grid reduction by stride-2 blocks (3c, 4e) instead of separate pools.

    Built in Cadene's layout (``pretrainedmodels.bninception``, the one ImageNet weights exist
    for): the convs keep their biases (``bias=True``: 10,270,240 parameters; ``bias=False``
    drops the 10,016 biases that batch norm makes redundant), BN eps 1e-5, ceil-mode max pools.
    """
    preset_ = _preset(preset, "bn_inception")
    o = _options(preset_, options, include_top)
    _common_checks(o, include_top, pooling)

    def cv(out, k, s=1, p=0):
        return Conv(out, k, s, p, bias=o["bias"], norm="bn", eps=o["eps"])

    def block(c1, c3, d3, pool, proj):
        s = 1 if c1 else 2                   # no 1x1 branch: a grid-reducing block
        branches = [branch(("branch1x1", cv(c1, 1)))] if c1 else []
        branches += [branch(("branch3x3_reduce", cv(c3[0], 1)), ("branch3x3", cv(c3[1], 3, s, 1))),
                     branch(("double3x3_reduce", cv(d3[0], 1)), ("double3x3_1", cv(d3[1], 3, 1, 1)),
                            ("double3x3_2", cv(d3[1], 3, s, 1)))]
        if s == 2:
            branches.append(branch(("pool", MaxPool(3, 2, ceil=True))))
        else:
            p = AvgPool(3, 1, 1, count_pad=True) if pool == "avg" else MaxPool(3, 1, 1)
            branches.append(branch(("pool", p), ("pool_proj", cv(proj, 1))))
        return Concat(tuple(branches))

    inc = {n: (f"inception_{n}", block(c1, c3, d3, pool, proj)) for n, c1, c3, d3, pool, proj in BN_INCEPTION_TABLE}
    stages = [
        stage("stem", *_transform(o), ("conv1", cv(64, 7, 2, 3)), ("pool1", MaxPool(3, 2, ceil=True)),
              ("conv2_reduce", cv(64, 1)), ("conv2", cv(192, 3, 1, 1)), ("pool2", MaxPool(3, 2, ceil=True))),
        stage("i3", inc["3a"], inc["3b"], inc["3c"]),
        stage("i4", inc["4a"], inc["4b"], inc["4c"], inc["4d"], inc["4e"]),
        stage("i5", inc["5a"], inc["5b"]),
    ]
    stages += _top(o, include_top, pooling)
    spec = Spec(_name(preset, options, include_top), o["in_channels"], o["input_size"], tuple(stages),
                features=("i3.inception_3b", "i4.inception_4d", "i5.inception_5b"), cfg=_cfg(preset_, o))
    return validate(spec)


def _top(o, include_top, pooling):
    """The classifier stage (global average pool, flatten, dropout, fc), or the pooling of a
    headless net."""
    if include_top:
        drop = [("dropout", Dropout(o["dropout"], o["dropout_mode"]))] if o["dropout"] > 0 else []
        return [stage("head", ("avgpool", GlobalAvgPool()), ("flatten", Flatten()), *drop,
                      ("fc", Dense(o["num_classes"])))]
    return [stage("pool", *_tail(pooling))] if _tail(pooling) else []


# --------------------------------------------------------------------------- Inception-v4
_INCEPTION_V4 = dict(in_channels=3, num_classes=1000, input_size=299, dropout=0.0,
                     dropout_mode="upscale_in_train", eps=1e-3, bn_scale=True, count_pad=False,
                     transform_input=False, aux_logits=False)


# Over the complexity limit on purpose: the stem and the six block shapes of Inception-v4.
def inception_v4(preset: str = "inception_v4", *, include_top: bool = True,  # noqa: C901
                 pooling: Optional[str] = "avg", **options) -> Spec:
    """Inception-v4 (Szegedy et al. 2017), as Cadene's ``inceptionv4`` and timm's ``inception_v4``
    build it (42,679,816 parameters): the v3-like stem with three two-branch mixing blocks,
    4 x A (35x35), reduction A, 7 x B (17x17), reduction B, 3 x C (8x8); BN eps 1e-3, average
    pools that do not count the padding."""
    preset_ = _preset(preset, "inception_v4")
    o = _options(preset_, options, include_top)
    _common_checks(o, include_top, pooling)

    def cv(out, k, s=1, p=0):
        return Conv(out, k, s, p, bias=False, norm="bn", eps=o["eps"], scale=o["bn_scale"])

    r7, c7 = ((1, 7), (0, 3)), ((7, 1), (3, 0))            # 1x7 and 7x1 with their paddings

    def pool_proj(out):
        return branch(("pool", AvgPool(3, 1, 1, count_pad=o["count_pad"])), ("branch3", cv(out, 1)))

    def a():
        return Concat((branch(("branch0", cv(96, 1))),
                       branch(("branch1_0", cv(64, 1)), ("branch1_1", cv(96, 3, 1, 1))),
                       branch(("branch2_0", cv(64, 1)), ("branch2_1", cv(96, 3, 1, 1)),
                              ("branch2_2", cv(96, 3, 1, 1))),
                       pool_proj(96)))

    def b():
        return Concat((branch(("branch0", cv(384, 1))),
                       branch(("branch1_0", cv(192, 1)), ("branch1_1", cv(224, *r7[:1], 1, r7[1])),
                              ("branch1_2", cv(256, c7[0], 1, c7[1]))),
                       branch(("branch2_0", cv(192, 1)), ("branch2_1", cv(192, c7[0], 1, c7[1])),
                              ("branch2_2", cv(224, r7[0], 1, r7[1])), ("branch2_3", cv(224, c7[0], 1, c7[1])),
                              ("branch2_4", cv(256, r7[0], 1, r7[1]))),
                       pool_proj(128)))

    def c():
        def split(name, k1, k2):
            return Concat((branch((f"{name}a", cv(256, (1, 3), 1, (0, 1)))),
                           branch((f"{name}b", cv(256, (3, 1), 1, (1, 0))))))
        return Concat((branch(("branch0", cv(256, 1))),
                       branch(("branch1_0", cv(384, 1)), ("branch1_1", split("branch1_1", 0, 0))),
                       branch(("branch2_0", cv(384, 1)), ("branch2_1", cv(448, (3, 1), 1, (1, 0))),
                              ("branch2_2", cv(512, (1, 3), 1, (0, 1))), ("branch2_3", split("branch2_3", 0, 0))),
                       pool_proj(256)))

    reduction_a = Concat((branch(("branch0", cv(384, 3, 2))),
                          branch(("branch1_0", cv(192, 1)), ("branch1_1", cv(224, 3, 1, 1)),
                                 ("branch1_2", cv(256, 3, 2))),
                          branch(("pool", MaxPool(3, 2)))))
    reduction_b = Concat((branch(("branch0_0", cv(192, 1)), ("branch0_1", cv(192, 3, 2))),
                          branch(("branch1_0", cv(256, 1)), ("branch1_1", cv(256, r7[0], 1, r7[1])),
                                 ("branch1_2", cv(320, c7[0], 1, c7[1])), ("branch1_3", cv(320, 3, 2))),
                          branch(("pool", MaxPool(3, 2)))))
    stages = [
        stage("stem", *_transform(o), ("conv1", cv(32, 3, 2)), ("conv2", cv(32, 3)), ("conv3", cv(64, 3, 1, 1)),
              ("mixed_3a", Concat((branch(("pool", MaxPool(3, 2))), branch(("conv", cv(96, 3, 2)))))),
              ("mixed_4a", Concat((branch(("branch0_0", cv(64, 1)), ("branch0_1", cv(96, 3))),
                                   branch(("branch1_0", cv(64, 1)), ("branch1_1", cv(64, r7[0], 1, r7[1])),
                                          ("branch1_2", cv(64, c7[0], 1, c7[1])), ("branch1_3", cv(96, 3)))))),
              ("mixed_5a", Concat((branch(("conv", cv(192, 3, 2))), branch(("pool", MaxPool(3, 2))))))),
        stage("a", *[(f"inception_a{i + 1}", a()) for i in range(4)], ("reduction_a", reduction_a)),
        stage("b", *[(f"inception_b{i + 1}", b()) for i in range(7)], ("reduction_b", reduction_b)),
        stage("c", *[(f"inception_c{i + 1}", c()) for i in range(3)]),
    ]
    stages += _top(o, include_top, pooling)
    spec = Spec(_name(preset, options, include_top), o["in_channels"], o["input_size"], tuple(stages),
                features=("stem.mixed_5a", "a.inception_a4", "b.inception_b7", "c.inception_c3"),
                cfg=_cfg(preset_, o))
    return validate(spec)


# --------------------------------------------------------------------------- Inception-ResNet-v2
_INCEPTION_RESNET_V2 = dict(in_channels=3, num_classes=1000, input_size=299, dropout=0.0,
                            dropout_mode="upscale_in_train", eps=1e-3, bn_scale=False, count_pad=False,
                            transform_input=False, aux_logits=False, scales=(0.17, 0.1, 0.2))


# Over the complexity limit on purpose: the stem and the three residual block shapes.
def inception_resnet_v2(preset: str = "keras_inception_resnet_v2", *, include_top: bool = True,  # noqa: C901
                        pooling: Optional[str] = "avg", **options) -> Spec:
    """Inception-ResNet-v2 (Szegedy et al. 2017) as Keras's ``InceptionResNetV2`` builds it
    (55,873,736 parameters as Keras counts): the v3 stem, mixed_5b, 10 x block35 (scaled 0.17),
    mixed_6a, 20 x block17 (0.1), mixed_7a, 9 x block8 (0.2) and a last block8 scaled 1 without
    activation, conv_7b.  Each residual block is ``relu(x + scale * up(concat(branches)))``,
    ``up`` a linear 1x1 conv with bias and no batch norm.  BN without scale, eps 1e-3 (Keras)."""
    preset_ = _preset(preset, "inception_resnet_v2")
    o = _options(preset_, options, include_top)
    _common_checks(o, include_top, pooling)

    def cv(out, k, s=1, p=0):
        return Conv(out, k, s, p, bias=False, norm="bn", eps=o["eps"], scale=o["bn_scale"])

    def residual(width, scale, act, *branches):
        mixed = Concat(tuple(branch(*b) for b in branches))
        return Residual((("mixed", mixed), ("conv", Conv(width, 1, bias=True, act=None))), scale, act)

    s35, s17, s8 = o["scales"]
    block35 = lambda: residual(320, s35, "relu", [("branch_0", cv(32, 1))],
                               [("branch_1_0", cv(32, 1)), ("branch_1_1", cv(32, 3, 1, 1))],
                               [("branch_2_0", cv(32, 1)), ("branch_2_1", cv(48, 3, 1, 1)),
                                ("branch_2_2", cv(64, 3, 1, 1))])
    block17 = lambda: residual(1088, s17, "relu", [("branch_0", cv(192, 1))],
                               [("branch_1_0", cv(128, 1)), ("branch_1_1", cv(160, (1, 7), 1, (0, 3))),
                                ("branch_1_2", cv(192, (7, 1), 1, (3, 0)))])
    block8 = lambda scale=s8, act="relu": residual(
        2080, scale, act, [("branch_0", cv(192, 1))],
        [("branch_1_0", cv(192, 1)), ("branch_1_1", cv(224, (1, 3), 1, (0, 1))),
         ("branch_1_2", cv(256, (3, 1), 1, (1, 0)))])
    mixed_5b = Concat((branch(("branch_0", cv(96, 1))),
                       branch(("branch_1_0", cv(48, 1)), ("branch_1_1", cv(64, 5, 1, 2))),
                       branch(("branch_2_0", cv(64, 1)), ("branch_2_1", cv(96, 3, 1, 1)),
                              ("branch_2_2", cv(96, 3, 1, 1))),
                       branch(("pool", AvgPool(3, 1, 1, count_pad=o["count_pad"])), ("branch_pool", cv(64, 1)))))
    mixed_6a = Concat((branch(("branch_0", cv(384, 3, 2))),
                       branch(("branch_1_0", cv(256, 1)), ("branch_1_1", cv(256, 3, 1, 1)),
                              ("branch_1_2", cv(384, 3, 2))),
                       branch(("pool", MaxPool(3, 2)))))
    mixed_7a = Concat((branch(("branch_0_0", cv(256, 1)), ("branch_0_1", cv(384, 3, 2))),
                       branch(("branch_1_0", cv(256, 1)), ("branch_1_1", cv(288, 3, 2))),
                       branch(("branch_2_0", cv(256, 1)), ("branch_2_1", cv(288, 3, 1, 1)),
                              ("branch_2_2", cv(320, 3, 2))),
                       branch(("pool", MaxPool(3, 2)))))
    stages = [
        stage("stem", *_transform(o), ("conv_1a", cv(32, 3, 2)), ("conv_2a", cv(32, 3)), ("conv_2b", cv(64, 3, 1, 1)),
              ("pool_3a", MaxPool(3, 2)), ("conv_3b", cv(80, 1)), ("conv_4a", cv(192, 3)),
              ("pool_5a", MaxPool(3, 2)), ("mixed_5b", mixed_5b)),
        stage("b35", *[(f"block35_{i + 1}", block35()) for i in range(10)], ("mixed_6a", mixed_6a)),
        stage("b17", *[(f"block17_{i + 1}", block17()) for i in range(20)], ("mixed_7a", mixed_7a)),
        stage("b8", *[(f"block8_{i + 1}", block8()) for i in range(9)], ("block8_10", block8(1.0, None)),
              ("conv_7b", cv(1536, 1))),
    ]
    stages += _top(o, include_top, pooling)
    spec = Spec(_name(preset, options, include_top), o["in_channels"], o["input_size"], tuple(stages),
                features=("stem.mixed_5b", "b35.mixed_6a", "b17.mixed_7a", "b8.conv_7b"), cfg=_cfg(preset_, o))
    return validate(spec)


# --------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Preset:
    """One member of the family: its builder, the keyword defaults that make it that member,
    and its metadata (``cfg``, timm's ``pretrained_cfg``).  ``cfg`` keys: ``anchor`` (the
    model it reproduces), ``params`` / ``params_aux`` (the anchor's published counts without
    / with aux heads, as the anchor counts them), ``macs`` (published multiply-adds at
    ``input_size``), ``counts_bn_statistics`` (who counts batch-norm moving statistics as
    parameters, for the anchors that do: ``'Keras'``, ``'Paddle'``, ``'Gluon'``), ``mean`` / ``std`` (the anchor's
    preprocessing of [0, 1] RGB), ``notes``."""
    family: str
    defaults: dict
    cfg: dict = field(default_factory=dict)

    @property
    def builder(self) -> Callable[..., Spec]:
        return BUILDERS[self.family]


#: family -> the function that builds its tables (``builder(preset, **options)``)
BUILDERS = {"googlenet": googlenet, "inception_v3": inception_v3, "bn_inception": bn_inception,
            "inception_v4": inception_v4, "inception_resnet_v2": inception_resnet_v2}


def _g(**kw):
    return dict(_GOOGLENET, **kw)


def _v3(**kw):
    return dict(_INCEPTION_V3, **kw)


#: Every member of the family, by name (aliases in ``ALIASES``).
PRESETS = {
    # The book's simplified GoogLeNet (d2l chapter 8.4): 1x96x96, 10 classes,
    # conv bias, no normalisation, no dropout, no auxiliary heads.
    "d2l": Preset("googlenet", _g(in_channels=1, num_classes=10, input_size=96, aux_logits=False,
                                  dropout=0.0), dict(
        anchor="d2l 1.0.3 GoogLeNet (chapter 8.4)", params=5_977_530, mean=(0.0,), std=(1.0,))),
    # The paper (Szegedy et al. 2015): 3x224x224, 1000 classes, dropout 0.4,
    # both auxiliary heads.  LRN is available with norm="lrn".
    "paper": Preset("googlenet", _g(), dict(
        anchor="Szegedy et al. 2015, Table 1", params=6_998_552, params_aux=13_378_280)),
    # Batch norm after every conv, no conv bias (torchvision's GoogLeNet's layers; add
    # branch3_kernel=3 for torchvision's and TF-slim's 3x3 "5x5" branch).
    "bn": Preset("googlenet", _g(norm="bn", bias=False), dict(
        anchor="the paper's net with batch norm after every conv (Ioffe & Szegedy 2015)")),
    # torchvision's googlenet: a 3x3 in the "5x5" branch (vision#906), BN eps 1e-3, ceil-mode
    # max pools and a 2/2 pool before 5a, adaptive 4x4 pooling in the aux heads, dropout 0.2.
    "tv_googlenet": Preset("googlenet", _g(norm="bn", bias=False, branch3_kernel=3, dropout=0.2,
                                           pool="ceil", aux_pool="adaptive"), dict(
        anchor="torchvision.models.googlenet", params=6_624_904, params_aux=13_004_888,
        macs=1_498_000_000, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        notes="transform_input=True (torchvision's default with its pretrained weights) expects "
              "ImageNet-normalised input and remaps it to [-1, 1] inside the net")),
    # Paddle's paddle.vision.models.googlenet: no BN and no conv bias; no activation in any
    # conv, one ReLU after each Inception block's concatenation; unpadded floor-mode max pools
    # (so 4a sees 13x13 and the aux heads' dense layers take 1152 features); dropout that
    # scales at inference ('downscale_in_infer'); its second aux head has no ReLU.
    "paddle_googlenet": Preset("googlenet", _g(bias=False, pool="valid", act="concat",
                                               dropout_mode="downscale_in_infer",
                                               aux_fc_act=("relu", None)), dict(
        anchor="paddle.vision.models.googlenet", params_aux=11_535_736, mean=IMAGENET_MEAN,
        std=IMAGENET_STD, notes="Paddle's model returns (out, aux1, aux2) in every mode")),
    # Inception v3 (Szegedy et al. 2016) as torchvision builds it, with its aux head.
    "tv_inception_v3": Preset("inception_v3", _v3(), dict(
        anchor="torchvision.models.inception_v3", params=23_834_568, params_aux=27_161_264,
        macs=5_713_000_000, mean=IMAGENET_MEAN, std=IMAGENET_STD)),
    # Keras's InceptionV3: BN without its scale; 'same' average pools that do not count the
    # padding; no dropout; no aux head.  Keras counts BN moving statistics (23,851,784).
    "keras_inception_v3": Preset("inception_v3", _v3(aux_logits=False, dropout=0.0, bn_scale=False,
                                                     count_pad=False), dict(
        anchor="tf.keras.applications.InceptionV3", params=23_851_784, counts_bn_statistics="Keras",
        trainable=23_817_352, mean=INCEPTION_MEAN, std=INCEPTION_STD)),
    # Paddle's inception_v3: BN eps 1e-5 (Paddle's default), dropout 0.2 'downscale_in_infer',
    # no aux head.  Paddle counts BN statistics among its parameters (23,869,000).
    "paddle_inception_v3": Preset("inception_v3", _v3(aux_logits=False, dropout=0.2, eps=1e-5,
                                                      dropout_mode="downscale_in_infer"), dict(
        anchor="paddle.vision.models.inception_v3", params=23_869_000, counts_bn_statistics="Paddle",
        mean=IMAGENET_MEAN, std=IMAGENET_STD)),
    # Gluon's inception_v3: torchvision's without the aux head (its head's 8x8 average pool is
    # the global pool at 299, the size it is built for).  Gluon counts BN statistics.
    "gluon_inception_v3": Preset("inception_v3", _v3(aux_logits=False), dict(
        anchor="mxnet.gluon.model_zoo.vision.inception_v3", params=23_869_000,
        counts_bn_statistics="Gluon", mean=IMAGENET_MEAN, std=IMAGENET_STD,
        notes="Gluon's head pools with a fixed 8x8 window, the global pool at 299 only")),
}

PRESETS.update({
    # BN-Inception (Ioffe & Szegedy 2015) in Cadene's layout: conv biases kept (bias=False drops
    # the 10,016 that BN makes redundant: 10,260,224), eps 1e-5, ceil-mode pools.  Cadene's
    # weights expect BGR in 0-255 minus [104, 117, 128] (mean/std below are those, over 255).
    "bn_inception": Preset("bn_inception", dict(_BN_INCEPTION), dict(
        anchor="pretrainedmodels.bninception (Cadene)", params=10_270_240,
        mean=(104 / 255, 117 / 255, 128 / 255), std=(1 / 255,) * 3,
        notes="Cadene's weights take BGR input; the head's 7x7 average pool is the global pool at 224")),
    # Inception-v4 (Szegedy et al. 2017) as Cadene and timm build it.
    "inception_v4": Preset("inception_v4", dict(_INCEPTION_V4), dict(
        anchor="timm.inception_v4 / pretrainedmodels.inceptionv4 (Cadene)", params=42_679_816,
        mean=INCEPTION_MEAN, std=INCEPTION_STD)),
    # Keras's InceptionResNetV2: BN without scale; counts BN moving statistics (55,873,736).
    "keras_inception_resnet_v2": Preset("inception_resnet_v2", dict(_INCEPTION_RESNET_V2), dict(
        anchor="tf.keras.applications.InceptionResNetV2", params=55_873_736, counts_bn_statistics="Keras",
        trainable=55_813_192, mean=INCEPTION_MEAN, std=INCEPTION_STD)),
})

#: Other names of the members.
ALIASES = {"inception_v3": "tv_inception_v3", "googlenet": "tv_googlenet",
           "inception_resnet_v2": "keras_inception_resnet_v2"}


def preset_names():
    """Every preset's name, then the aliases."""
    return sorted(PRESETS) + sorted(ALIASES)


def _preset(name, family=None) -> Preset:
    name = ALIASES.get(name, name)
    if name not in PRESETS:
        raise SpecError(f"unknown preset {name!r}; choose one of {preset_names()}")
    p = PRESETS[name]
    if family is not None and p.family != family:
        raise SpecError(f"preset {name!r} is a {p.family} table; build it with {p.family}() or get_spec()")
    return p


def _options(preset: Preset, options: dict, include_top: bool = True) -> dict:
    """The preset's defaults with the options given; a headless net drops the aux heads (they
    are classifiers) unless they are asked for."""
    options = {k: v for k, v in options.items() if v is not None}
    if not include_top and "aux_logits" in preset.defaults and "aux_logits" not in options:
        options["aux_logits"] = False
    unknown = set(options) - set(preset.defaults)
    if unknown:
        raise SpecError(f"unknown option(s) {sorted(unknown)} for a {preset.family} table; "
                        f"valid: {sorted(preset.defaults) + ['include_top', 'pooling']}")
    return dict(preset.defaults, **options)


def _common_checks(o, include_top, pooling):
    if pooling not in ("avg", "max", None, "none"):
        raise SpecError(f"pooling must be 'avg', 'max' or None, not {pooling!r}")
    if o["aux_logits"] and not include_top:
        raise SpecError("aux_logits=True needs include_top=True (the aux heads are classifiers)")
    if o["num_classes"] < 1 or o["in_channels"] < 1:
        raise SpecError("num_classes and in_channels must be >= 1")
    if o["dropout_mode"] not in ("upscale_in_train", "downscale_in_infer"):
        raise SpecError("dropout_mode must be 'upscale_in_train' or 'downscale_in_infer'")
    if o["transform_input"] and o["in_channels"] != 3:
        raise SpecError("transform_input remaps the three ImageNet channels: it needs in_channels=3")


def _tail(pooling):
    return {"avg": [GlobalAvgPool(), Flatten()], "max": [GlobalMaxPool(), Flatten()]}.get(pooling, [])


def _transform(o):
    """torchvision's ``transform_input``: x * (std / 0.5) + (mean - 0.5) / 0.5 per channel."""
    if not o["transform_input"]:
        return []
    return [("transform", Affine(tuple(s / 0.5 for s in IMAGENET_STD),
                                 tuple((m - 0.5) / 0.5 for m in IMAGENET_MEAN)))]


def _name(preset, options, include_top):
    given = any(v is not None for v in options.values())
    return preset if not given and include_top else f"{preset}*"


def _cfg(preset: Preset, o) -> tuple:
    cfg = dict(preset.cfg, family=preset.family, input_size=o["input_size"])
    return tuple(sorted(cfg.items()))


# --------------------------------------------------------------------------- user tables
def _scale_layer(layer, s, keep=False):
    if isinstance(layer, Conv):
        return replace(layer, out=s(layer.out))
    if isinstance(layer, Inception):
        return replace(layer, c1=s(layer.c1), c2=(s(layer.c2[0]), s(layer.c2[1])),
                       c3=(s(layer.c3[0]), s(layer.c3[1])), c4=s(layer.c4))
    if isinstance(layer, Concat):
        return replace(layer, branches=tuple(tuple((n, _scale_layer(l, s)) for n, l in b)
                                             for b in layer.branches))
    if isinstance(layer, Residual):
        raise SpecError("scale_channels cannot scale a residual block: its body must keep the "
                        "input's width; write the narrower table by hand")
    if isinstance(layer, Dense) and not keep:
        return replace(layer, out=s(layer.out))
    return layer


def scale_channels(spec: Spec, factor: float, name: Optional[str] = None) -> Spec:
    """A user-style table: every conv / Inception width multiplied by ``factor``
    (at least 1 channel); dense layers other than the classifier likewise."""
    def s(c):
        return max(1, int(round(c * factor)))

    last = spec.stages[-1].layers[-1][0]
    stages = tuple(Stage(st.name, tuple((n, _scale_layer(l, s, keep=(st is spec.stages[-1] and n == last)))
                                        for n, l in st.layers)) for st in spec.stages)
    aux = tuple(AuxHead(h.name, h.tap, tuple((n, _scale_layer(l, s, keep=(n == h.layers[-1][0])))
                                             for n, l in h.layers)) for h in spec.aux)
    return validate(replace(spec, name=name or f"{spec.name}x{factor:g}", stages=stages, aux=aux))


def get_spec(spec: Union[str, Spec, None] = None, **options) -> Spec:
    """Resolve a preset name (or a ready :class:`Spec`) plus keyword options."""
    if spec is None:
        spec = "d2l"
    if isinstance(spec, Spec):
        if options:
            unknown = set(options) - {"input_size"}
            if unknown:
                raise SpecError(f"options {sorted(unknown)} apply to presets, not to a ready Spec")
            spec = replace(spec, input_size=options["input_size"])
        return validate(spec)
    if not isinstance(spec, str):
        raise SpecError(f"spec must be a preset name or a Spec, not {type(spec).__name__}")
    return _preset(spec).builder(spec, **options)


from . import classic  # noqa: E402,F401  (registers the book's earlier nets)
