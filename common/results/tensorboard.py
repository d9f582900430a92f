"""TensorBoard event files for every run, from every backend, without any framework.

A run folder gets ``events.out.tfevents.*`` files that ``tensorboard --logdir runs`` (or a
comparison report's folder) reads, with plainly named tags:

* per step (x = the run's step, 1-based, counted from its start): ``step/train_loss`` (the
  batch's mean loss), ``step/lr``, ``step/examples_per_sec`` (compute-only, this step);
* per epoch, at the step that ends the epoch: ``epoch/train_loss``, ``epoch/train_acc``,
  ``epoch/test_loss``, ``epoch/test_acc`` (the run record's ``history``, the same numbers);
* once, at step 0: ``settings`` (text: backend, framework, device, model, recipe, data) and
  the same as hparams (TensorBoard's HPARAMS tab: the runs of a comparison in one table);
* with ``--log-histograms N``: ``weights/<tensor>`` histograms every N steps, of the
  framework-neutral weights (``bk.get_weights``: the table's names, the same on every backend).

The writer is tensorboardX's protocol buffers and record framing (numpy and protobuf only):
it imports no framework.  tensorboardX's package imports torch when torch is installed (for
type checks only), so the import below hides torch from it unless torch is already loaded:
an MXNet, Paddle or TensorFlow process loads neither torch nor TensorFlow for its logs.

**Each step exactly once.**  Events are flushed to disk before every checkpoint, so a
checkpoint never covers steps whose events could still be lost.  A resumed run first
rewrites (atomically, file by file) the event files of its folder without the events after
the checkpoint's step (those of a crashed or stopped run that trained past its last
checkpoint), then appends a new file: every step appears once, for every reader
(TensorBoard's fast loader, its Python ``EventAccumulator``, pandas exports), with no
reliance on a reader's purge of orphaned data.  A new run in a folder that already has event
files starts a clean log the same way.
"""
from __future__ import annotations

import contextlib
import glob
import itertools
import json
import os
import struct
import sys
import time
from typing import Iterator, Optional, Tuple

import numpy as np

#: the scalar tags, for the tests and the docs
STEP_TAGS = ("step/train_loss", "step/lr", "step/examples_per_sec")
EPOCH_TAGS = ("epoch/train_loss", "epoch/train_acc", "epoch/test_loss", "epoch/test_acc")
#: history key -> tag
EPOCH_KEYS = {tag.split("/", 1)[1]: tag for tag in EPOCH_TAGS}
SETTINGS_TAG = "settings"
PATTERN = "events.out.tfevents.*"

_serial = itertools.count()


@contextlib.contextmanager
def _torch_hidden():
    """While tensorboardX is imported, ``import torch`` fails (it is only an optional type
    check there), unless torch is already loaded; nothing else changes."""
    hide = "torch" not in sys.modules
    if hide:
        sys.modules["torch"] = None              # the import system's "not installed"
    try:
        yield
    finally:
        if hide and sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]


def _tbx():
    """tensorboardX's pieces: (event_pb2, summary, EventsWriter, masked_crc32c)."""
    with _torch_hidden():
        from tensorboardX import summary
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto import event_pb2
        from tensorboardX.record_writer import masked_crc32c
    return event_pb2, summary, EventsWriter, masked_crc32c


def available() -> Optional[str]:
    """None if event files can be written here, else why not (tensorboardX missing)."""
    try:
        _tbx()
    except ImportError as e:
        return f"tensorboardX is not installed ({e}); pip install tensorboardX==2.6.5"
    return None


# ----------------------------------------------------------------------------- reading our files
def records(path: str) -> Iterator[Tuple[int, int, bytes]]:
    """(start, end, payload) of each complete record of a TFRecord file whose checksums hold;
    stops at a torn or damaged tail (a process killed while writing)."""
    masked_crc32c = _tbx()[3]
    with open(path, "rb") as f:
        raw = f.read()
    pos = 0
    while pos + 12 <= len(raw):
        header = raw[pos:pos + 8]
        (n,) = struct.unpack("<Q", header)
        if struct.unpack("<I", raw[pos + 8:pos + 12])[0] != masked_crc32c(header):
            return
        end = pos + 12 + n + 4
        if end > len(raw):
            return
        payload = raw[pos + 12:pos + 12 + n]
        if struct.unpack("<I", raw[end - 4:end])[0] != masked_crc32c(payload):
            return
        yield pos, end, payload
        pos = end


def events(path: str):
    """The events of one file (``event_pb2.Event``), in order."""
    event_pb2 = _tbx()[0]
    for _, _, payload in records(path):
        e = event_pb2.Event()
        e.ParseFromString(payload)
        yield e


def event_files(logdir: str):
    """The event files directly in ``logdir``, in TensorBoard's order (by name: time first)."""
    return sorted(glob.glob(os.path.join(logdir, PATTERN)))


