"""The oracle: shapes, parameters and multiply-adds of a table, without a framework.

This is the paper's Table 1 in code.  From a :class:`~common.net.spec.Spec` and an input
size it computes, for every block, stage and primitive layer, the output shape
(canonical channels-first: ``(C, H, W)`` or ``(F,)``), the number of trainable
parameters and the multiply-adds of one forward pass of one example.

Conventions (those of torchinfo and of the paper's "ops" column):

* a conv costs ``C_out * H_out * W_out * C_in * k * k`` multiply-adds, a dense layer
  ``in * out``; bias additions, activations, pooling, normalisation and
  concatenation are not counted;
* trainable parameters: conv and dense weights and biases, batch-norm scale and
  shift (running statistics are buffers, not parameters);
* pooling uses floor rounding (every framework's default) unless a max pool says ``ceil``.
"""
from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass
from typing import List, Tuple, Union

from . import spec as S

__all__ = ["LayerInfo", "Analysis", "analyze", "layer_info", "min_input_size",
           "InputTooSmall", "InputSizeError", "BranchesMisaligned", "sizes_that_fit", "fitting_sizes", "param_shapes",
           "bn_statistics"]

Shape = Tuple[int, ...]


class InputSizeError(S.SpecError):
    """The table cannot take an input of this size."""


class InputTooSmall(InputSizeError):
    """The input is too small for the table: some feature map would vanish."""


class BranchesMisaligned(InputSizeError):
    """At this input size the branches of a block give maps of different sizes (a stride-2
    conv and a ceil-mode pool side by side agree on even sizes only, as in BN-Inception)."""


@dataclass(frozen=True)
class LayerInfo:
    name: str          # qualified, e.g. "b3.inception3a" or "b3.inception3a.p2_2"
    kind: str          # record kind: conv, maxpool, inception, dense, ...
    in_shape: Shape
    out_shape: Shape
    params: int
    macs: int


@dataclass
class Analysis:
    spec: S.Spec
    input_shape: Shape
    blocks: List[LayerInfo]                 # one row per top-level layer of each stage
    layers: List[LayerInfo]                 # one row per primitive layer (Inception expanded)
    stages: "OrderedDict[str, LayerInfo]"  # one row per stage (out shape, params, macs)
    aux: "OrderedDict[str, LayerInfo]"     # one row per aux head

    @property
    def params(self) -> int:
        """Trainable parameters of the main network (without auxiliary heads)."""
        return sum(s.params for s in self.stages.values())

    @property
    def params_with_aux(self) -> int:
        return self.params + sum(a.params for a in self.aux.values())

    @property
    def macs(self) -> int:
        """Multiply-adds of one forward pass of one example, main network only."""
        return sum(s.macs for s in self.stages.values())

    @property
    def output_shape(self) -> Shape:
        return list(self.stages.values())[-1].out_shape


