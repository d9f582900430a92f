"""Everything about a network that is not a framework call, written once for all backends.

* :func:`construct` walks the table and builds one framework module per block from a
  backend's table of layer constructors (record kind -> constructor);
* :func:`run` is the forward order, with the auxiliary taps and the stage taps;
* :func:`layer_table` measures the summary rows on a built network;
* :class:`NetAPI` is the public model API of every backend (``build``, ``forward``,
  ``stage_outputs``, ``features``, ``layer_table``, ``count_params``, ``get_weights``,
  ``set_weights``, ``init_weights``) over a handful of framework calls that each backend
  passes in; :class:`WeightNames` says where a framework keeps each tensor of the
  framework-neutral weight file;
* :func:`places` and :func:`from_native` read a framework's own weight file into canonical
  names and layouts without building a network: each backend says only how it names the
  module at a :class:`Place` (its ``read_native``).
"""
from __future__ import annotations

import contextlib

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional, Tuple

import numpy as np

from . import oracle, weights as W
from .spec import (Spec, SpecError, block_of, composite, get_spec, iter_blocks, iter_param_layers, outputs_type,
                   sequences, walk)


def run(spec: Spec, call_block: Callable, call_aux: Callable, X, training: bool = False,
        collect: Iterable[str] = ()):
    """Forward ``X`` through the table.

    ``call_block(qualified_block_name, X)`` runs one block; ``call_aux(head_name, X)`` runs
    an aux head on its tap.  Returns the logits; in training mode with aux heads, the
    named tuple ``(logits, aux2, aux1)``; with ``collect`` (stage names such as ``'b3'``
    and/or block names such as ``'b4.inception4a'``), an ordered dict of those outputs.
    """
    collect = set(collect)
    taps = {h.tap: h.name for h in spec.aux} if training else {}
    aux_out, collected = {}, OrderedDict()
    for st in spec.stages:
        for name, _ in st.layers:
            qname = f"{st.name}.{name}"
            X = call_block(qname, X)
            if qname in taps:
                aux_out[taps[qname]] = call_aux(taps[qname], X)
            if qname in collect:
                collected[qname] = X
        if st.name in collect:
            collected[st.name] = X
    if collect:
        return collected
    if taps:
        return outputs_type(spec)(X, *(aux_out[h.name] for h in reversed(spec.aux)))
    return X


def layer_table(spec: Spec, call_block: Callable, call_aux: Callable, X, shape_of: Callable,
                params_of: Callable, input_size=None):
    """Summary rows measured on a built network.

    Runs ``X`` block by block; ``shape_of(tensor)`` gives the canonical (C, H, W) / (F,)
    shape of one example, ``params_of(name)`` the trainable parameters of a block or aux
    head as the framework counts them.  Multiply-adds come from the oracle for the
    measured shapes.  Each row: ``name, kind, out_shape, params, macs`` (blocks, then aux
    heads), and stage rows with ``kind='stage'``.
    """
    analysis = oracle.analyze(spec, input_size)
    macs = {b.name: b.macs for b in analysis.blocks}
    macs.update({a: r.macs for a, r in analysis.aux.items()})
    kinds = {q: layer.kind for _, q, layer in iter_blocks(spec)}
    rows, taps = [], {}
    for st in spec.stages:
        start = len(rows)
        for name, _ in st.layers:
            qname = f"{st.name}.{name}"
            X = call_block(qname, X)
            taps[qname] = X
            rows.append(dict(name=qname, kind=kinds[qname], out_shape=tuple(shape_of(X)),
                             params=int(params_of(qname)), macs=macs[qname]))
        rows.append(dict(name=st.name, kind="stage", out_shape=tuple(shape_of(X)),
                         params=sum(r["params"] for r in rows[start:]),
                         macs=sum(r["macs"] for r in rows[start:])))
    for h in spec.aux:
        out = call_aux(h.name, taps[h.tap])
        rows.append(dict(name=h.name, kind="aux", out_shape=tuple(shape_of(out)),
                         params=int(params_of(h.name)), macs=macs[h.name]))
    return rows


