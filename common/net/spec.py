"""The table: the single, framework-free description of GoogLeNet and its successors.

Every backend builds its network by walking a :class:`Spec`; nothing about the
architecture is written anywhere else.  A spec is plain, immutable data:

* a :class:`Spec` holds the input channels, the default input size and an ordered
  tuple of :class:`Stage` s (``b1`` ... ``b5`` and ``head`` for the book's net);
* a stage holds named layers, each a small typed record.  Primitives: :class:`Conv`
  (any rectangular kernel, stride and padding; batch norm with or without its scale and
  with its own epsilon; bias on or off), :class:`MaxPool` (floor or ceil rounding),
  :class:`AvgPool` (whose padding convention is stated), :class:`AdaptiveAvgPool`,
  :class:`LRN`, :class:`Affine` (a fixed per-channel input transform),
  :class:`GlobalAvgPool`, :class:`GlobalMaxPool`, :class:`Flatten`, :class:`Dropout`
  (inverted, or Paddle's ``downscale_in_infer``), :class:`Dense`;
* composites: :class:`Concat` (branches, each a sequence of any layers, composites
  included, run on one input and concatenated: Inception v3's E block nests one),
  :class:`Residual` (a shortcut plus a scaled branch, Inception-ResNet's block) and the
  GoogLeNet shorthand :class:`Inception` ``(c1, (c2a, c2b), (c3a, c3b), c4)``, which
  expands into a :class:`Concat` of four branches named ``p1_1`` ... ``p4_2`` as in the book;
* optional auxiliary heads (:class:`AuxHead`) tap the output of a named block.

Layer names inside a block are flat: a layer of a nested :class:`Concat` is named
``<block>.<layer>`` (``mixed7.Mixed_7b.branch3x3_2a``), so names must be distinct
within a block, and they read like torchvision's.

The presets (the family's members) are built in :mod:`common.net.family`; ``PRESETS``,
``get_spec``, ``googlenet``, ``inception_v3`` and ``scale_channels`` are importable from
here too.  User-written tables are first-class: build a :class:`Spec` by hand (see
:func:`stage`) or transform a preset and every backend builds it with no backend code
changed.
"""
from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass, field
from typing import Iterator, Optional, Tuple, Union

__all__ = [
    "Conv", "MaxPool", "AvgPool", "AdaptiveAvgPool", "LRN", "Affine", "Inception", "Concat",
    "Residual", "GlobalAvgPool", "GlobalMaxPool", "Flatten", "Dropout", "Dense", "Stage", "AuxHead",
    "Spec", "stage", "branch", "pair", "iter_blocks", "iter_param_layers", "walk", "composite", "block_of",
    "SpecError",
]   # and, from common.net.family: PRESETS, get_spec, googlenet, inception_v3, scale_channels

#: Batch-norm constants.  ``BN_EPS`` is the default epsilon of a :class:`Conv`'s batch norm
#: (torchvision's GoogLeNet and Inception v3, Keras's InceptionV3 and Gluon's use 1e-3;
#: a table may set another per layer, Paddle's 1e-5).  Momentum, a training convention
#: and not part of the network, is in PyTorch's convention: running = (1 - m) * running
#: + m * batch (Keras, MXNet and Paddle take ``1 - BN_MOMENTUM`` = 0.9).
BN_EPS = 1e-3
BN_MOMENTUM = 0.1


class SpecError(ValueError):
    """A table or a combination of options that cannot describe a network."""


Pair = Union[int, Tuple[int, int]]


def pair(v: Pair) -> Tuple[int, int]:
    """``3 -> (3, 3)``; ``(1, 7) -> (1, 7)``: kernels, strides and paddings as (height, width)."""
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


# --------------------------------------------------------------------------- primitives
@dataclass(frozen=True)
class Conv:
    """2-D convolution, optionally followed by batch norm, then the activation.

    ``kernel``, ``stride`` and ``padding`` are an int or a (height, width) pair (Inception
    v3's 1x7 is ``Conv(c, (1, 7), padding=(0, 3))``); padding is symmetric zeros.
    ``norm='bn'`` inserts batch norm between the convolution and the activation
    (torchvision's ``BasicConv2d``) with epsilon ``eps``; ``scale=False`` keeps its scale
    at 1, not learnt (Keras's ``BatchNormalization(scale=False)``).  ``bias`` is the
    convolution's own bias.
    """
    out: int
    kernel: Pair
    stride: Pair = 1
    padding: Pair = 0
    bias: bool = True
    norm: Optional[str] = None          # None or "bn"
    act: Optional[str] = "relu"         # "relu" or None
    eps: float = BN_EPS
    scale: bool = True
    kind = "conv"


