"""A run's checkpoints: written atomically after every epoch, the one before kept.

::

    RUN/checkpoint/        the last checkpoint: weights.npz, the optimiser's state, state.json
    RUN/checkpoint.prev/   the one before it

A checkpoint is written after every epoch and, with ``--checkpoint-every N``, every N
steps in the middle of an epoch (and when a signal stops the run, ``common/train/interrupt.py``).
A checkpoint in the middle of an epoch has ``step`` (the steps done in the epoch in
progress, ``epoch`` being the epochs finished), the epoch's running sums (``partial``) and
the framework's random generator (``rng``, dropout) in its ``state.json``: the data order
and the augmentation are drawn from ``(seed, epoch, step)``, so with those the epoch
continues exactly where it stopped (``common/train/loop.py``).

A checkpoint is first written into ``RUN/checkpoint.new/`` (``state.json`` last, so a
folder with a ``state.json`` is complete), then the names are rotated.  Resuming takes
the newest complete checkpoint that loads; if the last one is damaged (a truncated
weight file, a lost optimiser file, an optimiser file refused because it could run code),
it says so and falls back to the one before.  The weights go through
:func:`common.net.weights.read` like every other weight file; the optimiser's state is read
by the backend's ``load_optimizer``, never by an unrestricted unpickler (docs/security.md).  A
write that fails (a full disk) removes its half-written folder and raises
:class:`CheckpointError` naming the folder and the space it needs; the checkpoints
already written are untouched.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from typing import Callable, List, Optional, Tuple

from ..net import weights as W

CHECKPOINT, PREVIOUS, NEW = "checkpoint", "checkpoint.prev", "checkpoint.new"
STATE = "state.json"
_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


class CheckpointError(RuntimeError):
    """A checkpoint could not be written, or no checkpoint of a run could be read."""


def _size(path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _mb(n) -> str:
    return f"{n / 2 ** 20:,.1f} MB"


def write_json(path, obj):
    """Write JSON atomically (a temporary file, then a rename); on failure nothing is left
    behind and the previous file stays."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def no_space(error: BaseException, folder: str, needed: int) -> bool:
    """Whether ``error`` (from any library) came from a full disk under ``folder``."""
    if isinstance(error, OSError) and error.errno in _NO_SPACE:
        return True
    if "No space left" in str(error) or "Disk quota" in str(error):
        return True
    try:
        return shutil.disk_usage(folder).free < needed
    except OSError:
        return False


def space_message(what: str, folder: str, needed: int) -> str:
    try:
        free = f"{_mb(shutil.disk_usage(folder).free)} free"
    except OSError:
        free = "free space unknown"
    return (f"no space left on the disk to write {what} in {folder}: it needs about "
            f"{_mb(needed)} ({free}). Free some space and resume.")


def save(bk, net, trainer, run_dir: str, state: dict) -> str:
    """Write ``run_dir/checkpoint`` atomically, keeping the previous one as ``checkpoint.prev``."""
    final, prev, new = (os.path.join(run_dir, n) for n in (CHECKPOINT, PREVIOUS, NEW))
    weights = bk.get_weights(net)
    needed = (_size(final) if os.path.isdir(final) else
              3 * sum(a.nbytes for a in weights.values())) + 2 ** 20
    shutil.rmtree(new, ignore_errors=True)
    try:
        os.makedirs(new)
        W.save(os.path.join(new, "weights.npz"), weights, backend=bk.NAME, spec=net.spec.name,
               input_size=net.input_size)
        trainer.save_optimizer(new)
        write_json(os.path.join(new, STATE), state)          # last: the folder is complete
    except Exception as e:
        shutil.rmtree(new, ignore_errors=True)
        if no_space(e, run_dir, needed):
            raise CheckpointError(space_message(f"the checkpoint of {position(state)}",
                                                run_dir, needed)) from None
        raise
    if os.path.exists(final):
        shutil.rmtree(prev, ignore_errors=True)
        os.replace(final, prev)
    os.replace(new, final)
    return final


def position(state: dict) -> str:
    """Where a checkpoint's state stands: ``epoch 3`` (its end), or ``epoch 4, step 17`` (17 steps
    into the epoch after the 3 finished)."""
    step = state.get("step") or 0
    return f"epoch {state.get('epoch', 0) + 1}, step {step}" if step else f"epoch {state.get('epoch')}"


def _order(path) -> Optional[Tuple[int, int]]:
    """(epochs finished, steps into the next) of a complete checkpoint folder, or None."""
    try:
        with open(os.path.join(path, STATE)) as f:
            state = json.load(f)
        return int(state["epoch"]), int(state.get("step") or 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def candidates(run_dir: str) -> List[str]:
    """The run's checkpoint folders that are complete, newest first (a crash in the middle
    of the rotation leaves ``checkpoint.new`` complete: it counts)."""
    found = [(e, p) for p in (os.path.join(run_dir, n) for n in (CHECKPOINT, NEW, PREVIOUS))
             if (e := _order(p)) is not None]
    return [p for _, p in sorted(found, key=lambda ep: (-ep[0][0], -ep[0][1]))]


def find(run_dir: str) -> Optional[str]:
    """The newest complete checkpoint of a run, or None."""
    c = candidates(run_dir)
    return c[0] if c else None


def load(bk, net, trainer, run_dir: str, log: Callable = print):
    """Load the newest checkpoint of ``run_dir`` that reads back whole; ``(its folder, its
    state)``, or None if the run has none.  A damaged one is reported and skipped; if none loads,
    :class:`CheckpointError` lists why."""
    failures = []
    for path in candidates(run_dir):
        try:
            with open(os.path.join(path, STATE)) as f:
                state = json.load(f)
            # the one front door of weight files: read, checked in full, then loaded
            bk.set_weights(net, W.read(os.path.join(path, "weights.npz"), net.spec, net.input_size))
            if trainer is not None:
                trainer.load_optimizer(path)
        except Exception as e:            # any library's error on a damaged file
            failures.append(f"{path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            log(f"warning: the checkpoint {path} is damaged ({failures[-1].split(': ', 1)[1]}); "
                f"trying the one before")
            continue
        if failures:
            log(f"fell back to {path} ({position(state)}); what was trained after it will be trained again")
        return path, state
    if failures:
        raise CheckpointError(f"no checkpoint of {run_dir} can be read: " + "; ".join(failures))
    return None