def construct(spec: Spec, input_size, layers: Mapping[str, Callable], concat: Callable, chain: Callable,
              residual: Optional[Callable] = None):
    """Build one framework module per block of the table, walking it once for every backend.

    ``layers`` is the backend's table of constructors, record kind -> ``make(layer,
    in_shape, name)`` (``in_shape`` canonical (C, H, W) / (F,), read off the oracle so that
    no shape is deferred; ``name`` the qualified name, for frameworks that name layers);
    ``concat(qname, branches, act)`` runs branch modules on one input, concatenates their
    channels and applies ``act`` (``'relu'`` or ``None``): a :class:`~common.net.spec.Concat`
    or an Inception block; ``residual(qname, body, scale, act)`` computes ``act(x + scale *
    body(x))``; ``chain(qname, modules)`` runs modules in sequence.
    Returns ordered dicts: ``blocks`` (qualified block name -> module), ``aux`` (head name ->
    module) and ``param_layers`` (qualified name -> the module of each conv / dense record,
    the keys of the weight file).
    """
    analysis = oracle.check_input(spec, input_size)
    in_shapes = {r.name: r.in_shape for r in analysis.layers + analysis.blocks}
    param_layers = OrderedDict()

    def make(qname, layer):
        c = composite(layer)
        if c is not None:
            block = block_of(qname)
            seqs = [chain(f"{qname}.branch{i + 1}", [make(f"{block}.{name}", sub) for name, sub in seq])
                    for i, seq in enumerate(sequences(c))]
            if c.kind == "concat":
                return concat(qname, seqs, c.act)
            if residual is None:
                raise SpecError(f"{qname}: this backend has no residual block")
            return residual(qname, seqs[0], c.scale, c.act)
        if layer.kind not in layers:
            raise SpecError(f"{qname}: this backend has no layer for the record kind {layer.kind!r}")
        module = layers[layer.kind](layer, in_shapes[qname], qname)
        if layer.kind in ("conv", "dense"):
            param_layers[qname] = module
        return module

    blocks = OrderedDict((q, make(q, layer)) for _, q, layer in iter_blocks(spec))
    aux = OrderedDict((h.name, chain(h.name, [make(f"{h.name}.{n}", layer) for n, layer in h.layers]))
                      for h in spec.aux)
    return blocks, aux, param_layers


# --------------------------------------------------------------------------- weight names
@dataclass(frozen=True)
class WeightNames:
    """Where a framework keeps the tensors of the weight file, and in which layout.

    Every backend's conv module holds ``conv`` (and ``bn`` with batch norm), its dense
    module ``linear``; this record names the framework's attributes on those layers
    (``weight``/``bias``; batch norm's scale, shift, running mean, running variance)
    and the axes that take a canonical weight (conv OIHW, dense (out, in)) to the
    framework's layout (``None``: the same layout).
    """
    weight: str = "weight"
    bias: str = "bias"
    bn: Tuple[str, str, str, str] = ("weight", "bias", "running_mean", "running_var")
    conv_axes: Optional[Tuple[int, ...]] = None
    dense_axes: Optional[Tuple[int, ...]] = None

    #: tensors a framework keeps on a batch-norm layer that the weight file does not carry
    #: (PyTorch's ``num_batches_tracked``): accepted in its own files and dropped
    bn_extra: Tuple[str, ...] = ()

    def where(self, kind: str, role: str):
        """(sub-module ``'conv'``/``'bn'``/``'linear'``, attribute, axes) of canonical tensor
        ``role`` (``'weight'``, ``'bias'``, ``'bn.running_var'`` ...) of a conv / dense module."""
        if role.startswith("bn."):
            return "bn", self.bn[BN_ROLES.index(role[3:])], None
        axes = (self.conv_axes if kind == "conv" else self.dense_axes) if role == "weight" else None
        return ("conv" if kind == "conv" else "linear"), (self.weight if role == "weight" else self.bias), axes

    def locate(self, module, kind: str, role: str):
        """(owning layer, attribute, axes) of canonical tensor ``role`` of a conv / dense module."""
        sub, attr, axes = self.where(kind, role)
        return getattr(module, sub), attr, axes


BN_ROLES = ("weight", "bias", "running_mean", "running_var")


