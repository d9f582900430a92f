"""Fine-tuning: start from another task's weights, replace the classifier, freeze the body.

Framework-free; the backends' ``Trainer`` applies what is decided here (docs/finetune.md).

* :func:`start_weights` takes a weight file's tensors (canonical names, any format, not yet
  checked) for a network whose classes may differ from the file's: each classifier (the
  last stage's last dense layer, and each aux head's last dense layer) whose number of
  outputs differs from the file's (or that the file lacks: a file without its top) is
  re-initialised with the recipe's initialisation (:func:`common.net.weights.xavier_init`,
  seeded: the very arrays a run from scratch would start that layer with); every other
  tensor is the file's, and the whole is checked by :func:`common.net.weights.check`, so a
  body that does not fit is refused as before.  The aux heads are kept, dropped or
  re-initialised (``aux``).
* The network's **body** is every stage but the last; its **head** is the last stage and the
  aux heads.  ``freeze`` (``'none'``, ``'body'`` or ``'upto:STAGE'``) names stages of the body
  whose parameters are not trained and whose batch norms stay in inference mode (they use
  and keep their running statistics); ``body_lr_factor`` scales the learning rate of the
  body's other parameters (the head's is the schedule's).  :func:`roles` says which tensor
  is which, :func:`frozen_layers` which layers' batch norms to hold.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..net import oracle, weights as W
from ..net.model import split_name
from ..net.spec import Dense, SpecError, iter_param_layers

__all__ = ["FreezeError", "AUX_INIT", "normalize_freeze", "frozen_stages", "body_stages", "classifiers",
           "roles", "frozen_layers", "start_weights", "Start", "plan_line"]

#: what ``--aux-init`` does with the file's aux heads
AUX_INIT = ("keep", "drop", "reinit")
#: the names ``freeze`` accepts for "every stage but the last"
BODY = ("body", "features")


class FreezeError(SpecError):
    """A ``freeze`` that does not fit the table (an unknown stage, the head, nothing left to train)."""


def normalize_freeze(text: Optional[str]) -> str:
    """``'none'``, ``'body'`` or ``'upto:STAGE'`` (``None``/``''`` -> ``'none'``; ``'features'`` ->
    ``'body'``); the syntax only (:func:`frozen_stages` checks it against a table)."""
    text = (text or "none").strip()
    if text.lower() in ("none", "no", "off"):
        return "none"
    if text.lower() in BODY:
        return "body"
    if text.startswith("upto:") and text[5:].strip():
        return "upto:" + text[5:].strip()
    raise FreezeError(f"--freeze takes none, body (or features: every stage but the last) or "
                      f"upto:STAGE (that stage and those before it), not {text!r}")


def body_stages(spec) -> List[str]:
    """The stages of the body: all but the last (the head: pooling, dropout, classifier)."""
    return [s.name for s in spec.stages[:-1]]


def frozen_stages(spec, freeze) -> Tuple[str, ...]:
    """The stages ``freeze`` holds, checked against the table (:class:`FreezeError`)."""
    freeze = normalize_freeze(freeze)
    body = body_stages(spec)
    if freeze == "none":
        return ()
    if freeze == "body":
        return tuple(body)
    stage = freeze[5:]
    if stage not in body:
        last = spec.stages[-1].name
        why = (f"{stage!r} is the head, which is what fine-tuning trains" if stage == last
               else f"the network has no stage {stage!r}")
        raise FreezeError(f"--freeze {freeze}: {why}; its body's stages are {', '.join(body)}")
    return tuple(body[:body.index(stage) + 1])


def classifiers(spec) -> List[str]:
    """The qualified names of the classifiers: the last stage's last dense layer (none for a
    headless table) and each aux head's last dense layer."""
    out = []
    last = spec.stages[-1]
    for name, layer in reversed(last.layers):
        if isinstance(layer, Dense):
            out.append(f"{last.name}.{name}")
            break
    for head in spec.aux:
        dense = [n for n, layer in head.layers if isinstance(layer, Dense)]
        if dense:
            out.append(f"{head.name}.{dense[-1]}")
    return out


