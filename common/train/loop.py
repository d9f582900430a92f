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

import contextlib
import math
import os
import signal
import sys
import time
from typing import Callable, Optional

import numpy as np

from . import checkpoint
from ..results import plots, tensorboard as tb_log
from .checkpoint import CheckpointError  # noqa: F401  (raised by fit)
from .distributed import SINGLE, World
from .interrupt import Interrupted, StopRequest
from .schedules import Schedule
from .train_config import Recipe
from ..net.spec import iter_param_layers

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


def fit(bk, net, train_loader, test_loader, recipe: Recipe, run_dir: str, *, resume: bool = False,
        record: Optional[dict] = None, progress: bool = True, log: Callable = print,
        fast: bool = True, stop_after: Optional[int] = None, world: World = SINGLE,
        checkpoint_every: Optional[int] = None, stop: Optional[StopRequest] = None,
        tensorboard: bool = True, log_histograms: Optional[int] = None):
    """Train ``net`` with ``recipe``; write checkpoints and the run record into ``run_dir``.

    The book's ``train_ch6`` (for each epoch: for each batch, one step; then evaluate) with
    hooks around it, in :class:`Run`.  ``resume`` continues from the last checkpoint in
    ``run_dir`` (same final numbers as an uninterrupted run on the CPU), also from one
    written in the middle of an epoch.  ``stop_after`` ends after that many epochs of this
    call (simulates an interruption in tests).  ``checkpoint_every``: also write a
    checkpoint every that many steps (counted from the start of the run) in the middle of an
    epoch.  ``stop``: a :class:`common.train.interrupt.StopRequest`, armed while the loop runs:
    once a signal sets it, the loop stops at the next step boundary, writes a checkpoint and
    raises :class:`common.train.interrupt.Interrupted`.  ``world``: this worker's place in a
    data-parallel run (``common.train.distributed``): the loaders give this worker's rows of every
    batch, the numbers are summed over the workers (the stop request too, so that every
    worker stops at the same step), and only rank 0 writes files and logs.  ``tensorboard``:
    write TensorBoard event files into ``run_dir`` (``common.results.tensorboard``; with
    ``log_histograms`` N, the weights' histograms every N steps).  Returns the run record (a dict).
    """
    if world.distributed and not world.main:
        progress, log = False, (lambda *a, **k: None)
    run = Run(bk, net, train_loader, test_loader, recipe, run_dir, resume=resume, record=record,
              log=log, fast=fast, world=world, checkpoint_every=checkpoint_every, stop=stop)
    run.open_log(tensorboard, log_histograms, resume)
    try:
        with run.stop.armed():
            rec = run.write_record(run.mid["step"])
            if run.tb:
                run.tb.settings(rec)
            for epoch in run.epochs(stop_after):
                totals = run.train_epoch(epoch, progress)
                run.end_epoch(epoch, totals)
            return run.finish()
    finally:
        if run.tb:
            run.tb.close()