def split_name(name: str) -> Tuple[str, str]:
    """A canonical tensor name as (qualified layer name, role): ``b2.conv2.bn.weight`` ->
    (``b2.conv2``, ``bn.weight``); ``head.fc.bias`` -> (``head.fc``, ``bias``)."""
    if ".bn." in name:
        qname, rest = name.rsplit(".bn.", 1)
        return qname, "bn." + rest
    return tuple(name.rsplit(".", 1))


# --------------------------------------------------------------------------- native files
@dataclass(frozen=True)
class Place:
    """Where :func:`construct` puts the module of a conv / dense record: what a framework's
    own weight file names it by.  ``qname`` is the table's name (``b3.inception3a.p2_2``);
    a block of a stage has ``stage`` and ``block`` (``'b3'``, ``'inception3a'``); a layer of
    an aux head has ``head`` and ``step`` (its position in the head, from 0).  Inside a
    composite, ``path`` holds the ``(branch, step)`` pairs (from 0) that lead to the layer
    through each level of composites (one pair in an Inception block, two in Inception v3's
    split branches); ``branch`` and ``step`` are then the innermost pair.  ``index``
    counts the records of the same kind before it, in construction order (blocks in forward
    order, aux heads last)."""
    qname: str
    kind: str
    stage: Optional[str] = None
    block: Optional[str] = None
    branch: Optional[int] = None
    step: Optional[int] = None
    head: Optional[str] = None
    index: int = 0
    path: Tuple[Tuple[int, int], ...] = ()
    scale: bool = True          # a conv's batch norm learns a scale (False: Keras's scale=False)


def places(spec: Spec) -> "OrderedDict[str, Place]":
    """The :class:`Place` of every conv / dense record of the table, in construction order."""
    out, counts = OrderedDict(), {}

    def add(qname, layer, path, **where):
        if layer.kind in ("conv", "dense"):
            inner = dict(branch=path[-1][0], step=path[-1][1]) if path and "head" not in where else {}
            out[qname] = Place(qname, layer.kind, index=counts.get(layer.kind, 0), path=path,
                               scale=getattr(layer, "scale", True), **dict(where, **inner))
            counts[layer.kind] = counts.get(layer.kind, 0) + 1

    for st in spec.stages:
        for name, layer in st.layers:
            for qname, sub, path in walk(f"{st.name}.{name}", layer):
                add(qname, sub, path, stage=st.name, block=name)
    for h in spec.aux:
        for j, (name, layer) in enumerate(h.layers):
            for qname, sub, path in walk(f"{h.name}.{name}", layer):
                add(qname, sub, path, head=h.name, step=j)
    return out


def module_key(place: Place, sub: str, attr: str, *, aux="aux.{head}.{step}",
               block="stages.{stage}.{block}", branch=".branches.{branch}.{step}") -> str:
    """The key of a tensor in a framework's own file where the network registers its modules
    by the paths of :func:`construct`: the module's path from the templates (``aux`` for an
    aux head's layer, ``block`` for a block of a stage, + ``branch`` for each level of
    composites on the layer's ``path``; fields: the :class:`Place`'s, and ``branch1``, the
    branch counted from 1), then ``.<sub>.<attr>``.  The defaults are PyTorch's and Paddle's
    ``state_dict`` keys (``stages.b3.inception3a.branches.1.0.conv.weight``,
    ``aux.aux1.1.linear.bias``)."""
    fields = dict(vars(place))
    module = aux.format(**fields) if place.head is not None else block.format(**fields)
    for b, step in place.path:
        module += branch.format(**dict(fields, branch=b, branch1=b + 1, step=step))
    return f"{module}.{sub}.{attr}"


def native_names(spec: Spec, names: WeightNames, key: Callable, input_size=None) -> "OrderedDict[str, tuple]":
    """Canonical tensor name -> (its key in the framework's own file, axes from canonical to
    the file's layout).  ``key(place, sub, attr)`` is the backend's naming rule: the key of
    attribute ``attr`` of sub-module ``sub`` (``'conv'``, ``'bn'``, ``'linear'``) of the
    module at ``place``."""
    where = places(spec)
    out = OrderedDict()
    for name in oracle.param_shapes(spec, input_size):
        qname, role = split_name(name)
        sub, attr, axes = names.where(where[qname].kind, role)
        out[name] = (key(where[qname], sub, attr), axes)
    return out