def roles(spec, freeze="none", input_size=None) -> "OrderedDict[str, str]":
    """Every tensor of the weight file -> ``'frozen'``, ``'body'`` or ``'head'`` (aux heads are
    head).  A tensor's stage (or aux head) is the first part of its name."""
    frozen, body = set(frozen_stages(spec, freeze)), set(body_stages(spec))
    out = OrderedDict()
    for name in oracle.param_shapes(spec, input_size):
        first = name.split(".")[0]
        out[name] = "frozen" if first in frozen else "body" if first in body else "head"
    return out


def frozen_layers(spec, freeze="none") -> List[str]:
    """The qualified names of the conv and dense layers in the frozen stages (their batch
    norms stay in inference mode)."""
    frozen = set(frozen_stages(spec, freeze))
    return [q for q, layer in iter_param_layers(spec, include_aux=False)
            if layer.kind in ("conv", "dense") and q.split(".")[0] in frozen]


def check_trainable(spec, freeze, body_lr_factor) -> None:
    """Refuse a ``freeze`` the table does not have (:func:`frozen_stages`), a fine-tuning
    set-up that trains nothing, and a negative factor."""
    frozen_stages(spec, freeze)
    if not body_lr_factor >= 0:
        raise FreezeError(f"--body-lr-factor must be 0 or more (0: the body does not move), "
                          f"not {body_lr_factor}")
    if frozen_stages(spec, freeze) and not classifiers(spec) and not spec.aux:
        raise FreezeError(f"--freeze {normalize_freeze(freeze)}: the {spec.name} net has no "
                          f"classifier, so nothing would be trained")


def plan_line(spec, freeze="none", body_lr_factor=1.0, input_size=None) -> Optional[str]:
    """One line saying what trains, or None when everything trains at the schedule's rate."""
    freeze = normalize_freeze(freeze)
    if freeze == "none" and body_lr_factor == 1:
        return None
    r = roles(spec, freeze, input_size)
    shapes = oracle.param_shapes(spec, input_size)

    def count(role):
        return sum(int(np.prod(shapes[k])) for k, v in r.items() if v == role and "running_" not in k)
    parts = []
    stages = frozen_stages(spec, freeze)
    if stages:
        bn = sum(1 for k in r if r[k] == "frozen" and k.endswith(".bn.running_mean"))
        parts.append(f"frozen: {', '.join(stages)} ({count('frozen'):,} parameters"
                     + (f"; their {bn} batch norms in inference mode" if bn else "") + ")")
    if count("body"):
        parts.append(f"body{' (the rest)' if stages else ''}: lr x {body_lr_factor:g} "
                     f"({count('body'):,} parameters)")
    heads = [spec.stages[-1].name] + [h.name for h in spec.aux]
    parts.append(f"trained at the schedule's lr: {', '.join(heads)} ({count('head'):,} parameters)")
    return "; ".join(parts)


# --------------------------------------------------------------------------- the start
@dataclass
class Start:
    """The checked weights to start from, and what was done to the file's to get them."""
    weights: "OrderedDict[str, np.ndarray]"
    #: (qualified layer, why) of every re-initialised layer, in table order
    reinitialised: List[Tuple[str, str]] = field(default_factory=list)
    #: the file's tensors left out (aux heads dropped or re-initialised)
    dropped: List[str] = field(default_factory=list)
    seed: int = 0

    def line(self, source: str) -> str:
        """One line for the user: which layers were re-initialised, what stayed the file's."""
        renewed = {q for q, _ in self.reinitialised}
        kept = sum(1 for k in self.weights if _layer(k) not in renewed and k.split(".")[0] not in renewed)
        if not self.reinitialised:
            said = f"every tensor is the file's ({kept})"
        else:
            said = (f"re-initialised {', '.join(f'{q} ({why})' for q, why in self.reinitialised)} with the "
                    f"recipe's initialisation (seed {self.seed}); the other {kept} tensors are the file's")
        gone = [k for k in self.dropped if k.split(".")[0] not in renewed]
        if gone:
            said += f"; left out the file's {len(gone)} tensors of {', '.join(_heads(gone))}"
        return f"{source}: {said}"

    def record(self) -> dict:
        return dict(reinitialised=[q for q, _ in self.reinitialised], seed=self.seed,
                    dropped=sorted(set(_heads(self.dropped))))


