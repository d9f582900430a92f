"""The book's earlier nets as tables: AlexNet, VGG and NiN as d2l builds them (chapter 8's
exercise 3: compare their parameter counts with GoogLeNet's).

d2l 1.0.3 builds them for Fashion-MNIST (chapters 8.1 AlexNet, 8.2 VGG, 8.3 NiN): one input
channel, 224x224 input, 10 classes, ReLU after every conv and hidden dense layer, dropout 0.5.
The builders here give exactly those nets, with the book's paddings, pools and dropouts, and
every layer named (AlexNet and VGG as Caffe names them: ``conv1`` ... ``fc8``; NiN's 1x1
"mlpconv" layers ``cccp1`` ... as in the NiN paper's Caffe model)::

    get_spec("d2l_alexnet")                            # 46,764,746 parameters
    get_spec("d2l_vgg11", arch=((1, 16), (1, 32), (2, 64), (2, 128), (2, 128)))  # the book's trained VGG
    get_spec("d2l_nin", num_classes=100, input_size=96)

Options: ``in_channels``, ``num_classes``, ``input_size`` (the dense layers of AlexNet and
VGG take their width from it), ``dropout`` (0 drops the dropout layers), ``dropout_mode``;
VGG also ``arch``, the book's ``((num_convs, channels), ...)``.  None has a headless form:
``include_top=False`` and ``pooling`` raise :class:`SpecError`.

The book's code for each framework is in ``backends/<fw>/book.py`` (``alexnet()``,
``vgg(conv_arch)``, ``nin()``); ``tests/test_classic.py`` counts its parameters with each
framework and checks them against these tables.  Importing :mod:`common.net.family` imports
this module, which registers its builders and presets there (``BUILDERS``, ``PRESETS``).
"""
from __future__ import annotations

import dataclasses

from typing import Optional

from . import family
from .family import Preset, _cfg, _name, _options, _preset
from .spec import (Conv, Dense, Dropout, Flatten, GlobalAvgPool, MaxPool, Spec, SpecError, stage,
                   validate)

__all__ = ["alexnet", "vgg", "nin", "VGG11", "EXERCISE3", "exercise3", "exercise3_table"]

#: The book's VGG-11 (d2l 8.2): (number of 3x3 convs, channels) per block, each block ending
#: in a 2x2/2 max pool.
VGG11 = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))

_BOOK = dict(in_channels=1, num_classes=10, input_size=224, dropout=0.5, dropout_mode="upscale_in_train")


def _checks(o, include_top, pooling, family_name):
    """The options every classic builder shares."""
    if include_top is False or pooling is not None:
        raise SpecError(f"the book's {family_name} has no headless form: include_top and pooling "
                        f"apply to the Inception family only")
    if o["num_classes"] < 1 or o["in_channels"] < 1:
        raise SpecError("num_classes and in_channels must be >= 1")
    if not 0 <= o["dropout"] < 1:
        raise SpecError("dropout must be in [0, 1)")
    if o["dropout_mode"] not in ("upscale_in_train", "downscale_in_infer"):
        raise SpecError("dropout_mode must be 'upscale_in_train' or 'downscale_in_infer'")


def _drop(o, name):
    """A named dropout layer, or none at rate 0."""
    return [(name, Dropout(o["dropout"], o["dropout_mode"]))] if o["dropout"] > 0 else []


def _classifier(o):
    """AlexNet's and VGG's top: flatten, two 4096-wide ReLU dense layers each followed by
    dropout, the class layer."""
    return stage("head", ("flatten", Flatten()), ("fc6", Dense(4096, act="relu")), *_drop(o, "dropout6"),
                 ("fc7", Dense(4096, act="relu")), *_drop(o, "dropout7"), ("fc8", Dense(o["num_classes"])))


def _spec(preset, options, include_top, preset_, o, stages, features):
    spec = Spec(_name(preset, options, include_top), o["in_channels"], o["input_size"], tuple(stages),
                features=features, cfg=_cfg(preset_, o))
    return validate(spec)


