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

import json
import math
import os
import shutil
import sys
import time
from typing import Callable, Optional

import numpy as np

from . import weights as W
from .train_config import Recipe

CHECKPOINT = "checkpoint"


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class Progress:
    """A one-line progress bar (loss, accuracy, ETA) on a terminal; a few lines otherwise."""

    def __init__(self, total, prefix, stream=None, enabled=True):
        self.total, self.prefix, self.enabled = total, prefix, enabled
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start, self.last = time.perf_counter(), -1

    def update(self, step, loss, acc):
        if not self.enabled:
            return
        pct = step * 10 // self.total
        if not self.tty and pct == self.last and step != self.total:
            return
        self.last = pct
        elapsed = time.perf_counter() - self.start
        eta = elapsed / step * (self.total - step)
        bar = "#" * (step * 20 // self.total)
        line = (f"{self.prefix} [{bar:<20}] {step}/{self.total} loss {loss:.3f} acc {acc:.3f} "
                f"ETA {int(eta) // 60}:{int(eta) % 60:02d}")
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        if self.tty and step == self.total:
            self.stream.write("\n")
        self.stream.flush()


def evaluate(bk, trainer, loader):
    """(loss, accuracy) over a loader in eval mode."""
    loss, correct, n = 0.0, 0, 0
    for X, y in loader.epoch(0):
        l, c = trainer.eval_step(bk.to_tensor(X), bk.to_tensor(y))
        loss, correct, n = loss + l, correct + c, n + len(y)
    return loss / max(n, 1), correct / max(n, 1)


def _atomic_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def save_checkpoint(bk, net, trainer, run_dir, state):
    """Write ``run_dir/checkpoint`` atomically: a new folder, then a swap of names."""
    final = os.path.join(run_dir, CHECKPOINT)
    new, old = final + ".new", final + ".old"
    shutil.rmtree(new, ignore_errors=True)
    os.makedirs(new)
    W.save(os.path.join(new, "weights.npz"), bk.get_weights(net), backend=bk.NAME,
           spec=net.spec.name, input_size=net.input_size)
    trainer.save_optimizer(new)
    _atomic_json(os.path.join(new, "state.json"), state)
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(final):
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def find_checkpoint(run_dir):
    """The last complete checkpoint of a run (also after a crash mid-swap), or None."""
    for name in (CHECKPOINT, CHECKPOINT + ".old"):
        path = os.path.join(run_dir, name)
        if os.path.exists(os.path.join(path, "state.json")):
            return path
    return None


def load_checkpoint(bk, net, trainer, path):
    with open(os.path.join(path, "state.json")) as f:
        state = json.load(f)
    bk.set_weights(net, W.load(os.path.join(path, "weights.npz")))
    if trainer is not None:
        trainer.load_optimizer(path)
    return state


def fit(bk, net, train_loader, test_loader, recipe: Recipe, run_dir: str, *, resume: bool = False,
        record: Optional[dict] = None, progress: bool = True, log: Callable = print,
        fast: bool = True, stop_after: Optional[int] = None):
    """Train ``net`` with ``recipe``; write checkpoints and the run record into ``run_dir``.

    ``resume`` continues from the last checkpoint in ``run_dir`` (same final numbers as an
    uninterrupted run on the CPU).  ``stop_after`` ends after that many epochs of this call
    (simulates an interruption in tests).  Returns the run record (a dict).
    """
    os.makedirs(run_dir, exist_ok=True)
    trainer = bk.Trainer(net, fast=fast, **recipe.trainer_kwargs())
    state = dict(epoch=0, history=[], compute_time=0.0, train_time=0.0, examples=0, steps=[])
    if resume:
        path = find_checkpoint(run_dir)
        if path is None:
            log(f"no checkpoint in {run_dir}; starting from scratch")
        else:
            state = load_checkpoint(bk, net, trainer, path)
            state.setdefault("steps", [])
            log(f"resumed from {path} after epoch {state['epoch']}")
    start_wall = time.perf_counter()
    base = dict(record or {}, recipe=recipe.to_dict())

    def write_record():
        """The run record, rewritten after every epoch, so an interrupted run can resume."""
        rec = dict(base, **_summary(state))
        rec.update(epochs_done=state["epoch"], complete=state["epoch"] >= recipe.num_epochs,
                   history=state["history"], steps_to_leave_chance=steps_to_leave_chance(state["steps"]),
                   steps=state["steps"], wall_time_this_call=time.perf_counter() - start_wall)
        _atomic_json(os.path.join(run_dir, "run.json"), rec)
        return rec

    write_record()
    done_now = 0
    for epoch in range(state["epoch"], recipe.num_epochs):
        if stop_after is not None and done_now >= stop_after:
            break
        bk.seed(recipe.seed + epoch)
        bar = Progress(len(train_loader), f"epoch {epoch + 1}/{recipe.num_epochs}", enabled=progress)
        loss, correct, n, compute = 0.0, 0, 0, 0.0
        t_epoch = time.perf_counter()
        for step, (X, y) in enumerate(train_loader.epoch(epoch), 1):
            X, y_t = bk.to_tensor(X), bk.to_tensor(y)
            t0 = time.perf_counter()
            l, c = trainer.train_step(X, y_t)
            compute += time.perf_counter() - t0
            if not math.isfinite(l):
                last = find_checkpoint(run_dir)
                raise NonFiniteLoss(
                    f"the loss became {l / len(y)} at epoch {epoch + 1}, step {step}: training "
                    f"diverged (try a smaller --lr). The last good checkpoint "
                    f"{'is ' + last if last else 'does not exist yet (no epoch finished)'}; "
                    f"nothing was written after the divergence.")
            loss, correct, n = loss + l, correct + c, n + len(y)
            state["steps"].append([round(l / len(y), 5), round(c / len(y), 4)])
            bar.update(step, loss / n, correct / n)
        train_time = time.perf_counter() - t_epoch
        test_loss, test_acc = evaluate(bk, trainer, test_loader)
        state["history"].append(dict(epoch=epoch + 1, train_loss=loss / n, train_acc=correct / n,
                                     test_loss=test_loss, test_acc=test_acc,
                                     compute_time=compute, train_time=train_time, examples=n))
        state.update(epoch=epoch + 1, compute_time=state["compute_time"] + compute,
                     train_time=state["train_time"] + train_time, examples=state["examples"] + n)
        log(f"epoch {epoch + 1}: loss {loss / n:.3f}, train acc {correct / n:.3f}, "
            f"test acc {test_acc:.3f}, {n / compute:.1f} examples/sec (compute)")
        save_checkpoint(bk, net, trainer, run_dir, state)
        write_record()
        done_now += 1

    rec = write_record()
    if state["history"]:
        plot_curves(state["history"], os.path.join(run_dir, "curves.png"),
                    title=f"{rec.get('backend', bk.NAME)} on {rec.get('device', '')}")
    return rec


def _summary(state):
    h = state["history"][-1] if state["history"] else {}
    compute, train_time, n = state["compute_time"], state["train_time"], state["examples"]
    return dict(train_loss=h.get("train_loss"), train_acc=h.get("train_acc"),
                test_acc=h.get("test_acc"),
                examples_per_sec_compute=n / compute if compute else None,
                examples_per_sec_end_to_end=n / train_time if train_time else None,
                train_time=train_time)


def steps_to_leave_chance(steps, window=10, threshold=0.2):
    """The first step after which the mean training accuracy of the last ``window`` steps
    exceeds ``threshold`` (twice chance for 10 classes); None if it never does."""
    acc = [a for _, a in steps]
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


def plot_curves(history, path, title=""):
    """train loss, train acc and test acc per epoch, like the book's figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot(ep, [h["train_loss"] for h in history], "-", label="train loss")
    ax.plot(ep, [h["train_acc"] for h in history], "m--", label="train acc")
    ax.plot(ep, [h["test_acc"] for h in history], "g-.", label="test acc")
    ax.set_xlabel("epoch")
    ax.set_xlim(0.5, max(ep) + 0.5)
    ax.grid(True, alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
