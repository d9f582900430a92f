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

__all__ = ["PRESETS", "Preset", "get_spec", "googlenet", "inception_v3", "scale_channels",
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
    o = _options(preset_, options)
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
    o = _options(preset_, options)
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


# --------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Preset:
    """One member of the family: its builder, the keyword defaults that make it that member,
    and its metadata (``cfg``, timm's ``pretrained_cfg``).  ``cfg`` keys: ``anchor`` (the
    model it reproduces), ``params`` / ``params_aux`` (the anchor's published counts without
    / with aux heads, as the anchor counts them), ``macs`` (published multiply-adds at
    ``input_size``), ``counts_bn_statistics`` (the anchor counts batch-norm moving statistics
    as parameters: Keras's, Paddle's and Gluon's counts), ``mean`` / ``std`` (the anchor's
    preprocessing of [0, 1] RGB), ``notes``."""
    family: str
    defaults: dict
    cfg: dict = field(default_factory=dict)

    @property
    def builder(self) -> Callable[..., Spec]:
        return {"googlenet": googlenet, "inception_v3": inception_v3}[self.family]


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
        anchor="tf.keras.applications.InceptionV3", params=23_851_784, counts_bn_statistics=True,
        trainable=23_817_352, mean=INCEPTION_MEAN, std=INCEPTION_STD)),
    # Paddle's inception_v3: BN eps 1e-5 (Paddle's default), dropout 0.2 'downscale_in_infer',
    # no aux head.  Paddle counts BN statistics among its parameters (23,869,000).
    "paddle_inception_v3": Preset("inception_v3", _v3(aux_logits=False, dropout=0.2, eps=1e-5,
                                                      dropout_mode="downscale_in_infer"), dict(
        anchor="paddle.vision.models.inception_v3", params=23_869_000, counts_bn_statistics=True,
        mean=IMAGENET_MEAN, std=IMAGENET_STD)),
    # Gluon's inception_v3: torchvision's without the aux head (its head's 8x8 average pool is
    # the global pool at 299, the size it is built for).  Gluon counts BN statistics.
    "gluon_inception_v3": Preset("inception_v3", _v3(aux_logits=False), dict(
        anchor="mxnet.gluon.model_zoo.vision.inception_v3", params=23_869_000,
        counts_bn_statistics=True, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        notes="Gluon's head pools with a fixed 8x8 window, the global pool at 299 only")),
}

#: Other names of the members.
ALIASES = {"inception_v3": "tv_inception_v3", "googlenet": "tv_googlenet"}


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


def _options(preset: Preset, options: dict) -> dict:
    options = {k: v for k, v in options.items() if v is not None}
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