def _layer(name: str) -> str:
    return split_name(name)[0]


def _heads(names) -> List[str]:
    return list(OrderedDict.fromkeys(n.split(".")[0] for n in names))


def start_weights(spec, raw: Mapping[str, np.ndarray], input_size=None, *, seed: int = 0,
                  aux: str = "keep", aux_heads: Optional[Sequence[str]] = None,
                  allow_extra: bool = False) -> Start:
    """The weights to start a run of ``spec`` from, given a file's tensors ``raw`` (canonical
    names, unchecked: :func:`common.net.weights.load_any`, or a zoo reader's output).

    A classifier (:func:`classifiers`) whose file tensors have the network's input features
    but another number of outputs, or that the file lacks entirely, is re-initialised from
    ``xavier_init(spec, seed)``.  ``aux``: ``'keep'`` the file's aux heads (their
    classifiers as above), ``'reinit'`` them all (every layer of the heads, not only the
    classifier), ``'drop'`` leave the file's aux heads out (for a network built without
    them); ``aux_heads`` names the file's aux heads (default: the table's).  Everything
    else must fit: :func:`common.net.weights.check` raises ``WeightsMismatch`` naming the
    first tensor that does not, as for any weight file."""
    if aux not in AUX_INIT:
        raise ValueError(f"aux must be one of {AUX_INIT}, not {aux!r}")
    expected = oracle.param_shapes(spec, input_size)
    heads = set(aux_heads if aux_heads is not None else [h.name for h in spec.aux])
    merged = OrderedDict(raw)
    dropped = [k for k in merged if k.split(".")[0] in heads] if aux != "keep" else []
    for k in dropped:
        del merged[k]
    fresh = _Fresh(spec, seed, input_size)
    reinit = []
    renewed = {h.name for h in spec.aux} if aux == "reinit" else set()
    for q in classifiers(spec):
        why = None if q.split(".")[0] in renewed else _differs(q, merged, expected)
        if why:
            reinit.append((q, why))
            fresh.put(merged, [k for k in (f"{q}.weight", f"{q}.bias") if k in expected],
                      drop=(f"{q}.weight", f"{q}.bias"))
    for h in spec.aux:
        if h.name in renewed:
            reinit.append((h.name, "--aux-init reinit"))
            fresh.put(merged, [k for k in expected if k.split(".")[0] == h.name])
    return Start(W.check(spec, merged, input_size, allow_extra=allow_extra), reinit, dropped, seed)


class _Fresh:
    """The recipe's initialisation of a table, drawn once when first needed."""

    def __init__(self, spec, seed, input_size):
        self.args, self.values = (spec, seed, input_size), None

    def put(self, weights, names, drop=()):
        """Replace ``drop`` (removed) and ``names`` (set) in ``weights`` by fresh values."""
        if self.values is None:
            self.values = W.xavier_init(*self.args)
        for k in drop:
            weights.pop(k, None)
        for k in names:
            weights[k] = self.values[k]


def _differs(q, weights, expected) -> Optional[str]:
    """Why classifier ``q`` takes fresh weights (another number of classes, or none in the
    file), or None (the file's fit, or do not fit for another reason: ``check`` says so)."""
    w, b = weights.get(f"{q}.weight"), weights.get(f"{q}.bias")
    if w is None and b is None:
        return "not in the file"
    shape = expected[f"{q}.weight"]
    if w is None or np.ndim(w) != 2 or tuple(np.shape(w)[1:]) != tuple(shape[1:]):
        return None
    if np.shape(w)[0] == shape[0]:
        return None
    if b is not None and np.shape(b) != (np.shape(w)[0],):
        return None
    return f"{np.shape(w)[0]} -> {shape[0]} classes"