@dataclass(frozen=True)
class MaxPool:
    """Max pooling; padded cells never win (they count as -inf in every backend).

    ``ceil=True`` rounds the output size up (PyTorch's ``ceil_mode``, torchvision's
    GoogLeNet), with PyTorch's rule that the last window starts inside the input."""
    kernel: Pair
    stride: Pair
    padding: Pair = 0
    ceil: bool = False
    kind = "maxpool"


@dataclass(frozen=True)
class AvgPool:
    """Average pooling.  With padding, the table states whether the padded zeros count in
    the divisor: ``count_pad=True`` is PyTorch's, Paddle's (``exclusive=False``) and
    Gluon's default (torchvision's ``avg_pool2d(3, 1, 1)``); ``count_pad=False`` is Keras's
    ``'same'`` average pooling.  Floor rounding only (frameworks disagree on the divisor
    of a ceil-mode window)."""
    kernel: Pair
    stride: Pair
    padding: Pair = 0
    count_pad: Optional[bool] = None
    kind = "avgpool"


@dataclass(frozen=True)
class AdaptiveAvgPool:
    """Average pooling to a fixed output size (PyTorch's ``AdaptiveAvgPool2d``): output cell
    ``i`` averages input rows ``floor(i*H/h)`` to ``ceil((i+1)*H/h) - 1`` (torchvision's
    GoogLeNet auxiliary heads pool 14x14 to 4x4 with overlapping windows)."""
    size: Pair
    kind = "adaptive_avg"


@dataclass(frozen=True)
class LRN:
    """Local response normalisation across channels (the paper's, Caffe's constants)."""
    size: int = 5
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 1.0
    kind = "lrn"


@dataclass(frozen=True)
class Affine:
    """A fixed per-channel transform ``x * scale[c] + shift[c]``, no parameters
    (torchvision's ``transform_input``: ImageNet-normalised inputs to [-1, 1])."""
    scale: Tuple[float, ...]
    shift: Tuple[float, ...]
    kind = "affine"


@dataclass(frozen=True)
class GlobalAvgPool:
    """Average over the whole feature map; keeps a 1x1 map (flatten follows)."""
    kind = "gap"


@dataclass(frozen=True)
class GlobalMaxPool:
    """Maximum over the whole feature map; keeps a 1x1 map."""
    kind = "gmp"


@dataclass(frozen=True)
class Flatten:
    kind = "flatten"


@dataclass(frozen=True)
class Dropout:
    """Dropout.  ``mode='upscale_in_train'`` (every framework's default): kept values are
    divided by ``1 - rate`` in training, evaluation is the identity.
    ``mode='downscale_in_infer'`` (Paddle's zoo models): training keeps values as they are,
    evaluation multiplies by ``1 - rate``."""
    rate: float
    mode: str = "upscale_in_train"
    kind = "dropout"


@dataclass(frozen=True)
class Dense:
    """Fully connected layer; its input features are inferred from the table."""
    out: int
    act: Optional[str] = None
    bias: bool = True
    kind = "dense"


# --------------------------------------------------------------------------- composites
Named = Tuple[Tuple[str, "Layer"], ...]


@dataclass(frozen=True)
class Concat:
    """Branches run on one input, their outputs concatenated along channels, then ``act``.

    Each branch is a tuple of ``(name, layer)`` run in sequence; a layer may itself be a
    composite (Inception v3's E block: ``1x1 -> Concat(1x3, 3x1)``).  Build one with
    :func:`branch`: ``Concat((branch(('b1', Conv(64, 1))), branch(...)))``."""
    branches: Tuple[Named, ...]
    act: Optional[str] = None
    kind = "concat"


