"""The training loop, once for every backend (the book's ``train_ch6``, made explicit).

A backend supplies only its framework pieces (``build``, ``Trainer.train_step`` /
``eval_step``, ``get_weights`` / ``set_weights``, ``save_optimizer`` /
``load_optimizer``, ``to_tensor``, ``seed``); epochs, metrics, progress, timing,
checkpoints and the run record live here.

Throughput is reported two ways:

* **compute-only** examples/s: examples divided by the time spent inside
  ``train_step`` (forward, backward and update, synchronised because the step returns
  Python numbers) — the book's figure;
* **end-to-end** examples/s: examples divided by the wall time of the training part of
  the epoch, data preparation and host-to-device copies included (evaluation excluded).
"""
from __future__ import annotations

import math
import os
import signal
import sys
import time
from typing import Callable, Optional

import numpy as np

from . import checkpoint, plots
from .checkpoint import CheckpointError  # noqa: F401  (raised by fit)
from .distributed import SINGLE, World
from .interrupt import Interrupted, StopRequest
from .schedules import Schedule
from .train_config import Recipe

find_checkpoint = checkpoint.find


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class _Lines:
    """A file for tqdm that turns its in-place updates into whole lines, for logs and CI."""

    def __init__(self, stream):
        self.stream, self.last = stream, None

    def write(self, s):
        line = s.replace("\r", "").strip()
        if line and line != self.last:
            self.stream.write(line + "\n")
            self.last = line

    def flush(self):
        self.stream.flush()


def _in_notebook() -> bool:
    try:
        return "IPKernelApp" in sys.modules["IPython"].get_ipython().config
    except Exception:
        return False


