"""``train.py``'s fine-tuning options (docs/finetune.md): what they change in the model, the
checks made before any data is read, the lines printed and what the run record keeps.  The
options themselves are :func:`cli.options.add_finetune_args`; the mechanics are
:mod:`common.train.finetune` and each backend's ``Trainer.apply_finetune``."""
from __future__ import annotations

import re

from common.net import oracle
from common.net.spec import SpecError
from common.train import finetune as FT

from .errors import UserError
from .options import spec_of


def model_for(args, model: dict) -> dict:
    """The model options of a new run with ``--aux-init`` applied (``drop``: no aux heads)."""
    aux = getattr(args, "aux_init", None)
    if aux and not getattr(args, "init_from", None):
        raise UserError(f"--aux-init {aux} says what to do with the aux heads of --init-from's file; "
                        f"without --init-from use --aux or --no-aux")
    if aux == "drop":
        if getattr(args, "aux_logits", None):
            raise UserError("--aux builds the aux heads that --aux-init drop leaves out: give one of them")
        model = dict(model, aux_logits=False)
    return model


def check_plan(model: dict, recipe) -> None:
    """``--freeze`` and ``--body-lr-factor`` against the table, before any data is read."""
    FT.check_trainable(spec_of(model), recipe.freeze, recipe.body_lr_factor)


def check_classes(args, model: dict, ds) -> None:
    """``--num-classes N``: the network's classes, which must be the data's."""
    n = getattr(args, "num_classes", None)
    if n is not None and n != model.get("num_classes"):
        classes = list(ds.classes)
        shown = ", ".join(classes[:6]) + (", ..." if len(classes) > 6 else "")
        raise UserError(f"--num-classes {n}: the data in {ds.info.get('dir') or 'the dataset'} have "
                        f"{len(classes)} classes ({shown}); the network's classifier takes the data's "
                        f"number, so drop --num-classes or give {len(classes)}")


def file_aux_heads(model: dict):
    """The aux heads a file of this preset may hold (left out by ``--aux-init drop``): the
    preset's with aux heads (none where the preset has none)."""
    try:
        return [h.name for h in spec_of(dict(model, aux_logits=True)).aux]
    except (SpecError, TypeError, ValueError):
        return [h.name for h in spec_of(model).aux]


def hint(error, model: dict) -> str:
    """What to try when ``--init-from``'s file does not fit: the aux heads' options when the
    first bad tensor is in an aux head, ``--channels`` when it is the first layer's input."""
    m = re.search(r"layer '([^']+)'(?:: shape \((\d+), (\d+),)?", str(error))
    if not m:
        return ""
    spec = spec_of(model)
    if m.group(1).split(".")[0] in file_aux_heads(model):
        if spec.aux:
            return "; --aux-init reinit starts the aux heads afresh, --aux-init drop trains without them"
        return "; --aux-init drop leaves the file's aux heads out"
    first = next(iter(oracle.param_shapes(spec, model.get("input_size"))), None)
    if m.group(1) == first and m.group(3) and int(m.group(3)) in (1, 3):
        return (f"; the file's first layer takes {m.group(3)} channel(s), the data have "
                f"{spec.in_channels}: --channels {m.group(3)} converts the pictures")
    return ""


def record_of(args, start) -> dict:
    """What the run record keeps about the start: ``aux_init`` and ``init`` (the layers
    re-initialised, the seed, the file's aux heads left out)."""
    if start is None:
        return {}
    return dict(aux_init=getattr(args, "aux_init", None) or "keep", init=start.record())


def lines(args, start, spec, recipe):
    """The lines a run prints about fine-tuning: the start (which layers were re-initialised)
    and what trains."""
    out = []
    if start is not None:
        out.append(start.line(f"--init-from {args.init_from}"))
    plan = FT.plan_line(spec, recipe.freeze, recipe.body_lr_factor, recipe.resize)
    if plan:
        out.append(plan)
    return out