def _out(n, k, s, p, ceil=False):
    """Output length of a window ``k``, stride ``s``, padding ``p`` on ``n`` cells; with
    ``ceil``, PyTorch's ceil mode (rounded up, but the last window starts inside the input
    or its left padding)."""
    if not ceil:
        return (n + 2 * p - k) // s + 1
    out = -(-(n + 2 * p - k) // s) + 1
    return out - 1 if (out - 1) * s >= n + p else out


def _window(layer, in_shape):
    c, h, w = in_shape
    (kh, kw), (sh, sw), (ph, pw) = S.pair(layer.kernel), S.pair(layer.stride), S.pair(layer.padding)
    ceil = getattr(layer, "ceil", False)
    return c, (kh, kw), _out(h, kh, sh, ph, ceil), _out(w, kw, sw, pw, ceil)


def _composite_info(name, layer, in_shape):
    """Rows of a composite: its layers' rows, then its own row."""
    rows, outs = [], []
    for seq in S.sequences(layer):
        shape = in_shape
        for sub_name, sub in seq:
            sub_rows = layer_info(f"{S.block_of(name)}.{sub_name}", sub, shape)
            rows.extend(sub_rows)
            shape = sub_rows[-1].out_shape
        outs.append(shape)
    c = S.composite(layer)
    if c.kind == "residual":
        if outs[0] != in_shape:
            raise S.SpecError(f"{name}: a residual body must keep its input's shape {in_shape}, "
                              f"it gives {outs[0]}")
        out = in_shape
    else:
        if any(len(o) != 3 for o in outs):
            raise S.SpecError(f"{name}: branch outputs {outs} are not all feature maps")
        if len({o[1:] for o in outs}) != 1:
            raise BranchesMisaligned(f"{name}: its branches give maps of sizes "
                                     f"{', '.join('x'.join(map(str, o[1:])) for o in outs)} on a "
                                     f"{'x'.join(map(str, in_shape[1:]))} input")
        out = (sum(o[0] for o in outs),) + outs[0][1:]
    prims = [r for r in rows if r.kind not in S.COMPOSITES]
    return rows + [LayerInfo(name, layer.kind, in_shape, out, sum(r.params for r in prims),
                             sum(r.macs for r in prims))]


# Over the complexity limit on purpose: one branch per record kind of the table.
def layer_info(name: str, layer, in_shape: Shape) -> List[LayerInfo]:  # noqa: C901
    """Rows for one layer (one row, or for a composite block its layers' rows followed by
    the block row).  Raises :class:`InputTooSmall` on a vanished map."""
    kind = layer.kind

    def too_small():
        raise InputTooSmall(f"{name} ({kind}) gets a {'x'.join(map(str, in_shape))} input "
                            f"and its output would be empty")

    maps = ("conv", "maxpool", "avgpool", "lrn", "gap", "gmp", "adaptive_avg", "affine") + S.COMPOSITES
    if kind in maps and len(in_shape) != 3:
        raise S.SpecError(f"{name} ({kind}) needs a feature map, got shape {in_shape}")
    if kind in S.COMPOSITES:
        return _composite_info(name, layer, in_shape)
    if kind == "conv":
        c, (kh, kw), ho, wo = _window(layer, in_shape)
        if ho < 1 or wo < 1:
            too_small()
        params = layer.out * c * kh * kw + (layer.out if layer.bias else 0)
        params += (2 if layer.scale else 1) * layer.out if layer.norm == "bn" else 0
        return [LayerInfo(name, kind, in_shape, (layer.out, ho, wo), params,
                          layer.out * ho * wo * c * kh * kw)]
    if kind in ("maxpool", "avgpool"):
        (kh, kw), (ph, pw) = S.pair(layer.kernel), S.pair(layer.padding)
        if 2 * ph > kh or 2 * pw > kw:
            raise S.SpecError(f"{name}: pool padding must be at most half the kernel")
        c, _, ho, wo = _window(layer, in_shape)
        if ho < 1 or wo < 1:
            too_small()
        return [LayerInfo(name, kind, in_shape, (c, ho, wo), 0, 0)]
    if kind == "adaptive_avg":
        h, w = S.pair(layer.size)
        return [LayerInfo(name, kind, in_shape, (in_shape[0], h, w), 0, 0)]
    if kind == "affine":
        if len(layer.scale) != in_shape[0] or len(layer.shift) != in_shape[0]:
            raise S.SpecError(f"{name}: an affine transform of {in_shape[0]} channels needs "
                              f"{in_shape[0]} scales and shifts")
        return [LayerInfo(name, kind, in_shape, in_shape, 0, 0)]
    if kind == "lrn":
        return [LayerInfo(name, kind, in_shape, in_shape, 0, 0)]
    if kind in ("gap", "gmp"):
        return [LayerInfo(name, kind, in_shape, (in_shape[0], 1, 1), 0, 0)]
    if kind == "flatten":
        n = 1
        for d in in_shape:
            n *= d
        return [LayerInfo(name, kind, in_shape, (n,), 0, 0)]
    if kind == "dropout":
        return [LayerInfo(name, kind, in_shape, in_shape, 0, 0)]
    if kind == "dense":
        if len(in_shape) != 1:
            raise S.SpecError(f"{name} (dense) needs a flat input, got shape {in_shape}; add Flatten()")
        f = in_shape[0]
        return [LayerInfo(name, kind, in_shape, (layer.out,), f * layer.out + (layer.out if layer.bias else 0),
                          f * layer.out)]
    raise S.SpecError(f"{name}: unknown layer kind {kind!r}")


def _input_shape(spec: S.Spec, input_size) -> Shape:
    if input_size is None:
        input_size = spec.input_size
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    return (spec.in_channels,) + tuple(input_size)


def analyze(spec: Union[S.Spec, str, None] = None, input_size=None) -> Analysis:
    """Shapes, parameters and multiply-adds of every block, layer, stage and aux head."""
    spec = S.get_spec(spec) if not isinstance(spec, S.Spec) else spec
    shape = _input_shape(spec, input_size)
    in_shape = shape
    blocks, layers, stages, taps = [], [], OrderedDict(), {}
    for st in spec.stages:
        st_in, params, macs = shape, 0, 0
        for name, layer in st.layers:
            rows = layer_info(f"{st.name}.{name}", layer, shape)
            block = rows[-1]
            blocks.append(block)
            layers.extend(rows[:-1] if layer.kind in S.COMPOSITES else rows)
            shape = block.out_shape
            taps[block.name] = shape
            params += block.params
            macs += block.macs
        stages[st.name] = LayerInfo(st.name, "stage", st_in, shape, params, macs)
    aux = OrderedDict()
    for head in spec.aux:
        a_shape, a_in, params, macs = taps[head.tap], taps[head.tap], 0, 0
        for name, layer in head.layers:
            rows = layer_info(f"{head.name}.{name}", layer, a_shape)
            row = rows[-1]
            layers.extend(rows[:-1] if layer.kind in S.COMPOSITES else rows)
            a_shape, params, macs = row.out_shape, params + row.params, macs + row.macs
        aux[head.name] = LayerInfo(head.name, "aux", a_in, a_shape, params, macs)
    return Analysis(spec, in_shape, blocks, layers, stages, aux)


def min_input_size(spec: Union[S.Spec, str, None] = None, limit: int = 1024) -> int:
    """The smallest square input size the table accepts (aux heads included)."""
    spec = S.get_spec(spec) if not isinstance(spec, S.Spec) else spec
    found = fitting_sizes(spec, range(1, limit + 1), 1)
    if not found:
        raise InputTooSmall(f"no input up to {limit}x{limit} fits the table {spec.name!r}")
    return found[0]


def fitting_sizes(spec: S.Spec, sizes, count: int):
    """The first ``count`` of ``sizes`` (in their order) that the table takes."""
    return [n for n in sizes if _fits(spec, n)][:count] if count else []


def sizes_that_fit(spec: S.Spec, near: int, count: int = 2):
    """The input sizes nearest ``near`` (below, then above) that the table takes."""
    return sorted(fitting_sizes(spec, range(near - 1, 0, -1), count)
                  + fitting_sizes(spec, range(near + 1, near + 256), count))


def _fits(spec, n):
    try:
        analyze(spec, n)
        return True
    except InputSizeError:
        return False


def check_input(spec: S.Spec, input_size) -> Analysis:
    """:func:`analyze`, with an error that names the minimum size if the input is too small,
    and which part of the net sets it: the main path, or the auxiliary heads (whose dense
    layer after a 5x5 pooling needs a bigger map than the main path), with the way out."""
    try:
        return analyze(spec, input_size)
    except BranchesMisaligned as e:
        size = input_size if isinstance(input_size, int) else spec.input_size
        fits = sizes_that_fit(spec, size) if isinstance(size, int) else []
        raise BranchesMisaligned(f"input size {input_size} does not fit the table {spec.name!r}: {e}. "
                                 f"Sizes near it that fit: {', '.join(map(str, fits)) or 'none'} "
                                 f"(use --resize)") from None
    except InputTooSmall as e:
        smallest = min_input_size(spec)
        main = dataclasses.replace(spec, aux=()) if spec.aux else None
        try:
            main_path_fits = main is not None and bool(analyze(main, input_size))
        except InputTooSmall:
            main_path_fits = False
        if main_path_fits:
            without = min_input_size(main)
            raise InputTooSmall(
                f"input size {input_size} is too small for the auxiliary heads of the table "
                f"{spec.name!r}: {e}. The smallest input it accepts is {smallest}x{smallest}, a limit "
                f"set by the auxiliary heads, not the main path: without them (--no-aux; "
                f"aux_logits=False in Python) the net takes {without}x{without} and up. Use "
                f"--resize {smallest} or more, or turn the aux heads off.") from None
        raise InputTooSmall(f"input size {input_size} is too small for the main path of the table "
                            f"{spec.name!r}: {e}. The smallest input it accepts is {smallest}x{smallest}"
                            + (" (with or without the auxiliary heads)" if spec.aux else "") + ".") from None


def param_shapes(spec: S.Spec, input_size=None) -> "OrderedDict[str, Shape]":
    """Canonical names and shapes of every tensor of the framework-neutral weight file.

    Convs: ``NAME.weight`` (O, I, kH, kW) and ``NAME.bias`` (O,); batch norm after a conv:
    ``NAME.bn.weight``, ``NAME.bn.bias``, ``NAME.bn.running_mean``, ``NAME.bn.running_var``
    (all (O,)); dense: ``NAME.weight`` (out, in) and ``NAME.bias`` (out,).
    """
    a = analyze(spec, input_size)
    records = dict(S.iter_param_layers(spec))
    shapes = OrderedDict()
    for row in a.layers:
        if row.kind == "conv":
            layer = records[row.name]
            shapes[f"{row.name}.weight"] = (row.out_shape[0], row.in_shape[0]) + S.pair(layer.kernel)
            if layer.bias:
                shapes[f"{row.name}.bias"] = (row.out_shape[0],)
            if layer.norm == "bn":
                for t in bn_tensors(layer):
                    shapes[f"{row.name}.bn.{t}"] = (row.out_shape[0],)
        elif row.kind == "dense":
            layer = records[row.name]
            shapes[f"{row.name}.weight"] = (row.out_shape[0], row.in_shape[0])
            if layer.bias:
                shapes[f"{row.name}.bias"] = (row.out_shape[0],)
    return shapes


def bn_statistics(spec: S.Spec, input_size=None) -> int:
    """Batch-norm running means and variances of the table (aux heads included): the
    non-trainable parameters Keras, Paddle and Gluon count and torchvision does not."""
    return sum(shape[0] for name, shape in param_shapes(spec, input_size).items()
               if name.endswith((".running_mean", ".running_var")))


def bn_tensors(layer):
    """The batch-norm tensors of a conv record in the weight file: scale (unless
    ``scale=False``: fixed at 1, not stored), shift, running mean, running variance."""
    return ("weight",) * bool(layer.scale) + ("bias", "running_mean", "running_var")