# --------------------------------------------------------------------------- AlexNet
def alexnet(preset: str = "d2l_alexnet", *, include_top: Optional[bool] = True,
            pooling: Optional[str] = None, **options) -> Spec:
    """AlexNet as d2l 8.1 builds it: 11x11/4 conv (96, padding 1), 3/2 max pool, 5x5 conv (256,
    padding 2), 3/2 max pool, three 3x3 convs (384, 384, 256, padding 1), 3/2 max pool, then
    dense 4096, dropout, dense 4096, dropout, dense ``num_classes``.  No LRN (the book drops it).

    The first conv's padding 1 is the PyTorch tab's (and d2l-zh's Paddle tab's); the MXNet and
    TensorFlow tabs leave it unpadded, which gives the same 54x54 map at 224 (and at every input
    size divisible by 4), hence the same network there."""
    preset_ = _preset(preset, "alexnet")
    o = _options(preset_, options)
    _checks(o, include_top, pooling, "AlexNet")
    stages = [
        stage("b1", ("conv1", Conv(96, 11, 4, 1)), ("pool1", MaxPool(3, 2))),
        stage("b2", ("conv2", Conv(256, 5, 1, 2)), ("pool2", MaxPool(3, 2))),
        stage("b3", ("conv3", Conv(384, 3, 1, 1)), ("conv4", Conv(384, 3, 1, 1)), ("conv5", Conv(256, 3, 1, 1)),
              ("pool5", MaxPool(3, 2))),
        _classifier(o),
    ]
    return _spec(preset, options, include_top, preset_, o, stages, ("b1.pool1", "b2.pool2", "b3.pool5"))


# --------------------------------------------------------------------------- VGG
def _arch(arch):
    try:
        arch = tuple((int(n), int(c)) for n, c in arch)
    except (TypeError, ValueError):
        raise SpecError(f"arch must be ((num_convs, channels), ...), not {arch!r}") from None
    if not arch or min(min(p) for p in arch) < 1:
        raise SpecError(f"arch needs at least one block, each with num_convs >= 1 and channels >= 1: {arch}")
    return arch


def vgg(preset: str = "d2l_vgg11", *, include_top: Optional[bool] = True,
        pooling: Optional[str] = None, **options) -> Spec:
    """VGG as d2l 8.2 builds it: for each ``(num_convs, channels)`` of ``arch`` a block
    ``block<i>`` of ``num_convs`` 3x3 convs (padding 1, ReLU) and a 2x2/2 max pool; then dense
    4096, dropout, dense 4096, dropout, dense ``num_classes``.  ``arch`` defaults to the book's
    VGG-11, :data:`VGG11`; the book trains ``((1, 16), (1, 32), (2, 64), (2, 128), (2, 128))``."""
    preset_ = _preset(preset, "vgg")
    o = _options(preset_, options)
    _checks(o, include_top, pooling, "VGG")
    arch = o["arch"] = _arch(o["arch"])
    stages = [stage(f"block{i + 1}", *[(f"conv{j + 1}", Conv(c, 3, 1, 1)) for j in range(n)],
                    ("pool", MaxPool(2, 2)))
              for i, (n, c) in enumerate(arch)]
    stages.append(_classifier(o))
    return _spec(preset, options, include_top, preset_, o, stages,
                 tuple(f"block{i + 1}.pool" for i in range(len(arch))))