def truncate(logdir: str, last_step: int) -> int:
    """Drop every summary event after ``last_step`` from the event files in ``logdir``,
    rewriting each affected file atomically (a temporary file renamed over it) and removing
    files left with no summary; also drops a torn tail.  Returns the number of events dropped."""
    event_pb2 = _tbx()[0]
    dropped = 0
    for path in event_files(logdir):
        with open(path, "rb") as f:
            raw = f.read()
        keep, summaries, total, end = [], 0, 0, 0
        for start, end, payload in records(path):
            total += 1
            e = event_pb2.Event()
            e.ParseFromString(payload)
            if e.HasField("summary") and e.step > last_step:
                continue
            summaries += e.HasField("summary")
            keep.append(raw[start:end])
        dropped += total - len(keep)
        if len(keep) == total and end == len(raw):
            continue                                            # nothing after last_step, no torn tail
        if not summaries:
            os.remove(path)
            continue
        tmp = os.path.join(logdir, f".rewrite-{os.getpid()}.tmp")     # no "tfevents": never read
        with open(tmp, "wb") as f:
            f.write(b"".join(keep))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return dropped


def has_tag(logdir: str, tag: str) -> bool:
    return any(v.tag == tag or v.tag.startswith(tag + "/")
               for path in event_files(logdir) for e in events(path) if e.HasField("summary")
               for v in e.summary.value)


# ----------------------------------------------------------------------------- writing
def settings_text(rec: dict) -> str:
    """The run's settings as a Markdown table (TensorBoard's TEXT tab renders it)."""
    ds = rec.get("dataset") or {}
    rows = [("backend", rec.get("backend")), ("framework", rec.get("framework_version")),
            ("device", rec.get("device")), ("cpu", rec.get("cpu")),
            ("data", f"{ds.get('name')}{' SAMPLE' if ds.get('sample') else ''} ({rec.get('data_dir')}), "
                     f"{rec.get('train_examples')} train / {rec.get('test_examples')} test"),
            ("model", json.dumps(rec.get("model"))), ("recipe", json.dumps(rec.get("recipe"))),
            ("workers", rec.get("world_size")), ("command", rec.get("command"))]
    return "| setting | value |\n| --- | --- |\n" + "\n".join(
        f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows if v is not None)


def hparams_of(rec: dict) -> dict:
    """The flat settings shown in the HPARAMS tab (strings, numbers, booleans)."""
    ds, model = rec.get("dataset") or {}, rec.get("model") or {}
    out = dict(backend=rec.get("backend"), preset=model.get("preset"),
               data=f"{ds.get('name')}{' sample' if ds.get('sample') else ''}", limit=rec.get("limit") or 0,
               workers=rec.get("world_size") or 1)
    for k, v in (rec.get("recipe") or {}).items():
        if isinstance(v, (str, int, float, bool)):
            out[k] = v
        elif v is not None:
            out[k] = json.dumps(v)
    return {k: v for k, v in out.items() if v is not None}


class EventLog:
    """The event file of one run folder (rank 0 only); synchronous writes, flushed before
    every checkpoint (:meth:`flush`) and on :meth:`close`.

    ``resume_step``: the last step the run's checkpoint covers (0: none); the folder's event
    files are first truncated to it (``None``, a new run: emptied, so a reused folder
    starts a clean log).  ``histograms``: log the weights every that many steps."""

    def __init__(self, logdir: str, resume_step: Optional[int] = None, histograms: Optional[int] = None):
        self.event_pb2, self.summary, EventsWriter, _ = _tbx()
        os.makedirs(logdir, exist_ok=True)
        self.logdir, self.histograms = logdir, histograms
        self.dropped = truncate(logdir, -1 if resume_step is None else resume_step) if event_files(logdir) else 0
        self.has_settings = resume_step is not None and has_tag(logdir, SETTINGS_TAG)
        # events.out.tfevents.<time>.<host>.<pid>.<n>: a new name each time (reopening one truncates it)
        self.writer = EventsWriter(os.path.join(logdir, "events"), f".{os.getpid()}.{next(_serial)}")

    def _write(self, summary, step: int):
        self.writer.write_event(self.event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def scalar(self, tag: str, value: float, step: int):
        self._write(self.summary.scalar(tag, float(value)), step)

    def settings(self, rec: dict):
        """The settings as text and hparams, once per run (a resumed run keeps its own)."""
        if self.has_settings:
            return
        self._write(self.summary.text(SETTINGS_TAG, settings_text(rec)), 0)
        for s in self.summary.hparams(hparams_of(rec), {t: None for t in ("epoch/test_acc", "epoch/train_loss")}):
            self._write(s, 0)
        self.has_settings = True

    def step(self, step: int, loss: float, lr: float, examples_per_sec: Optional[float]):
        self.scalar("step/train_loss", loss, step)
        self.scalar("step/lr", lr, step)
        if examples_per_sec:
            self.scalar("step/examples_per_sec", examples_per_sec, step)

    def epoch(self, step: int, row: dict):
        """The run record's history row of an epoch, at the step that ended it."""
        for key, tag in EPOCH_KEYS.items():
            if row.get(key) is not None:
                self.scalar(tag, row[key], step)

    def due(self, step: int) -> bool:
        return bool(self.histograms) and step % self.histograms == 0

    def weights(self, step: int, weights: dict):
        """A histogram of every tensor (``weights/<name>``) at ``step``."""
        for name, w in weights.items():
            a = np.asarray(w, dtype=np.float64).reshape(-1)
            if a.size and np.all(np.isfinite(a)):
                self._write(self.summary.histogram(f"weights/{name}", a, bins=64), step)

    def flush(self):
        self.writer.flush()

    def close(self):
        with contextlib.suppress(OSError, ValueError):
            self.writer.close()
