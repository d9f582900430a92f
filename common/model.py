"""Framework-free walking of a table: the forward order, aux taps, stage taps, summary rows.

Each backend builds one framework layer per block of the table and then calls
:func:`run` from its own forward method with two small callables, so the order of
blocks, the auxiliary taps and the outputs are written once, here.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Iterable

from . import oracle
from .spec import Spec, iter_blocks, outputs_type


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


def construct(spec: Spec, input_size, primitive: Callable, concat: Callable, chain: Callable):
    """Build one framework module per block of the table, walking it once for every backend.

    ``primitive(layer, qname, in_shape)`` makes the module of a primitive record (its input
    shape, canonical (C, H, W) / (F,), read off the oracle so that no shape is deferred);
    ``concat(qname, branches)`` runs branch modules on one input and concatenates their
    channels (an Inception block); ``chain(qname, modules)`` runs modules in sequence.
    Returns ordered dicts: ``blocks`` (qualified block name -> module), ``aux`` (head name ->
    module) and ``param_layers`` (qualified name -> the module of each conv / dense record,
    the keys of the weight file).
    """
    analysis = oracle.check_input(spec, input_size)
    in_shapes = {r.name: r.in_shape for r in analysis.layers + analysis.blocks}
    param_layers = OrderedDict()

    def make(qname, layer):
        if layer.kind == "inception":
            return concat(qname, [chain(f"{qname}.branch{i + 1}",
                                        [make(f"{qname}.{name}", sub) for name, sub in branch])
                                  for i, branch in enumerate(layer.branches())])
        module = primitive(layer, qname, in_shapes[qname])
        if layer.kind in ("conv", "dense"):
            param_layers[qname] = module
        return module

    blocks = OrderedDict((q, make(q, layer)) for _, q, layer in iter_blocks(spec))
    aux = OrderedDict((h.name, chain(h.name, [make(f"{h.name}.{n}", layer) for n, layer in h.layers]))
                      for h in spec.aux)
    return blocks, aux, param_layers