# --------------------------------------------------------------------------- NiN
def nin(preset: str = "d2l_nin", *, include_top: Optional[bool] = True,
        pooling: Optional[str] = None, **options) -> Spec:
    """NiN as d2l 8.3 builds it: four NiN blocks (a conv and two 1x1 convs, ReLU after each:
    11x11/4 with 96 channels, 5x5 with 256 padding 2, 3x3 with 384 padding 1, then 3x3 with
    ``num_classes`` channels padding 1), a 3/2 max pool after each of the first three, dropout
    before the last block, and global average pooling of the last block's class maps.  No dense
    layer: the last 1x1 conv's ReLU output, averaged, is the logits."""
    preset_ = _preset(preset, "nin")
    o = _options(preset_, options)
    _checks(o, include_top, pooling, "NiN")

    def block(out, k, s, p):
        return (("conv", Conv(out, k, s, p)), ("cccp1", Conv(out, 1)), ("cccp2", Conv(out, 1)))

    stages = [
        stage("nin1", *block(96, 11, 4, 0), ("pool", MaxPool(3, 2))),
        stage("nin2", *block(256, 5, 1, 2), ("pool", MaxPool(3, 2))),
        stage("nin3", *block(384, 3, 1, 1), ("pool", MaxPool(3, 2))),
        stage("nin4", *_drop(o, "dropout"), *block(o["num_classes"], 3, 1, 1)),
        stage("head", ("avgpool", GlobalAvgPool()), ("flatten", Flatten())),
    ]
    spec = _spec(preset, options, include_top, preset_, o, stages, ("nin1.pool", "nin2.pool", "nin3.pool"))
    # its classes are the last conv's channels, pooled (no dense layer to read them from)
    return dataclasses.replace(spec, cfg=spec.cfg + (("num_classes", o["num_classes"]),))


# --------------------------------------------------------------------------- exercise 3
#: the book's nets of chapter 8 in the exercise's table, GoogLeNet (the book's, ``d2l``) last
EXERCISE3 = ("d2l_alexnet", "d2l_vgg11", "d2l_nin", "d2l")


def exercise3(presets=EXERCISE3, input_size: int = 224):
    """Chapter 8's exercise 3 from the oracle, no framework: ``(preset, parameters,
    multiply-adds of one 1 x input_size x input_size example, parameters in dense layers)``
    for each preset (GoogLeNet's count does not depend on the input size: it pools globally)."""
    from . import oracle
    rows = []
    for name in presets:
        a = oracle.analyze(family.get_spec(name), input_size)
        rows.append((name, a.params, a.macs, sum(r.params for r in a.layers if r.kind == "dense")))
    return rows


def exercise3_table(presets=EXERCISE3, input_size: int = 224) -> str:
    """:func:`exercise3` as the Markdown table of docs/family.md."""
    lines = [f"| preset | parameters | multiply-adds at 1×{input_size}×{input_size} | in dense layers |",
             "| --- | ---: | ---: | ---: |"]
    for name, params, macs, dense in exercise3(presets, input_size):
        lines.append(f"| `{name}` | {params:,} | {macs / 1e9:.3f} G | {dense:,} ({100 * dense / params:.1f} %) |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- registration
family.BUILDERS.update(alexnet=alexnet, vgg=vgg, nin=nin)

#: the book's anchors: d2l 1.0.3's code for the chapter, as each framework counts it
#: (tests/test_classic.py builds that code with PyTorch, TensorFlow, MXNet and Paddle)
family.PRESETS.update({
    # d2l 8.1: 1x224x224, 10 classes, dropout 0.5; 46.8 M parameters, 26.2 M of them in fc6 alone.
    "d2l_alexnet": Preset("alexnet", dict(_BOOK), dict(
        anchor="d2l 1.0.3 AlexNet (chapter 8.1)", params=46_764_746, mean=(0.0,), std=(1.0,))),
    # d2l 8.2: VGG-11 at 1x224x224 (the printed layer summary; the book trains a 4x narrower one).
    "d2l_vgg11": Preset("vgg", dict(_BOOK, arch=VGG11), dict(
        anchor="d2l 1.0.3 VGG-11 (chapter 8.2)", params=128_806_154, mean=(0.0,), std=(1.0,))),
    # d2l 8.3: NiN at 1x224x224; global average pooling over 10 class maps, no dense layer.
    "d2l_nin": Preset("nin", dict(_BOOK), dict(
        anchor="d2l 1.0.3 NiN (chapter 8.3)", params=1_992_166, mean=(0.0,), std=(1.0,))),
})