def progress_bar(total: int, desc: str, enabled: bool = True, stream=None):
    """A tqdm progress bar: live on a terminal or in a notebook (``tqdm.auto``: a widget with
    ipywidgets, text without), about ten plain lines per epoch when the output goes to a
    file or a CI log."""
    from tqdm import tqdm
    if stream is None and _in_notebook():
        from tqdm.auto import tqdm as auto
        return auto(total=total, desc=desc, disable=not enabled, leave=True)
    stream = stream or sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        return tqdm(total=total, desc=desc, disable=not enabled, file=stream, leave=True,
                    dynamic_ncols=True)
    return tqdm(total=total, desc=desc, disable=not enabled, file=_Lines(stream), leave=True,
                mininterval=0, miniters=max(1, total // 10), ncols=100)


def evaluate(bk, trainer, loader, world: World = SINGLE):
    """(loss, accuracy) over a loader in eval mode; with ``loader.scales``, of the softmax
    averaged over those input sizes (multi-scale testing).  In a distributed run every
    worker evaluates its rows of each batch and the sums are combined."""
    if loader.scales:
        return evaluate_scales(bk, trainer.net, loader, world)
    loss, correct, n = 0.0, 0, 0
    for X, y in loader.epoch(0):
        if len(y):
            l, c = trainer.eval_step(bk.to_tensor(X), bk.to_tensor(y))
            loss, correct, n = loss + l, correct + c, n + len(y)
    loss, correct, n = world.sum([loss, correct, n])
    return loss / max(n, 1), correct / max(n, 1)


def evaluate_scales(bk, net, loader, world: World = SINGLE):
    """Multi-scale testing: the class probabilities of every example averaged over the input
    sizes of ``loader.scales``; (mean negative log-likelihood of the average, accuracy)."""
    total, labels = None, None
    for size in loader.scales:
        batches = [(bk.forward(net, X), y) for X, y in loader.at_scale(size).epoch(0) if len(y)]
        if not batches:
            continue
        logits = np.concatenate([b[0] for b in batches])
        labels = np.concatenate([b[1] for b in batches])
        z = logits.astype(np.float64) - logits.max(1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        total = p if total is None else total + p
    nll = correct = n = 0.0
    if total is not None:
        p = total / len(loader.scales)
        nll = float(-np.log(p[np.arange(len(labels)), labels] + 1e-12).sum())
        correct, n = float((p.argmax(1) == labels).sum()), len(labels)
    nll, correct, n = world.sum([nll, correct, n])
    return nll / max(n, 1), correct / max(n, 1)


# Over the complexity limit on purpose: PLACEHOLDER.
def fit(bk, net, train_loader, test_loader, recipe: Recipe, run_dir: str, *, resume: bool = False,  # noqa: C901
        record: Optional[dict] = None, progress: bool = True, log: Callable = print,
        fast: bool = True, stop_after: Optional[int] = None, world: World = SINGLE,
        checkpoint_every: Optional[int] = None, stop: Optional[StopRequest] = None):
    """Train ``net`` with ``recipe``; write checkpoints and the run record into ``run_dir``.

    ``resume`` continues from the last checkpoint in ``run_dir`` (same final numbers as an
    uninterrupted run on the CPU), also from one written in the middle of an epoch.
    ``stop_after`` ends after that many epochs of this call (simulates an interruption in
    tests).  ``checkpoint_every``: also write a checkpoint every that many steps (counted
    from the start of the run) in the middle of an epoch.  ``stop``: a
    :class:`common.interrupt.StopRequest`, armed while the loop runs: once a signal sets it,
    the loop stops at the next step boundary, writes a checkpoint and raises
    :class:`common.interrupt.Interrupted`.  ``world``: this worker's place in a data-parallel
    run (``common.distributed``): the loaders give this worker's rows of every batch, the
    numbers are summed over the workers (the stop request too, so that every worker stops
    at the same step), and only rank 0 writes files and logs.  Returns the run record (a
    dict).
    """
    if world.distributed:
        for loader in (train_loader, test_loader):
            loader.shard = (world.rank, world.size)
        if not world.main:
            progress, log = False, (lambda *a, **k: None)
    os.makedirs(run_dir, exist_ok=True)
    trainer = bk.Trainer(net, fast=fast, world=world if world.distributed else None,
                         **recipe.trainer_kwargs())
    per_epoch = len(train_loader)
    schedule = Schedule(recipe.lr, recipe.num_epochs * per_epoch, per_epoch, **recipe.schedule_kwargs())
    current_lr = recipe.lr
    state = dict(epoch=0, history=[], compute_time=0.0, train_time=0.0, examples=0, steps=[])
    mid = dict(step=0, partial=None, rng=None)      # where a checkpoint inside an epoch stopped
    if resume:
        loaded = checkpoint.load(bk, net, trainer, run_dir, log=log)
        if loaded is None:
            log(f"no checkpoint in {run_dir}; starting from scratch")
        else:
            path, state = loaded
            state.setdefault("steps", [])
            mid = {k: state.pop(k, None) for k in mid}
            current_lr = None                       # the schedule's, whatever the optimiser kept
            log(f"resumed from {path} after epoch {state['epoch']}"
                + (f" and {mid['step']} steps of epoch {state['epoch'] + 1}" if mid["step"] else ""))
            if mid["step"] and recipe.num_epochs <= state["epoch"]:
                raise CheckpointError(
                    f"{path} is {mid['step']} steps into epoch {state['epoch'] + 1}: give --epochs "
                    f"{state['epoch'] + 1} or more to finish that epoch (its weights are past the end "
                    f"of epoch {state['epoch']})")
    start_wall = time.perf_counter()
    stop = stop if stop is not None else StopRequest()
    base = dict(record or {}, recipe=recipe.to_dict(), world_size=world.size, engine=world.engine,
                settings=bk.settings(),        # after the Trainer, which may set some (cuDNN autotuning)
                checkpoint_every=checkpoint_every)

    def write_record(step=0):
        """The run record, rewritten after every checkpoint, so an interrupted run can resume."""
        rec = dict(base, **_summary(state))
        if not world.main:
            return rec
        rec.update(epochs_done=state["epoch"], steps_into_epoch=step,
                   complete=state["epoch"] >= recipe.num_epochs,
                   history=state["history"], steps_to_leave_chance=steps_to_leave_chance(state["steps"]),
                   steps=state["steps"], wall_time_this_call=time.perf_counter() - start_wall)
        try:
            checkpoint.write_json(os.path.join(run_dir, "run.json"), rec)
        except OSError as e:
            if checkpoint.no_space(e, run_dir, 2 ** 20):
                raise CheckpointError(checkpoint.space_message("the run record", run_dir, 2 ** 20)) from None
            raise
        return rec

    def save_inside(step, sums):
        """A checkpoint after ``step`` steps of the epoch in progress, with what continues it exactly."""
        inside = dict(state, step=step, partial=sums, rng=bk.rng_state())
        path = checkpoint.save(bk, net, trainer, run_dir, inside) if world.main else None
        write_record(step)
        return path

    def asked_to_stop() -> bool:
        """Whether a signal asked any worker to stop (a sum over the workers: all agree)."""
        return bool(world.sum([float(bool(stop))])[0]) if world.distributed else bool(stop)

    with stop.armed():
        write_record(mid["step"])
        done_now = 0
        for epoch in range(state["epoch"], recipe.num_epochs):
            if stop_after is not None and done_now >= stop_after:
                break
            bk.seed(recipe.seed + epoch)
            first, sums, rng = mid["step"] or 0, mid["partial"], mid["rng"]   # once: the epoch it stopped in
            mid = dict(step=0, partial=None, rng=None)
            if first:
                _set_rng_state(bk, net, rng, epoch, log)
            bar = progress_bar(len(train_loader), f"epoch {epoch + 1}/{recipe.num_epochs}", enabled=progress)
            bar.update(first)
            sums = dict(sums or dict(loss=0.0, correct=0.0, n=0, compute=0.0, local=0, train_time=0.0))
            loss, correct, n, compute, local = (sums[k] for k in ("loss", "correct", "n", "compute", "local"))
            t_epoch = time.perf_counter() - sums["train_time"]
            batches = train_loader.epoch(epoch, first) if first else train_loader.epoch(epoch)
            for step, (X, y) in enumerate(batches, first + 1):
                lr = schedule(epoch * per_epoch + step - 1)
                if lr != current_lr:
                    trainer.set_lr(lr)
                    current_lr = lr
                rows = train_loader.global_rows(step - 1)
                if rows < world.size:                   # a last batch too small to share: skipped by all
                    bar.update(1)
                    continue
                X, y_t = bk.to_tensor(X), bk.to_tensor(y)
                t0 = time.perf_counter()
                l, c = (trainer.train_step(X, y_t, global_batch=rows) if world.distributed
                        else trainer.train_step(X, y_t))
                compute += time.perf_counter() - t0
                local += len(y)
                votes = float(bool(stop))
                if world.distributed:               # the stop request rides on the step's sum
                    l, c, votes = world.sum([l, c, votes])
                if not math.isfinite(l):
                    bar.close()
                    last = find_checkpoint(run_dir)
                    raise NonFiniteLoss(
                        f"the loss became {l / rows} at epoch {epoch + 1}, step {step}: training "
                        f"diverged (try a smaller --lr). The last good checkpoint "
                        f"{'is ' + last if last else 'does not exist yet (no epoch finished)'}; "
                        f"nothing was written after the divergence.")
                loss, correct, n = loss + l, correct + c, n + rows
                state["steps"].append([round(l / rows, 5), round(c / rows, 4), float(f"{lr:.6g}")])
                bar.set_postfix(loss=f"{loss / n:.3f}", acc=f"{correct / n:.3f}", refresh=False)
                bar.update(1)
                every = checkpoint_every and (epoch * per_epoch + step) % checkpoint_every == 0
                if votes or (every and step < per_epoch):
                    path = save_inside(step, dict(loss=float(loss), correct=float(correct), n=int(n),
                                                  compute=compute, local=int(local),
                                                  train_time=time.perf_counter() - t_epoch))
                    if votes:
                        bar.close()
                        raise Interrupted(stop.signum or signal.SIGTERM, path,   # other workers: SIGTERM's
                                          f"epoch {epoch + 1}, step {step}")
            bar.close()
            train_time = time.perf_counter() - t_epoch
            test_loss, test_acc = evaluate(bk, trainer, test_loader, world)
            state["history"].append(dict(epoch=epoch + 1, train_loss=loss / n, train_acc=correct / n,
                                         test_loss=test_loss, test_acc=test_acc,
                                         compute_time=compute, train_time=train_time, examples=n))
            if world.distributed:            # each worker's own examples/s, in rank order
                state["history"][-1]["worker_examples_per_sec"] = [
                    round(v, 2) for v in world.gather(local / compute if compute else 0.0)]
            state.update(epoch=epoch + 1, compute_time=state["compute_time"] + compute,
                         train_time=state["train_time"] + train_time, examples=state["examples"] + n)
            log(f"epoch {epoch + 1}: loss {loss / n:.3f}, train acc {correct / n:.3f}, "
                f"test acc {test_acc:.3f}, {n / compute:.1f} examples/sec (compute)")
            if world.main:
                checkpoint.save(bk, net, trainer, run_dir, state)
            write_record()
            done_now += 1
            if epoch + 1 < recipe.num_epochs and asked_to_stop():
                raise Interrupted(stop.signum or signal.SIGTERM, find_checkpoint(run_dir) if world.main else None,
                                  f"the end of epoch {epoch + 1}")

        rec = write_record()
        if state["history"] and world.main:
            plots.epoch_curves({rec.get("backend", bk.NAME): state["history"]},
                               os.path.join(run_dir, "curves.png"),
                               title=f"{rec.get('backend', bk.NAME)} on {rec.get('device', '')}")
    return rec


def _set_rng_state(bk, net, saved, epoch, log):
    """Put back the generator's state of a checkpoint inside ``epoch`` (0-based); where the
    backend could not save it, say what that changes (only dropout draws from it)."""
    if saved is not None:
        bk.set_rng_state(saved)
    elif _has_dropout(net.spec):
        log(f"note: {bk.NAME} cannot save its random generator, so the dropout of the rest of epoch "
            f"{epoch + 1} draws other masks than an uninterrupted run would")


def _has_dropout(spec) -> bool:
    layers = [l for st in spec.stages for _, l in st.layers] + [l for h in spec.aux for _, l in h.layers]
    return any(l.kind == "dropout" and l.rate > 0 for l in layers)


def _summary(state):
    h = state["history"][-1] if state["history"] else {}
    compute, train_time, n = state["compute_time"], state["train_time"], state["examples"]
    return dict(train_loss=h.get("train_loss"), train_acc=h.get("train_acc"),
                test_acc=h.get("test_acc"),
                examples_per_sec_compute=n / compute if compute else None,
                examples_per_sec_end_to_end=n / train_time if train_time else None,
                worker_examples_per_sec=h.get("worker_examples_per_sec"), train_time=train_time)


def steps_to_leave_chance(steps, window=10, threshold=0.2):
    """The first step after which the mean training accuracy of the last ``window`` steps
    exceeds ``threshold`` (twice chance for 10 classes); None if it never does."""
    acc = [s[1] for s in steps]
    for i in range(window, len(acc) + 1):
        if sum(acc[i - window:i]) / window > threshold:
            return i
    return None


def closing_lines(rec) -> str:
    """The book's two closing lines."""
    return (f"loss {rec['train_loss']:.3f}, train acc {rec['train_acc']:.3f}, "
            f"test acc {rec['test_acc']:.3f}\n"
            f"{rec['examples_per_sec_compute']:.1f} examples/sec on {rec.get('device', '?')} "
            f"(end-to-end {rec['examples_per_sec_end_to_end']:.1f})")
