"""Downloading a file into a cache folder: the hash its publisher gives is checked, a progress
bar shows (tqdm), and nothing half-written is ever left behind.

The bytes go to a ``.part`` file in the target folder, renamed into place only after the hash
matched; any failure (no network, a connection cut short, a full disk, a wrong hash, Ctrl-C)
removes it and raises :class:`DownloadError` with one line that says what happened and, when
the file could not be fetched, which file to put where by hand.  A zip archive that holds the
file (Gluon's model store) is unpacked in the same way: only the named member is kept.
"""
from __future__ import annotations

import errno
import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from typing import Optional, Tuple

__all__ = ["DownloadError", "fetch_file", "digest", "hash_ok"]

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A file that could not be fetched or did not check out; nothing was kept."""


def digest(path: str, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def hash_ok(path: str, expected: Tuple[str, str]) -> bool:
    """Whether ``path`` has the hash ``(algorithm, hex)``; a hex shorter than the digest is a
    prefix (torchvision puts the sha256's first 8 digits in its file names)."""
    algorithm, want = expected
    return digest(path, algorithm).startswith(want.lower())


def _stream(url: str, out, progress: bool, timeout: float, desc: str):
    """Copy ``url`` into the open file ``out``; a response shorter than its Content-Length is an error."""
    with urllib.request.urlopen(url, timeout=timeout) as r:
        total = r.headers.get("Content-Length")
        total = int(total) if total and total.isdigit() else None
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, file=sys.stderr,
                       leave=False, disable=None)
        got = 0
        try:
            while chunk := r.read(CHUNK):
                out.write(chunk)
                got += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        if total is not None and got != total:
            raise http.client.IncompleteRead(b"", total - got)


def _manual(what: str, url: str, directory: str, name: str, expected, member) -> str:
    inside = " (inside the zip at that address)" if member else ""
    return (f"put {name}{inside} ({expected[0]} {expected[1]}) into {directory} by hand: "
            f"{url}")


def _cached(path: str, expected, download: bool, what: str) -> bool:
    """Whether ``path`` is already the file; a different file there is replaced by a download,
    or refused when downloading is off."""
    if not os.path.isfile(path):
        return False
    if hash_ok(path, expected):
        return True
    if not download:
        raise DownloadError(f"{path} is not {what}: its {expected[0]} is not {expected[1]} "
                            f"(a damaged or different file); delete it to download it again")
    return False


def fetch_file(url: str, directory: str, name: str, expected: Tuple[str, str], *, member: Optional[str] = None,
               download: bool = True, progress: bool = True, what: str = "the file",
               timeout: float = 30.0) -> str:
    """The path of ``directory/name``: the file there if its hash is ``expected``, else
    downloaded from ``url`` (a zip holding ``member`` = ``name`` where ``member`` is given),
    checked and moved into place.  Raises :class:`DownloadError` (one line; nothing kept)."""
    path = os.path.join(directory, name)
    if _cached(path, expected, download, what):
        return path
    if not download:
        raise DownloadError(f"{what} is not in {directory}; " + _manual(what, url, directory, name, expected, member))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"cannot create {directory} for {what} ({e.strerror})") from None
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            _stream(url, out, progress, timeout, name)
        if member:
            tmp = _unzip(tmp, member, directory, url)
        if not hash_ok(tmp, expected):
            raise DownloadError(f"{name} from {url} does not have the publisher's {expected[0]} {expected[1]} "
                                f"(got {digest(tmp, expected[0])[:len(expected[1])]}): a corrupt download or a "
                                f"changed file; nothing was kept")
        os.replace(tmp, path)
        return path
    except DownloadError:
        raise
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", None) or e
        cut = isinstance(e, http.client.IncompleteRead)
        raise DownloadError(f"{what} could not be downloaded ({'the connection was cut short' if cut else reason}); "
                            f"nothing was kept. Try again, or " + _manual(what, url, directory, name, expected, member)
                            ) from None
    except OSError as e:
        why = "the disk is full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        raise DownloadError(f"writing {what} into {directory} failed ({why}); nothing was kept") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _unzip(tmp: str, member: str, directory: str, url: str) -> str:
    """The member of the downloaded zip ``tmp``, as a new ``.part`` file (the zip is removed)."""
    try:
        with zipfile.ZipFile(tmp) as zf:
            if member not in zf.namelist():
                raise DownloadError(f"the zip from {url} does not hold {member}; nothing was kept")
            fd, out = tempfile.mkstemp(dir=directory, prefix=f".{member}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as f, zf.open(member) as src:
                    while chunk := src.read(CHUNK):
                        f.write(chunk)
            except BaseException:
                os.remove(out)
                raise
    except zipfile.BadZipFile:
        raise DownloadError(f"the file from {url} is not a zip archive; nothing was kept") from None
    finally:
        os.remove(tmp)
    return out
