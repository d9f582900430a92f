"""One way for every command to fail on a user's mistake: one ``error:`` line, exit code 1.

A user's mistake (a bad option, a missing or damaged file, data that does not fit, a full
disk, a diverged run) is one of :data:`USER_ERRORS`; it is printed as ``error: <message>``
on standard error and the command exits with 1, with no traceback.  Anything else is a bug
and keeps its traceback.  ``--debug`` (or ``GOOGLENET_DEBUG=1``) shows the traceback of a
user error too.
"""
from __future__ import annotations

import argparse
import errno
import functools
import os
import sys

from common.train.checkpoint import CheckpointError
from common.inputs.data import DataError
from common.serve.export import ExportError
from common.train.loop import NonFiniteLoss
from common.train.runlock import FolderInUse
from common.net.spec import SpecError
from backends.config import BackendError
from common.train.trainer import AmpError
from common.net.weights import WeightsError


class UserError(Exception):
    """A mistake in what the user asked for; its message is the whole story."""


#: errors whose message is enough: no traceback
USER_ERRORS = (UserError, DataError, WeightsError, SpecError, BackendError, CheckpointError,
               NonFiniteLoss, ExportError, AmpError, FolderInUse)
#: operating-system errors about the user's files and disk
_FILE_ERRNOS = {errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.ENOSPC,
                errno.EROFS, getattr(errno, "EDQUOT", errno.ENOSPC)}


class ArgumentParser(argparse.ArgumentParser):
    """argparse with ``--debug`` and the project's error convention (one line, exit code 1)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true",
                          help="show the Python traceback of an error (for bug reports)")

    def error(self, message):
        self.exit(1, f"error: {message} (see {self.prog} --help)\n")


def _message(e: BaseException) -> str:
    if isinstance(e, OSError) and not isinstance(e, USER_ERRORS):
        where = f": {e.filename}" if e.filename else ""
        return f"{e.strerror or e}{where}"
    return str(e)


def is_user_error(e: BaseException) -> bool:
    return isinstance(e, USER_ERRORS) or (isinstance(e, OSError) and e.errno in _FILE_ERRNOS)


def guard(main):
    """Decorate a command's ``main(argv=None)``: user errors become ``error:`` lines, exit 1."""

    @functools.wraps(main)
    def wrapped(argv=None, **kwargs):
        args = sys.argv[1:] if argv is None else list(argv)
        debug = "--debug" in args or os.environ.get("GOOGLENET_DEBUG", "") not in ("", "0")
        try:
            code = main(argv, **kwargs)
        except Exception as e:
            if debug or not is_user_error(e):
                raise
            print(f"error: {_message(e)}", file=sys.stderr)
            return 1
        return 0 if code is None else code
    return wrapped


def run(main, **kwargs):
    """``sys.exit(main(**kwargs))``, for the scripts."""
    sys.exit(main(**kwargs))
