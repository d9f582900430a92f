"""The channel-spec table: the single, framework-free description of GoogLeNet.

Every backend builds its network by walking a :class:`Spec`; nothing about the
architecture is written anywhere else.  A spec is plain, immutable data:

* a :class:`Spec` holds the input channels, the default input size and an ordered
  tuple of :class:`Stage` s (``b1`` ... ``b5`` and ``head`` for the book's net);
* a stage holds named layers, each a small typed record: :class:`Conv`,
  :class:`MaxPool`, :class:`AvgPool`, :class:`LRN`, :class:`Inception`,
  :class:`GlobalAvgPool`, :class:`Flatten`, :class:`Dropout`, :class:`Dense`;
* optional auxiliary heads (:class:`AuxHead`) tap the output of a named block.

An Inception record ``Inception(c1, (c2a, c2b), (c3a, c3b), c4)`` expands, through
:meth:`Inception.branches`, into its four branches of primitive layers (named
``p1_1``, ``p2_1``, ``p2_2``, ``p3_1``, ``p3_2``, ``p4_1``, ``p4_2`` as in the book),
so backends only need primitives plus "run these branches and concatenate".

User-written tables are first-class: build a :class:`Spec` by hand (see
:func:`stage`) or transform a preset (see :func:`scale_channels`) and every
backend builds it with no backend code changed.
"""
from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass, field, replace
from typing import Iterator, Optional, Tuple, Union

__all__ = [
    "Conv", "MaxPool", "AvgPool", "LRN", "Inception", "GlobalAvgPool", "GlobalMaxPool", "Flatten",
    "Dropout", "Dense", "Stage", "AuxHead", "Spec", "stage", "PRESETS", "get_spec",
    "googlenet", "scale_channels", "iter_blocks", "iter_param_layers", "SpecError",
]


class SpecError(ValueError):
    """A table or a combination of options that cannot describe a network."""


# --------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Conv:
    """2-D convolution, optionally followed by batch norm, then the activation.

    ``norm='bn'`` inserts batch norm between the convolution and the activation
    (torchvision's ``BasicConv2d``); ``bias`` is the convolution's own bias.
    """
    out: int
    kernel: int
    stride: int = 1
    padding: int = 0
    bias: bool = True
    norm: Optional[str] = None          # None or "bn"
    act: Optional[str] = "relu"         # "relu" or None
    kind = "conv"


@dataclass(frozen=True)
class MaxPool:
    """Max pooling; padded cells never win (they count as -inf in every backend)."""
    kernel: int
    stride: int
    padding: int = 0
    kind = "maxpool"


@dataclass(frozen=True)
class AvgPool:
    """Average pooling without padding (used by the auxiliary heads)."""
    kernel: int
    stride: int
    padding: int = 0
    kind = "avgpool"


@dataclass(frozen=True)
class LRN:
    """Local response normalisation across channels (the paper's, Caffe's constants)."""
    size: int = 5
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 1.0
    kind = "lrn"


