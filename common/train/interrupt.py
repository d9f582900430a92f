"""Stopping a training run cleanly on SIGTERM (``kill``, a container stop, a scheduler) or Ctrl-C.

A command installs a :class:`StopRequest` for its whole life (:meth:`StopRequest.installed`).
While the training loop runs it is *armed*: the first SIGTERM or SIGINT only sets it, the
loop stops at the next step boundary, writes a checkpoint of the epoch in progress and
raises :class:`Interrupted`.  A second signal, or one outside the loop (data loading,
network building: nothing to save yet), raises :class:`Interrupted` at once.  The exit
code is the shell's convention, 128 + the signal's number: 130 for Ctrl-C, 143 for SIGTERM.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A signal stopped the run; ``checkpoint``: the checkpoint written on the way out (None:
    the last one written before is the one to resume from)."""

    def __init__(self, signum: int, checkpoint: Optional[str] = None, where: str = ""):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.checkpoint, self.where = signum, checkpoint, where

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopRequest:
    """Set by the first SIGTERM / SIGINT while armed; true once set (``signum`` says which)."""

    def __init__(self):
        self.signum: Optional[int] = None
        self._armed = False

    def __bool__(self):
        return self.signum is not None

    def _handle(self, signum, frame):
        if self._armed and self.signum is None:
            self.signum = signum                 # the loop stops at the next step boundary
            return
        raise Interrupted(signum)

    @contextlib.contextmanager
    def installed(self):
        """Handle SIGTERM and SIGINT in this process for the block (main thread only; a
        handler someone else installed, e.g. a notebook's, is left alone)."""
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                current = signal.getsignal(s)
                if current in ((signal.default_int_handler,) if s == signal.SIGINT else (signal.SIG_DFL,)):
                    previous[s] = signal.signal(s, self._handle)
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    @contextlib.contextmanager
    def armed(self):
        """The block (the training loop) stops at a step boundary rather than at once."""
        self._armed = True
        try:
            yield self
        finally:
            self._armed = False