@dataclass(frozen=True)
class Residual:
    """``act(x + scale * body(x))``: a shortcut plus a scaled branch (Inception-ResNet's
    block, whose body is a :class:`Concat` followed by a linear 1x1 conv).  ``body`` is a
    tuple of ``(name, layer)`` run in sequence; its output has the input's shape."""
    body: Named
    scale: float = 1.0
    act: Optional[str] = "relu"
    kind = "residual"


@dataclass(frozen=True)
class Inception:
    """The Inception block ``(c1, (c2a, c2b), (c3a, c3b), c4)``: a :class:`Concat` shorthand.

    Branch 1: 1x1 conv ``c1``.  Branch 2: 1x1 ``c2a`` then 3x3 ``c2b``.  Branch 3:
    1x1 ``c3a`` then ``branch3_kernel`` x ``branch3_kernel`` ``c3b`` (5 in the paper
    and the book; 3 in torchvision and TF-slim).  Branch 4: 3x3/1 max pool then
    1x1 ``c4``.  Every conv has ``bias``, ``norm`` (with ``eps``) and the activation
    ``conv_act``; the concatenation is followed by ``act`` (Paddle's GoogLeNet has no
    activation in its convs and one ReLU after the concatenation).
    """
    c1: int
    c2: Tuple[int, int]
    c3: Tuple[int, int]
    c4: int
    branch3_kernel: int = 5
    bias: bool = True
    norm: Optional[str] = None
    eps: float = BN_EPS
    conv_act: Optional[str] = "relu"
    act: Optional[str] = None
    kind = "inception"

    @property
    def out(self) -> int:
        return self.c1 + self.c2[1] + self.c3[1] + self.c4

    def branches(self):
        """The four branches as tuples of ``(name, primitive layer)``."""
        k = self.branch3_kernel

        def conv(out, kernel, pad=0):
            return Conv(out, kernel, 1, pad, bias=self.bias, norm=self.norm, act=self.conv_act,
                        eps=self.eps)

        return (
            (("p1_1", conv(self.c1, 1)),),
            (("p2_1", conv(self.c2[0], 1)), ("p2_2", conv(self.c2[1], 3, 1))),
            (("p3_1", conv(self.c3[0], 1)), ("p3_2", conv(self.c3[1], k, k // 2))),
            (("p4_1", MaxPool(3, 1, 1)), ("p4_2", conv(self.c4, 1))),
        )

    def as_concat(self) -> Concat:
        return Concat(self.branches(), act=self.act)


Layer = Union[Conv, MaxPool, AvgPool, AdaptiveAvgPool, LRN, Affine, Inception, Concat, Residual,
              GlobalAvgPool, GlobalMaxPool, Flatten, Dropout, Dense]
PRIMITIVES = (Conv, MaxPool, AvgPool, AdaptiveAvgPool, LRN, Affine, GlobalAvgPool, GlobalMaxPool,
              Flatten, Dropout, Dense)
COMPOSITES = ("concat", "residual", "inception")


def composite(layer):
    """The :class:`Concat` or :class:`Residual` a layer is (an :class:`Inception` as its
    Concat), or ``None`` for a primitive."""
    if layer.kind == "inception":
        return layer.as_concat()
    return layer if layer.kind in ("concat", "residual") else None


def sequences(layer):
    """The sequences of ``(name, layer)`` a composite runs: a Concat's branches, a Residual's body."""
    layer = composite(layer)
    return layer.branches if layer.kind == "concat" else (layer.body,)


@dataclass(frozen=True)
class Stage:
    """A named group of named layers, e.g. ``b3`` = two Inception blocks and a pool."""
    name: str
    layers: Named


@dataclass(frozen=True)
class AuxHead:
    """An auxiliary classifier fed by the output of block ``tap`` (``'b4.inception4a'``)."""
    name: str
    tap: str
    layers: Named


@dataclass(frozen=True)
class Spec:
    """A whole network: input channels, default input size, stages, auxiliary heads.

    ``features`` names the blocks :meth:`features` returns; ``cfg`` is the preset's
    metadata (timm's ``pretrained_cfg``: the anchor it reproduces, its published counts,
    its preprocessing), a tuple of ``(key, value)`` pairs so that the spec stays hashable;
    read it as a dict with :attr:`config`."""
    name: str
    in_channels: int
    input_size: int
    stages: Tuple[Stage, ...]
    aux: Tuple[AuxHead, ...] = ()
    features: Tuple[str, ...] = field(default=())   # block names exposed by ``features``
    cfg: Tuple[Tuple[str, object], ...] = field(default=(), compare=False)

    @property
    def num_classes(self) -> Optional[int]:
        """The classes of the last stage's dense layer; a table whose classes come from a conv
        (NiN) says so in its ``cfg``; ``None`` for a headless net."""
        for _, layer in reversed(self.stages[-1].layers):
            if isinstance(layer, Dense):
                return layer.out
        return dict(self.cfg).get("num_classes")

    @property
    def config(self) -> dict:
        return dict(self.cfg)

    def stage_names(self):
        return [s.name for s in self.stages]


# --------------------------------------------------------------------------- helpers
_SHORT = {"conv": "conv", "maxpool": "pool", "avgpool": "avgpool", "adaptive_avg": "apool",
          "lrn": "lrn", "affine": "affine", "inception": "inception", "concat": "mixed",
          "residual": "block", "gap": "gap", "gmp": "gmp", "flatten": "flatten",
          "dropout": "dropout", "dense": "dense"}


def _named(layers):
    """Give unnamed layers names such as ``conv1``, ``pool2``, ``inception1``."""
    counts = {}
    out = []
    for item in layers:
        if isinstance(item, tuple):
            name, layer = item
        else:
            layer = item
            base = _SHORT[layer.kind]
            counts[base] = counts.get(base, 0) + 1
            name = f"{base}{counts[base]}"
        if not isinstance(name, str) or not name.isidentifier():
            raise SpecError(f"layer name {name!r} must be a Python identifier")
        out.append((name, layer))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise SpecError(f"duplicate layer names in {names}")
    return tuple(out)


def stage(name: str, *layers) -> Stage:
    """``stage('b1', Conv(64, 7, 2, 3), MaxPool(3, 2, 1))``; a layer may be ``(name, layer)``."""
    return Stage(name, _named(layers))


def branch(*layers) -> Named:
    """One branch of a :class:`Concat` (or a :class:`Residual`'s body): ``(name, layer)``
    pairs, or bare layers named ``conv1``, ``pool1`` ..."""
    return _named(layers)


def iter_blocks(spec: Spec) -> Iterator[Tuple[str, str, Layer]]:
    """Yield ``(stage name, qualified block name, layer)`` in forward order."""
    for st in spec.stages:
        for name, layer in st.layers:
            yield st.name, f"{st.name}.{name}", layer


def walk(prefix: str, layer):
    """Yield ``(qualified name, layer, path)`` for ``layer`` and everything inside it,
    depth first in construction order, the composite before its contents.  Names inside a
    block are flat (``prefix.<name>``); ``path`` is the ``(sequence, step)`` pairs that lead
    to a layer through the composites (``((1, 0),)`` for a block's second branch's first
    layer)."""
    yield from _walk_inner(prefix, None, layer, ())


def block_of(qname: str) -> str:
    """The block a qualified name belongs to: layers inside a block are named flat,
    ``<stage>.<block>.<layer>`` (an aux head's ``<head>.<layer>``), whatever their depth, so
    the block is the first two parts (the rule :func:`walk` names by)."""
    return ".".join(qname.split(".")[:2])


def _walk_inner(block, name, layer, path):
    yield (block if name is None else f"{block}.{name}"), layer, path
    if composite(layer) is None:
        return
    for i, seq in enumerate(sequences(layer)):
        for j, (sub_name, sub) in enumerate(seq):
            yield from _walk_inner(block, sub_name, sub, path + ((i, j),))


def _expand(prefix, layer):
    for qname, sub, _ in walk(prefix, layer):
        if composite(sub) is None:
            yield qname, sub


def iter_param_layers(spec: Spec, include_aux: bool = True):
    """Yield ``(qualified name, primitive layer)`` for every layer in the table,
    composites expanded into their layers, aux heads last."""
    for _, qname, layer in iter_blocks(spec):
        yield from _expand(qname, layer)
    if include_aux:
        for head in spec.aux:
            for name, layer in head.layers:
                yield from _expand(f"{head.name}.{name}", layer)


def _check_layer(qname, layer):  # noqa: C901 -- one check per rule, each with its own message
    if not isinstance(layer, PRIMITIVES):
        raise SpecError(f"{qname}: unknown layer record {layer!r}")
    if isinstance(layer, Conv):
        if layer.norm not in (None, "bn"):
            raise SpecError(f"{qname}: norm must be None or 'bn', not {layer.norm!r}")
        if not layer.eps > 0:
            raise SpecError(f"{qname}: batch-norm epsilon must be > 0")
    if isinstance(layer, (Conv, MaxPool, AvgPool)):
        k, s, p = pair(layer.kernel), pair(layer.stride), pair(layer.padding)
        if min(k + s) < 1 or min(p) < 0:
            raise SpecError(f"{qname}: kernel and stride must be >= 1 and padding >= 0")
    if isinstance(layer, (Conv, Dense)) and layer.act not in (None, "relu"):
        raise SpecError(f"{qname}: act must be None or 'relu', not {layer.act!r}")
    if isinstance(layer, AvgPool) and any(pair(layer.padding)) and layer.count_pad is None:
        raise SpecError(f"{qname}: a padded average pool must state count_pad (True: padded zeros "
                        f"count, as in PyTorch's default; False: they do not, as in Keras's 'same')")
    if isinstance(layer, Dropout):
        if not 0 <= layer.rate < 1:
            raise SpecError(f"{qname}: dropout rate must be in [0, 1)")
        if layer.mode not in ("upscale_in_train", "downscale_in_infer"):
            raise SpecError(f"{qname}: dropout mode must be 'upscale_in_train' or 'downscale_in_infer'")


def _check_composite(qname, layer):
    c = composite(layer)
    if c.act not in (None, "relu"):
        raise SpecError(f"{qname}: act must be None or 'relu', not {c.act!r}")
    seqs = sequences(layer)
    if not seqs or not all(seqs):
        raise SpecError(f"{qname}: a {layer.kind} needs at least one non-empty sequence of layers")
    for seq in seqs:
        _named(seq)          # names are identifiers, distinct within the sequence


# Over the complexity limit on purpose: one check per rule of the table, each with its own message.
def validate(spec: Spec) -> Spec:  # noqa: C901
    if spec.in_channels < 1:
        raise SpecError("in_channels must be >= 1")
    if not spec.stages:
        raise SpecError("a spec needs at least one stage")
    names = [s.name for s in spec.stages] + [a.name for a in spec.aux]
    if len(set(names)) != len(names) or not all(n.isidentifier() for n in names):
        raise SpecError(f"stage and aux names must be distinct identifiers: {names}")
    blocks = {q for _, q, _ in iter_blocks(spec)}
    for head in spec.aux:
        if head.tap not in blocks:
            raise SpecError(f"aux head {head.name!r} taps unknown block {head.tap!r}")
    for f in spec.features:
        if f not in blocks:
            raise SpecError(f"feature tap {f!r} is not a block of the table")
    tops = [(q, layer) for _, q, layer in iter_blocks(spec)]
    tops += [(f"{h.name}.{n}", layer) for h in spec.aux for n, layer in h.layers]
    seen = set()
    for top, layer in tops:
        for qname, sub, _ in walk(top, layer):
            if qname in seen:
                raise SpecError(f"{qname}: two layers of one block share this name (names inside "
                                f"a block are flat: <block>.<layer>)")
            seen.add(qname)
            if composite(sub) is not None:
                _check_composite(qname, sub)
            else:
                _check_layer(qname, sub)
    return spec


def outputs_type(spec: Spec):
    """The named tuple a network returns in training mode when it has aux heads:
    ``(logits, aux2, aux1)`` for the paper's heads (last head first, like torchvision)."""
    names = ("logits",) + tuple(h.name for h in reversed(spec.aux))
    return _outputs_type(names)


_OUTPUT_TYPES = {}


def _outputs_type(names):
    if names not in _OUTPUT_TYPES:
        _OUTPUT_TYPES[names] = namedtuple("GoogLeNetOutputs", names)
    return _OUTPUT_TYPES[names]


_FAMILY = ("PRESETS", "get_spec", "googlenet", "inception_v3", "scale_channels", "INCEPTION_TABLE",
           "Preset", "preset_names")


def __getattr__(name):
    """The family's builders live in :mod:`common.net.family` (which imports this module)."""
    if name in _FAMILY:
        from . import family
        return getattr(family, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
