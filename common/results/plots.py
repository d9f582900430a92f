"""Every figure the project draws, in one place (matplotlib, no screen needed).

* :func:`epoch_curves`: training loss and train / test accuracy per epoch, for one run
  (the book's figure, ``RUN/curves.png``) or for several side by side (the comparison
  report's ``curves.png``);
* :func:`throughput`: examples per second, compute-only and end-to-end, per run;
* :func:`step_curves`: training loss per step, smoothed as TensorBoard smooths it (:func:`ema`)
  over the faint raw losses, and each other run's smoothed difference from the first with
  the band of step noise.
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


def ema(values: Sequence[float], weight: float) -> list:
    """TensorBoard's smoothing: an exponential moving average with ``weight`` (0: none), debiased
    as TensorBoard's scalar dashboard does (``last = w last + (1 - w) v``, divided by ``1 - w^k``),
    so the first points are not pulled towards zero."""
    out, last = [], 0.0
    for k, v in enumerate(values, 1):
        last = last * weight + (1 - weight) * v
        out.append(last / (1 - weight ** k) if weight else v)
    return out


def smoothing_for(n: int) -> float:
    """The EMA weight for ``n`` steps: about a fiftieth of the run (1 - 30/n), at least
    TensorBoard's default 0.6, at most 0.98."""
    return min(0.98, max(0.6, 1 - 30 / max(n, 1)))


def noise_band(diffs: Sequence[Sequence[float]], weight: float) -> float:
    """Two standard deviations of step noise after the EMA: the raw differences' step-to-step
    scatter (the standard deviation of successive differences over sqrt 2, so a slow drift does
    not count as noise), pooled over the runs, times sqrt((1 - w) / (1 + w)), the EMA's
    reduction of white noise.  A smoothed difference outside +-band is a drift, not noise."""
    import numpy as np
    steps = [np.diff(np.asarray(d, float)) for d in diffs if len(d) > 2]
    if not steps:
        return 0.0
    sigma = float(np.sqrt(np.mean(np.concatenate(steps) ** 2) / 2))
    return 2 * sigma * ((1 - weight) / (1 + weight)) ** 0.5


def step_curves(runs: Mapping[str, Sequence[Sequence[float]]], path: str, title: str = "",
                weight: float = None) -> str:
    """Training loss per step, one colour per run (left): the raw losses faint, their EMA
    (:func:`ema`, TensorBoard's smoothing) solid.  Right: each other run's smoothed difference
    from the first run's loss at the same step, with the band of step noise (:func:`noise_band`)
    around zero, so a drift between frameworks stands out from step noise.  ``runs`` maps a
    label to the run record's ``steps`` (``[loss, accuracy, lr]`` per step); ``weight``: the
    EMA's (default :func:`smoothing_for` the longest run)."""
    plt = _pyplot()
    fig, (ax, ax_diff) = plt.subplots(1, 2, figsize=(10, 3.6))
    labels = list(runs)
    losses = {label: [s[0] for s in runs[label]] for label in labels}
    n = max((len(v) for v in losses.values()), default=0)
    w = smoothing_for(n) if weight is None else weight
    for i, label in enumerate(labels):
        x = range(1, len(losses[label]) + 1)
        ax.plot(x, losses[label], "-", color=f"C{i}", lw=0.6, alpha=0.25)
        ax.plot(x, ema(losses[label], w), "-", color=f"C{i}", lw=1.6, label=label)
    diffs = {}
    if labels:
        ref = losses[labels[0]]
        for label in labels[1:]:
            m = min(len(ref), len(losses[label]))
            diffs[label] = [losses[label][k] - ref[k] for k in range(m)]
    band = noise_band(list(diffs.values()), w)
    if band:
        ax_diff.axhspan(-band, band, color="0.85", zorder=0, label=f"step noise after smoothing (±{band:.2g})")
    ax_diff.axhline(0, color="0.5", lw=0.8)
    for i, label in enumerate(labels[1:], 1):
        x = range(1, len(diffs[label]) + 1)
        ax_diff.plot(x, diffs[label], "-", color=f"C{i}", lw=0.5, alpha=0.12)
        ax_diff.plot(x, ema(diffs[label], w), "-", color=f"C{i}", lw=1.6, label=f"{label} - {labels[0]}")
    if diffs:
        settle = int(1 / (1 - w))                  # the EMA's first steps average few points
        smooth = [v for d in diffs.values() for v in ema(d, w)[settle:]]
        lim = max([band * 3] + [abs(v) for v in smooth]) * 1.15
        if lim > 0:
            ax_diff.set_ylim(-lim, lim)
    _style(ax, "step", f"training loss per step (faint: raw; solid: EMA, weight {w:.2f})")
    _style(ax_diff, "step", f"smoothed difference from {labels[0]}" if labels else "difference")
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