@dataclass(frozen=True)
class Inception:
    """The Inception block ``(c1, (c2a, c2b), (c3a, c3b), c4)``.

    Branch 1: 1x1 conv ``c1``.  Branch 2: 1x1 ``c2a`` then 3x3 ``c2b``.  Branch 3:
    1x1 ``c3a`` then ``branch3_kernel`` x ``branch3_kernel`` ``c3b`` (5 in the paper
    and the book; 3 in torchvision and TF-slim).  Branch 4: 3x3/1 max pool then
    1x1 ``c4``.  Outputs are concatenated along channels.
    """
    c1: int
    c2: Tuple[int, int]
    c3: Tuple[int, int]
    c4: int
    branch3_kernel: int = 5
    bias: bool = True
    norm: Optional[str] = None
    kind = "inception"

    @property
    def out(self) -> int:
        return self.c1 + self.c2[1] + self.c3[1] + self.c4

    def branches(self):
        """The four branches as tuples of ``(name, primitive layer)``."""
        k = self.branch3_kernel
        conv = lambda out, kernel, pad=0: Conv(out, kernel, 1, pad, bias=self.bias, norm=self.norm)
        return (
            (("p1_1", conv(self.c1, 1)),),
            (("p2_1", conv(self.c2[0], 1)), ("p2_2", conv(self.c2[1], 3, 1))),
            (("p3_1", conv(self.c3[0], 1)), ("p3_2", conv(self.c3[1], k, k // 2))),
            (("p4_1", MaxPool(3, 1, 1)), ("p4_2", conv(self.c4, 1))),
        )


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
    rate: float
    kind = "dropout"


@dataclass(frozen=True)
class Dense:
    """Fully connected layer; its input features are inferred from the table."""
    out: int
    act: Optional[str] = None
    bias: bool = True
    kind = "dense"


Layer = Union[Conv, MaxPool, AvgPool, LRN, Inception, GlobalAvgPool, GlobalMaxPool, Flatten,
              Dropout, Dense]
PRIMITIVES = (Conv, MaxPool, AvgPool, LRN, GlobalAvgPool, GlobalMaxPool, Flatten, Dropout, Dense)


@dataclass(frozen=True)
class Stage:
    """A named group of named layers, e.g. ``b3`` = two Inception blocks and a pool."""
    name: str
    layers: Tuple[Tuple[str, Layer], ...]


@dataclass(frozen=True)
class AuxHead:
    """An auxiliary classifier fed by the output of block ``tap`` (``'b4.inception4a'``)."""
    name: str
    tap: str
    layers: Tuple[Tuple[str, Layer], ...]


@dataclass(frozen=True)
class Spec:
    """A whole network: input channels, default input size, stages, auxiliary heads."""
    name: str
    in_channels: int
    input_size: int
    stages: Tuple[Stage, ...]
    aux: Tuple[AuxHead, ...] = ()
    features: Tuple[str, ...] = field(default=())   # block names exposed by ``features``

    @property
    def num_classes(self) -> Optional[int]:
        for _, layer in reversed(self.stages[-1].layers):
            if isinstance(layer, Dense):
                return layer.out
        return None

    def stage_names(self):
        return [s.name for s in self.stages]


# --------------------------------------------------------------------------- helpers
def _named(layers, prefix_counts=None):
    """Give unnamed layers names such as ``conv1``, ``pool2``, ``inception1``."""
    counts = {}
    out = []
    short = {"conv": "conv", "maxpool": "pool", "avgpool": "avgpool", "lrn": "lrn",
             "inception": "inception", "gap": "gap", "gmp": "gmp", "flatten": "flatten",
             "dropout": "dropout", "dense": "dense"}
    for item in layers:
        if isinstance(item, tuple):
            name, layer = item
        else:
            layer = item
            base = short[layer.kind]
            counts[base] = counts.get(base, 0) + 1
            name = f"{base}{counts[base]}"
        if not name.isidentifier():
            raise SpecError(f"layer name {name!r} must be a Python identifier")
        out.append((name, layer))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise SpecError(f"duplicate layer names in {names}")
    return tuple(out)


def stage(name: str, *layers) -> Stage:
    """``stage('b1', Conv(64, 7, 2, 3), MaxPool(3, 2, 1))``; a layer may be ``(name, layer)``."""
    return Stage(name, _named(layers))


def iter_blocks(spec: Spec) -> Iterator[Tuple[str, str, Layer]]:
    """Yield ``(stage name, qualified block name, layer)`` in forward order."""
    for st in spec.stages:
        for name, layer in st.layers:
            yield st.name, f"{st.name}.{name}", layer


def _expand(prefix, layer):
    if isinstance(layer, Inception):
        for branch in layer.branches():
            for name, sub in branch:
                yield f"{prefix}.{name}", sub
    else:
        yield prefix, layer


def iter_param_layers(spec: Spec, include_aux: bool = True):
    """Yield ``(qualified name, primitive layer)`` for every layer in the table,
    Inception blocks expanded into their branch layers, aux heads last."""
    for _, qname, layer in iter_blocks(spec):
        yield from _expand(qname, layer)
    if include_aux:
        for head in spec.aux:
            for name, layer in head.layers:
                yield f"{head.name}.{name}", layer


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
    for qname, layer in iter_param_layers(spec):
        if not isinstance(layer, PRIMITIVES):
            raise SpecError(f"{qname}: unknown layer record {layer!r}")
        if isinstance(layer, Conv) and layer.norm not in (None, "bn"):
            raise SpecError(f"{qname}: norm must be None or 'bn', not {layer.norm!r}")
        if isinstance(layer, (Conv, Dense)) and layer.act not in (None, "relu"):
            raise SpecError(f"{qname}: act must be None or 'relu', not {layer.act!r}")
        if isinstance(layer, Dropout) and not 0 <= layer.rate < 1:
            raise SpecError(f"{qname}: dropout rate must be in [0, 1)")
    return spec


# --------------------------------------------------------------------------- the family
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

#: Named presets and the keyword defaults :func:`googlenet` uses for them.
PRESETS = {
    # The book's simplified GoogLeNet (d2l chapter 8.4): 1x96x96, 10 classes,
    # conv bias, no normalisation, no dropout, no auxiliary heads.
    "d2l": dict(in_channels=1, num_classes=10, input_size=96, aux_logits=False,
                dropout=0.0, dropout_aux=0.7, norm="none", branch3_kernel=5, bias=True),
    # The paper (Szegedy et al. 2015): 3x224x224, 1000 classes, dropout 0.4,
    # both auxiliary heads.  LRN is available with norm="lrn".
    "paper": dict(in_channels=3, num_classes=1000, input_size=224, aux_logits=True,
                  dropout=0.4, dropout_aux=0.7, norm="none", branch3_kernel=5, bias=True),
    # Batch norm after every conv, no conv bias (torchvision's GoogLeNet; add
    # branch3_kernel=3 for torchvision's and TF-slim's 3x3 "5x5" branch).
    "bn": dict(in_channels=3, num_classes=1000, input_size=224, aux_logits=True,
               dropout=0.4, dropout_aux=0.7, norm="bn", branch3_kernel=5, bias=False),
}

_OPTIONS = ("in_channels", "num_classes", "input_size", "aux_logits", "dropout",
            "dropout_aux", "norm", "branch3_kernel", "bias", "include_top", "pooling")


# Over the complexity limit on purpose: the presets and their options.
def googlenet(preset: str = "d2l", *, in_channels: Optional[int] = None,  # noqa: C901
              num_classes: Optional[int] = None, input_size: Optional[int] = None,
              aux_logits: Optional[bool] = None, dropout: Optional[float] = None,
              dropout_aux: Optional[float] = None, norm: Optional[str] = None,
              branch3_kernel: Optional[int] = None, bias: Optional[bool] = None,
              include_top: bool = True, pooling: Optional[str] = "avg") -> Spec:
    """The GoogLeNet table for a preset, with keyword overrides (torchvision style).

    Args:
        preset: ``'d2l'`` (default, the book's net), ``'paper'`` or ``'bn'``.
        in_channels: input channels (d2l: 1; paper, bn: 3).
        num_classes: classes of the final dense layer (d2l: 10; paper, bn: 1000).
        input_size: default square input size (d2l: 96; paper, bn: 224).
        aux_logits: add the two auxiliary heads on 4a and 4d (d2l: False).
        dropout: dropout before the final dense layer (d2l: 0; paper, bn: 0.4).
        dropout_aux: dropout inside the auxiliary heads (0.7).
        norm: ``'none'``, ``'bn'`` (batch norm after every conv) or ``'lrn'``
            (local response normalisation after the first two pools).
        branch3_kernel: kernel of the third branch's second conv, 5 or 3.
        bias: conv bias (defaults to ``norm != 'bn'``).
        include_top: keep the classifier (global pool, dropout, dense); without it
            the network ends after 5b, pooled according to ``pooling``.
        pooling: with ``include_top=False``: ``'avg'``, ``'max'`` or ``None``
            (Keras-applications conventions); ignored with the top.
    """
    if preset not in PRESETS:
        raise SpecError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    o = dict(PRESETS[preset])
    given = dict(in_channels=in_channels, num_classes=num_classes, input_size=input_size,
                 aux_logits=aux_logits, dropout=dropout, dropout_aux=dropout_aux,
                 norm=norm, branch3_kernel=branch3_kernel, bias=bias)
    o.update({k: v for k, v in given.items() if v is not None})
    if norm is not None and bias is None:
        o["bias"] = norm != "bn"
    if o["norm"] not in ("none", "bn", "lrn"):
        raise SpecError(f"norm must be 'none', 'bn' or 'lrn', not {o['norm']!r}")
    if o["branch3_kernel"] not in (3, 5):
        raise SpecError("branch3_kernel must be 3 or 5")
    if pooling not in ("avg", "max", None, "none"):
        raise SpecError(f"pooling must be 'avg', 'max' or None, not {pooling!r}")
    if o["aux_logits"] and not include_top:
        raise SpecError("aux_logits=True needs include_top=True (the aux heads are classifiers)")
    if o["num_classes"] < 1 or o["in_channels"] < 1:
        raise SpecError("num_classes and in_channels must be >= 1")

    bn = "bn" if o["norm"] == "bn" else None
    lrn = o["norm"] == "lrn"
    conv = lambda out, k, s=1, p=0: Conv(out, k, s, p, bias=o["bias"], norm=bn)
    inc = {name: (f"inception{name}", Inception(c1, c2, c3, c4, o["branch3_kernel"], o["bias"], bn))
           for name, c1, c2, c3, c4 in INCEPTION_TABLE}
    pool = lambda: MaxPool(3, 2, 1)

    b1 = [Conv(64, 7, 2, 3, bias=o["bias"], norm=bn), pool()] + ([LRN()] if lrn else [])
    b2 = [conv(64, 1), conv(192, 3, 1, 1), pool()] + ([LRN()] if lrn else [])
    stages = [
        stage("b1", *b1),
        stage("b2", *b2),
        stage("b3", inc["3a"], inc["3b"], pool()),
        stage("b4", inc["4a"], inc["4b"], inc["4c"], inc["4d"], inc["4e"], pool()),
    ]
    if include_top:
        stages.append(stage("b5", inc["5a"], inc["5b"], GlobalAvgPool(), Flatten()))
        head = ([Dropout(o["dropout"])] if o["dropout"] > 0 else []) + [Dense(o["num_classes"])]
        stages.append(stage("head", *head))
    else:
        tail = {"avg": [GlobalAvgPool(), Flatten()], "max": [GlobalMaxPool(), Flatten()]}
        stages.append(stage("b5", inc["5a"], inc["5b"], *tail.get(pooling, [])))

    aux = ()
    if o["aux_logits"]:
        def head(name, tap):
            layers = [AvgPool(5, 3), conv(128, 1), Flatten(), Dense(1024, act="relu"),
                      Dropout(o["dropout_aux"]), Dense(o["num_classes"])]
            return AuxHead(name, tap, _named(layers))
        aux = (head("aux1", "b4.inception4a"), head("aux2", "b4.inception4d"))

    name = preset if all(given[k] is None for k in given) and include_top else f"{preset}*"
    spec = Spec(name, o["in_channels"], o["input_size"], tuple(stages), aux,
                features=("b3.inception3b", "b4.inception4a", "b4.inception4d", "b5.inception5b"))
    return validate(spec)


def scale_channels(spec: Spec, factor: float, name: Optional[str] = None) -> Spec:
    """A user-style table: every conv / Inception width multiplied by ``factor``
    (at least 1 channel); dense layers other than the classifier likewise."""
    s = lambda c: max(1, int(round(c * factor)))
    last = spec.stages[-1].layers[-1][0]

    def scale(layer, keep=False):
        if isinstance(layer, Conv):
            return replace(layer, out=s(layer.out))
        if isinstance(layer, Inception):
            return replace(layer, c1=s(layer.c1), c2=(s(layer.c2[0]), s(layer.c2[1])),
                           c3=(s(layer.c3[0]), s(layer.c3[1])), c4=s(layer.c4))
        if isinstance(layer, Dense) and not keep:
            return replace(layer, out=s(layer.out))
        return layer

    stages = tuple(Stage(st.name, tuple((n, scale(l, keep=(st is spec.stages[-1] and n == last)))
                                        for n, l in st.layers)) for st in spec.stages)
    aux = tuple(AuxHead(h.name, h.tap, tuple((n, scale(l, keep=(n == h.layers[-1][0])))
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
    unknown = set(options) - set(_OPTIONS)
    if unknown:
        raise SpecError(f"unknown option(s) {sorted(unknown)}; valid: {list(_OPTIONS)}")
    return googlenet(spec, **options)


#: Batch-norm constants shared by every backend (torchvision's GoogLeNet uses eps 1e-3).
#: Momentum in PyTorch's convention: running = (1 - m) * running + m * batch
#: (Keras, MXNet and Paddle take ``1 - BN_MOMENTUM`` = 0.9).
BN_EPS = 1e-3
BN_MOMENTUM = 0.1


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
