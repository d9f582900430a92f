"""Every figure the project draws, in one place (matplotlib, no screen needed).

* :func:`epoch_curves`: training loss and train / test accuracy per epoch, for one run
  (the book's figure, ``RUN/curves.png``) or for several side by side (the comparison
  report's ``curves.png``);
* :func:`throughput`: examples per second, compute-only and end-to-end, per run;
* :func:`step_curves`: training loss per step and each run's difference from the first.
"""
from __future__ import annotations

from typing import Mapping, Sequence


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def epoch_curves(runs: Mapping[str, Sequence[dict]], path: str, title: str = "") -> str:
    """Train loss (left) and train / test accuracy (right) per epoch, one colour per run.

    ``runs`` maps a label (a backend) to its history: the run record's ``history``, a list
    of dicts with ``epoch``, ``train_loss``, ``train_acc``, ``test_acc``.
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4))
    for i, (label, h) in enumerate(runs.items()):
        c, ep = f"C{i}", [x["epoch"] for x in h]
        ax_loss.plot(ep, [x["train_loss"] for x in h], "-o", color=c, ms=3, label=label)
        ax_acc.plot(ep, [x["train_acc"] for x in h], "-o", color=c, ms=3, label=f"{label} train")
        ax_acc.plot(ep, [x["test_acc"] for x in h], "--s", color=c, ms=3, label=f"{label} test")
    for ax, name in ((ax_loss, "train loss"), (ax_acc, "accuracy")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.ticklabel_format(axis="y", useOffset=False)
        _style(ax, "epoch", name)
    return _save(plt, fig, path, title)


def throughput(runs: Mapping[str, dict], path: str) -> str:
    """Examples per second, compute-only and end-to-end, one pair of bars per run; ``runs``
    maps a label to its run record."""
    plt = _pyplot()
    labels = list(runs)
    fig, ax = plt.subplots(figsize=(max(4, 1.4 * len(labels) + 2), 3.2))
    x = range(len(labels))
    for k, (key, name) in enumerate((("examples_per_sec_compute", "compute-only"),
                                     ("examples_per_sec_end_to_end", "end-to-end"))):
        ax.bar([i + (k - 0.5) * 0.38 for i in x], [runs[b].get(key) or 0 for b in labels], 0.38, label=name)
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels)
    ax.set_ylabel("examples / s")
    ax.grid(True, axis="y", alpha=0.3)
    if labels:
        ax.legend(fontsize=8)
    return _save(plt, fig, path)


def step_curves(runs: Mapping[str, Sequence[Sequence[float]]], path: str, title: str = "") -> str:
    """Training loss per step, one colour per run (left), and each run's difference from the
    first run's loss at the same step (right), so a short run is readable and the frameworks'
    agreement is visible.  ``runs`` maps a label to the run record's ``steps``
    (``[loss, accuracy, lr]`` per step)."""
    plt = _pyplot()
    fig, (ax, ax_diff) = plt.subplots(1, 2, figsize=(9, 3.4))
    labels = list(runs)
    ref = [s[0] for s in runs[labels[0]]] if labels else []
    for i, label in enumerate(labels):
        loss = [s[0] for s in runs[label]]
        x = range(1, len(loss) + 1)
        ax.plot(x, loss, "-", color=f"C{i}", lw=1, label=label)
        n = min(len(loss), len(ref))
        ax_diff.plot(range(1, n + 1), [loss[k] - ref[k] for k in range(n)], "-", color=f"C{i}", lw=1,
                     label=f"{label} - {labels[0]}")
    _style(ax, "step", "training loss per step")
    _style(ax_diff, "step", f"difference from {labels[0]}" if labels else "difference")
    return _save(plt, fig, path, title)


def _style(ax, xlabel, title):
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)


def _save(plt, fig, path, title=""):
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