class Run:
    """One call of :func:`fit`: the Trainer, the schedule, what a checkpoint keeps
    (``state``, and ``mid`` for a checkpoint inside an epoch) and the hooks of the loop."""

    def __init__(self, bk, net, train_loader, test_loader, recipe, run_dir, *, resume, record, log,
                 fast, world, checkpoint_every, stop):
        self.bk, self.net, self.recipe, self.run_dir, self.log, self.world = bk, net, recipe, run_dir, log, world
        self.train_loader, self.test_loader, self.checkpoint_every = train_loader, test_loader, checkpoint_every
        if world.distributed:
            for loader in (train_loader, test_loader):
                loader.shard = (world.rank, world.size)
        os.makedirs(run_dir, exist_ok=True)
        self.trainer = bk.Trainer(net, fast=fast, world=world if world.distributed else None,
                                  **recipe.trainer_kwargs())
        self.per_epoch = len(train_loader)
        self.schedule = Schedule(recipe.lr, recipe.num_epochs * self.per_epoch, self.per_epoch,
                                 **recipe.schedule_kwargs())
        self.current_lr = recipe.lr
        self.state = dict(epoch=0, history=[], compute_time=0.0, train_time=0.0, examples=0, steps=[])
        self.mid = dict(step=0, partial=None, rng=None)      # where a checkpoint inside an epoch stopped
        if resume:
            self._resume()
        self.start_wall = time.perf_counter()
        self.stop = stop if stop is not None else StopRequest()
        self.base = dict(record or {}, recipe=recipe.to_dict(), world_size=world.size, engine=world.engine,
                         settings=bk.settings(),        # after the Trainer, which may set some (cuDNN autotuning)
                         checkpoint_every=checkpoint_every)
        self.done_now, self.tb = 0, None

    def open_log(self, tensorboard, histograms, resume):
        """The TensorBoard event file (rank 0), after the resumed checkpoint's step (its
        folder's events past that step, of a run that trained on after it, are dropped)."""
        if tensorboard and self.world.main:
            done = self.state["epoch"] * self.per_epoch + (self.mid["step"] or 0)
            self.tb = tb_log.EventLog(self.run_dir, done if resume else None, histograms)

    def _resume(self):
        loaded = checkpoint.load(self.bk, self.net, self.trainer, self.run_dir, log=self.log)
        if loaded is None:
            self.log(f"no checkpoint in {self.run_dir}; starting from scratch")
            return
        path, self.state = loaded
        self.state.setdefault("steps", [])
        self.mid = {k: self.state.pop(k, None) for k in self.mid}
        self.current_lr = None                       # the schedule's, whatever the optimiser kept
        epoch, step = self.state["epoch"], self.mid["step"]
        self.log(f"resumed from {path} after epoch {epoch}"
                 + (f" and {step} steps of epoch {epoch + 1}" if step else ""))
        if step and self.recipe.num_epochs <= epoch:
            raise CheckpointError(
                f"{path} is {step} steps into epoch {epoch + 1}: give --epochs {epoch + 1} or more to "
                f"finish that epoch (its weights are past the end of epoch {epoch})")

    # ----------------------------------------------------------------- the book's loop
    def epochs(self, stop_after=None):
        """The epochs still to train (at most ``stop_after`` of them in this call)."""
        for epoch in range(self.state["epoch"], self.recipe.num_epochs):
            if stop_after is not None and self.done_now >= stop_after:
                return
            yield epoch

    def train_epoch(self, epoch, progress):
        """One pass over the training data, from where a checkpoint inside it stopped; returns
        the epoch's sums (loss, correct, examples, compute time, this worker's examples) and
        when its training began (``t0``)."""
        bk = self.bk
        bk.seed(self.recipe.seed + epoch)
        first, sums, rng = self.mid["step"] or 0, self.mid["partial"], self.mid["rng"]
        self.mid = dict(step=0, partial=None, rng=None)       # once: the epoch it stopped in
        if first:
            _set_rng_state(bk, self.net, rng, epoch, self.log)
        tot = dict(sums or dict(loss=0.0, correct=0.0, n=0, compute=0.0, local=0, train_time=0.0))
        tot["t0"] = time.perf_counter() - tot.pop("train_time")
        bar = progress_bar(len(self.train_loader), f"epoch {epoch + 1}/{self.recipe.num_epochs}", enabled=progress)
        bar.update(first)
        batches = self.train_loader.epoch(epoch, first) if first else self.train_loader.epoch(epoch)
        with contextlib.closing(bar):
            for step, (X, y) in enumerate(batches, first + 1):
                self._train_batch(epoch, step, X, y, tot, bar)
                bar.update(1)
        return tot

    def _train_batch(self, epoch, step, X, y, tot, bar):
        """One step, and what follows it: the sums, the per-step record, a checkpoint inside
        the epoch when one is due or a signal asked for one."""
        world, bk = self.world, self.bk
        lr = self._set_lr(epoch * self.per_epoch + step - 1)
        rows = self.train_loader.global_rows(step - 1)
        if rows < world.size:                   # a last batch too small to share: skipped by all
            return
        X, y_t = bk.to_tensor(X), bk.to_tensor(y)
        t0 = time.perf_counter()
        l, c = (self.trainer.train_step(X, y_t, global_batch=rows) if world.distributed
                else self.trainer.train_step(X, y_t))
        dt = time.perf_counter() - t0
        tot["compute"] += dt
        tot["local"] += len(y)
        votes = float(bool(self.stop))
        if world.distributed:               # the stop request rides on the step's sum
            l, c, votes = world.sum([l, c, votes])
        if not math.isfinite(l):
            last = find_checkpoint(self.run_dir)
            raise NonFiniteLoss(
                f"the loss became {l / rows} at epoch {epoch + 1}, step {step}: training diverged (try a "
                f"smaller --lr). The last good checkpoint "
                f"{'is ' + last if last else 'does not exist yet (no epoch finished)'}; "
                f"nothing was written after the divergence.")
        tot["loss"], tot["correct"], tot["n"] = tot["loss"] + l, tot["correct"] + c, tot["n"] + rows
        self.state["steps"].append([round(l / rows, 5), round(c / rows, 4), float(f"{lr:.6g}")])
        if self.tb:
            self._log_step(epoch * self.per_epoch + step, l / rows, lr, rows / dt if dt > 0 else None)
        bar.set_postfix(loss=f"{tot['loss'] / tot['n']:.3f}", acc=f"{tot['correct'] / tot['n']:.3f}", refresh=False)
        every = self.checkpoint_every and (epoch * self.per_epoch + step) % self.checkpoint_every == 0
        if votes or (every and step < self.per_epoch):
            path = self.save_inside(step, tot)
            if votes:
                raise Interrupted(self.stop.signum or signal.SIGTERM, path,   # other workers: SIGTERM's
                                  f"epoch {epoch + 1}, step {step}")

    def _log_step(self, t, loss, lr, rate):
        """Step ``t``'s scalars (and the weights' histograms when due) in the event file."""
        self.tb.step(t, loss, lr, rate)
        if self.tb.due(t):
            self.tb.weights(t, self.bk.get_weights(self.net))

    def _set_lr(self, t):
        """The schedule's learning rate for step ``t`` of the run, given to the Trainer when it changes."""
        lr = self.schedule(t)
        if lr != self.current_lr:
            self.trainer.set_lr(lr)
            self.current_lr = lr
        return lr

    def end_epoch(self, epoch, tot):
        """After an epoch: evaluate, log the book's line, checkpoint, rewrite the record; stop
        here if a signal asked between two steps' sums."""
        train_time = time.perf_counter() - tot["t0"]
        loss, correct, n, compute = tot["loss"], tot["correct"], tot["n"], tot["compute"]
        test_loss, test_acc = evaluate(self.bk, self.trainer, self.test_loader, self.world)
        self.state["history"].append(dict(epoch=epoch + 1, train_loss=loss / n, train_acc=correct / n,
                                          test_loss=test_loss, test_acc=test_acc,
                                          compute_time=compute, train_time=train_time, examples=n))
        if self.world.distributed:            # each worker's own examples/s, in rank order
            self.state["history"][-1]["worker_examples_per_sec"] = [
                round(v, 2) for v in self.world.gather(tot["local"] / compute if compute else 0.0)]
        self.state.update(epoch=epoch + 1, compute_time=self.state["compute_time"] + compute,
                          train_time=self.state["train_time"] + train_time,
                          examples=self.state["examples"] + n)
        self.log(f"epoch {epoch + 1}: loss {loss / n:.3f}, train acc {correct / n:.3f}, "
                 f"test acc {test_acc:.3f}, {n / compute:.1f} examples/sec (compute)")
        if self.tb:                           # before the checkpoint: it never covers lost events
            self.tb.epoch((epoch + 1) * self.per_epoch, self.state["history"][-1])
            self.tb.flush()
        if self.world.main:
            checkpoint.save(self.bk, self.net, self.trainer, self.run_dir, self.state)
        self.write_record()
        self.done_now += 1
        if epoch + 1 < self.recipe.num_epochs and self.asked_to_stop():
            raise Interrupted(self.stop.signum or signal.SIGTERM,
                              find_checkpoint(self.run_dir) if self.world.main else None,
                              f"the end of epoch {epoch + 1}")

    def finish(self):
        """The final record, and the book's figure of the epochs."""
        rec = self.write_record()
        if self.state["history"] and self.world.main:
            name = rec.get("backend", self.bk.NAME)
            sample = " - on the shipped Fashion-MNIST SAMPLE" if (rec.get("dataset") or {}).get("sample") else ""
            plots.epoch_curves({name: self.state["history"]}, os.path.join(self.run_dir, "curves.png"),
                               title=f"{name} on {rec.get('device', '')}{sample}")
        return rec

    # ----------------------------------------------------------------- the hooks' files
    def write_record(self, step=0):
        """The run record, rewritten after every checkpoint, so an interrupted run can resume."""
        state, world = self.state, self.world
        rec = dict(self.base, **_summary(state))
        if not world.main:
            return rec
        rec.update(epochs_done=state["epoch"], steps_into_epoch=step,
                   complete=state["epoch"] >= self.recipe.num_epochs,
                   history=state["history"], steps_to_leave_chance=steps_to_leave_chance(state["steps"]),
                   steps=state["steps"], wall_time_this_call=time.perf_counter() - self.start_wall)
        try:
            checkpoint.write_json(os.path.join(self.run_dir, "run.json"), rec)
        except OSError as e:
            if checkpoint.no_space(e, self.run_dir, 2 ** 20):
                raise CheckpointError(checkpoint.space_message("the run record", self.run_dir, 2 ** 20)) from None
            raise
        return rec

    def save_inside(self, step, tot):
        """A checkpoint after ``step`` steps of the epoch in progress, with what continues it exactly."""
        sums = dict(loss=float(tot["loss"]), correct=float(tot["correct"]), n=int(tot["n"]),
                    compute=tot["compute"], local=int(tot["local"]), train_time=time.perf_counter() - tot["t0"])
        inside = dict(self.state, step=step, partial=sums, rng=self.bk.rng_state())
        if self.tb:
            self.tb.flush()
        path = checkpoint.save(self.bk, self.net, self.trainer, self.run_dir, inside) if self.world.main else None
        self.write_record(step)
        return path

    def asked_to_stop(self) -> bool:
        """Whether a signal asked any worker to stop (a sum over the workers: all agree)."""
        world = self.world
        return bool(world.sum([float(bool(self.stop))])[0]) if world.distributed else bool(self.stop)


def _set_rng_state(bk, net, saved, epoch, log):
    """Put back the generator's state of a checkpoint inside ``epoch`` (0-based); where the
    backend could not save it, say what that changes (only dropout draws from it)."""
    if saved is not None:
        bk.set_rng_state(saved)
    elif _has_dropout(net.spec):
        log(f"note: {bk.NAME} cannot save its random generator, so the dropout of the rest of epoch "
            f"{epoch + 1} draws other masks than an uninterrupted run would")


def _has_dropout(spec) -> bool:
    return any(l.kind == "dropout" and l.rate > 0 for _, l in iter_param_layers(spec))


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