def from_native(spec: Spec, names: WeightNames, key: Callable, tensors: Mapping[str, np.ndarray],
                input_size=None) -> "OrderedDict[str, np.ndarray]":
    """A framework's own file's tensors (its key -> array) as canonical names and layouts.

    Tensors are renamed by :func:`native_names` and transposed to the canonical layout; the
    framework's own extras (``names.bn_extra``) are dropped; any other tensor keeps its key
    in the file, so that :func:`common.net.weights.check` refuses it as not part of the network.
    A tensor whose number of axes is wrong keeps the file's layout (``check`` refuses its
    shape).  Nothing is checked here: pass the result to ``check`` (``common.net.weights.read``
    and ``set_weights`` do).
    """
    out, used = OrderedDict(), set()
    for name, (k, axes) in native_names(spec, names, key, input_size).items():
        if k in tensors:
            a = np.asarray(tensors[k])
            out[name] = a.transpose(np.argsort(axes)) if axes and a.ndim == len(axes) else a
            used.add(k)
    records = dict(iter_param_layers(spec))
    for place in places(spec).values():
        layer = records[place.qname]
        if place.kind == "conv" and layer.norm == "bn":
            # the framework's own extras, and a scale the table fixes at 1 (scale=False) where the
            # framework keeps one anyway: part of its file, not of the weight file
            extras = names.bn_extra + (() if layer.scale else (names.bn[0],))
            used.update(key(place, "bn", extra) for extra in extras)
    for k, a in tensors.items():
        if k not in used:
            out[k if k not in out else f"{k} (a key of the file)"] = a
    return out


