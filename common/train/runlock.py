"""One training process per run folder: a lock that a crashed run cannot leave stuck.

``RUN/train.lock`` is locked with ``fcntl.flock`` for as long as the training process
holds it (the single process, the ``--nproc-per-node`` launcher, or rank 0 of a run
started by another launcher); the kernel releases it when the process ends, however it
ends (a crash, SIGKILL), so a stale lock file never blocks the next run.  The holder
writes its pid, host and start time into the file, for the message a second run gets.
Where ``fcntl`` does not exist (Windows) there is no lock.
"""
from __future__ import annotations

import os
import socket
import time
from typing import Optional

try:
    import fcntl
except ImportError:                      # Windows: no lock
    fcntl = None

LOCK = "train.lock"


class FolderInUse(RuntimeError):
    """Another live process holds the run folder."""


class RunLock:
    """The lock of one run folder, held from :meth:`acquire` until :meth:`release` (or the
    end of the process)."""

    def __init__(self, run_dir: str):
        self.run_dir, self.path, self.fd = run_dir, os.path.join(run_dir, LOCK), None

    def acquire(self) -> "RunLock":
        """Take the lock, creating the folder; :class:`FolderInUse` names the holder."""
        if fcntl is None:
            return self
        os.makedirs(self.run_dir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise FolderInUse(f"the run folder {self.run_dir} is in use by "
                              f"{holder or 'another process'}; two runs in one folder would "
                              f"overwrite each other's checkpoints and run record. Wait for it to "
                              f"end, or give another --run-dir") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}, since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        self.fd = fd
        return self

    def release(self):
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)     # still held: nobody reads a holder that is gone
            except OSError:
                pass
            os.close(self.fd)            # closing the descriptor releases the lock
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _read(fd) -> Optional[str]:
    try:
        return os.pread(fd, 200, 0).decode(errors="replace").strip() or None
    except OSError:
        return None