# --------------------------------------------------------------------------- the public API
class NetAPI:
    """The public model functions of a backend, written once over its framework calls.

    A backend passes only what calls its framework:

    * ``new(spec, input_size)``: a new network on the device, every parameter created,
      in evaluation mode; the network has ``spec``, ``input_size``, ``param_layers``,
      ``block(qname)``, ``aux`` and the methods ``call_block(qname, X)`` and
      ``call_aux(name, X)`` (evaluation mode unless the framework's mode says otherwise);
    * ``call(net, X, training)``: the network's output on a device batch, in that mode;
    * ``evaluating(net)``: a context manager for evaluation mode without gradients;
    * ``count(module)``: trainable parameters of a module, as the framework counts them;
    * ``to_tensor`` / ``to_canonical``: NumPy NCHW to a device batch, and a device tensor
      back to NumPy in canonical order (NCHW maps, (N, F) features);
    * ``names`` (:class:`WeightNames`), ``read(tensor)`` and ``write(tensor, array)`` for
      the weight file.

    Its methods are the backend's public functions (``backends.<name>.build`` is
    ``api.build``), so their documentation and their behaviour are the same for all four.
    """

    def __init__(self, *, new, call, evaluating, count, to_tensor, to_canonical, names, read, write):
        self._new, self._call, self._evaluating, self._count = new, call, evaluating, count
        self._to_tensor, self._to_canonical = to_tensor, to_canonical
        self.names, self._read, self._write = names, read, write

    # ----------------------------------------------------------------- building
    def build(self, spec="d2l", *, input_size=None, seed=0, weights=None, world=None, **options):
        """Build GoogLeNet from a table on the backend's device, in evaluation mode.

        Args:
            spec: a preset name (``'d2l'``, ``'paper'``, ``'bn'``) or a :class:`~common.net.spec.Spec`.
            input_size: square input size (default: the table's, 96 for ``d2l``); needed
                because dense layers after a flatten take their width from it.
            seed: seed of the recipe's initialisation (Xavier-uniform weights, zero biases),
                identical on every backend; ``None`` keeps the framework's default initialisers.
            weights: a weight-file dict to load instead (:meth:`set_weights`; ``seed`` is then
                ignored).
            world: the :class:`common.train.distributed.World` of a data-parallel run: the network
                is created in its engine's scope (where the engine needs one for its variables).
            **options: preset keywords (``in_channels``, ``num_classes``, ``aux_logits``, ...).
        """
        spec = get_spec(spec, **options)
        with world.scope() if world is not None else contextlib.nullcontext():
            net = self._new(spec, input_size or spec.input_size)
            if weights is not None:
                self.set_weights(net, weights)
            elif seed is not None:
                self.init_weights(net, seed)
        return net

    def count_params(self, net) -> int:
        """Trainable parameters, as the framework counts them (all heads included, batch-norm
        running statistics excluded)."""
        return int(self._count(net))

    def _module(self, net, name):
        return net.aux[name] if name in net.aux else net.block(name)

    # ----------------------------------------------------------------- running
    def _numpy(self, out):
        return type(out)(*map(self._to_canonical, out)) if isinstance(out, tuple) else self._to_canonical(out)

    def forward(self, net, X, training=False):
        """Logits for a NumPy NCHW batch (or a device batch), as NumPy; in training mode with
        aux heads the named tuple ``(logits, aux2, aux1)``; a feature map
        (``include_top=False, pooling=None``) comes back NCHW."""
        return self._numpy(self._call(net, self._to_tensor(X), training))

    def _collect(self, net, X, names):
        if not names:
            return OrderedDict()
        with self._evaluating(net):
            outs = run(net.spec, net.call_block, net.call_aux, self._to_tensor(X), collect=names)
        return OrderedDict((k, self._to_canonical(v)) for k, v in outs.items())

    def stage_outputs(self, net, X):
        """Every stage's output (evaluation mode) as NumPy, canonical NCHW / (N, F)."""
        return self._collect(net, X, net.spec.stage_names())

    def features(self, net, X):
        """The named taps of the table (3b, 4a, 4d, 5b for GoogLeNet) as NumPy NCHW."""
        return self._collect(net, X, net.spec.features)

    def aux_outputs(self, net, X):
        """The auxiliary heads' logits in evaluation mode (each head on its tapped block), as an
        ordered dict of NumPy arrays by head name (``{}`` for a table without aux heads): what
        Paddle's zoo models return beside the logits in every mode."""
        if not net.spec.aux:
            return OrderedDict()
        with self._evaluating(net):
            taps = run(net.spec, net.call_block, net.call_aux, self._to_tensor(X),
                       collect=[h.tap for h in net.spec.aux])
            return OrderedDict((h.name, self._to_canonical(net.call_aux(h.name, taps[h.tap])))
                               for h in net.spec.aux)

    def layer_table(self, net, input_size=None):
        """Per-block rows (name, kind, out_shape, params, macs) measured on the built network
        (see :func:`common.net.model.layer_table`)."""
        s = net.input_size
        X = self._to_tensor(np.zeros((1, net.spec.in_channels, s, s), np.float32))
        with self._evaluating(net):
            return layer_table(net.spec, net.call_block, net.call_aux, X,
                               lambda t: self._to_canonical(t).shape[1:],
                               lambda n: self._count(self._module(net, n)), s)

    # ----------------------------------------------------------------- weights
    def tensors(self, net) -> "OrderedDict[str, tuple]":
        """Canonical name -> (framework tensor, axes from canonical to framework layout)."""
        records = dict(iter_param_layers(net.spec))
        out = OrderedDict()
        for name in oracle.param_shapes(net.spec, net.input_size):
            qname, role = split_name(name)
            owner, attr, axes = self.names.locate(net.param_layers[qname], records[qname].kind, role)
            out[name] = (getattr(owner, attr), axes)
        return out

    def get_weights(self, net):
        """All tensors in canonical names and layouts (conv OIHW, dense (out, in)), as NumPy."""
        return OrderedDict((k, np.array(self._read(t).transpose(np.argsort(axes)) if axes else self._read(t),
                                        dtype=np.float32, order="C", copy=True))
                           for k, (t, axes) in self.tensors(net).items())

    def set_weights(self, net, weights):
        """Load canonical weights; checked in full first (:func:`common.net.weights.check`), so a
        mismatch raises ``WeightsError`` naming the first bad layer and nothing is half-loaded."""
        weights = W.check(net.spec, weights, net.input_size)
        for name, (t, axes) in self.tensors(net).items():
            w = weights[name]
            self._write(t, np.ascontiguousarray(w.transpose(axes) if axes else w))
        return net

    def init_weights(self, net, seed=0):
        """The recipe's initialisation (see :func:`common.net.weights.xavier_init`)."""
        return self.set_weights(net, W.xavier_init(net.spec, seed, net.input_size))
