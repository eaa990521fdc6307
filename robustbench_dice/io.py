"""Atomic file writes (a reader sees the old file or the new one, never half of one), and the check that an
output folder can be written, made before the work that fills it."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import ConfigError


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # name the file asked for, not the temporary one beside it
        if isinstance(exc, FileExistsError):  # mkdir's word for a parent that is a file
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path)) from exc
        raise type(exc)(exc.errno, exc.strerror, str(path)) from exc
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; results are meant to be shared
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename == tmp:  # e.g. path is a folder: name it, not the temporary file beside it
            raise type(exc)(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def json_text(obj: Any) -> str:
    """Strict JSON (no NaN or Infinity), one key per line, ending in a newline: how results are written."""
    return json.dumps(obj, indent=1, allow_nan=False) + "\n"


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, json_text(obj).encode())


def writable_folder(path: str | Path, what: str) -> Path:
    """``path``, created if missing, after checking a file can be made in it; ConfigError naming ``what`` (e.g.
    "result store") otherwise."""
    path = Path(path)
    blocking = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:  # else mkdir's "[Errno 17] File exists" leaves the user to work out which
        if blocking == path:
            raise ConfigError(f"{what} {str(path)!r} is a file, not a folder")
        raise ConfigError(f"{what} {str(path)!r} cannot be made: {str(blocking)!r} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):  # uniquely named: workers share folders
            pass
    except OSError as exc:
        raise ConfigError(f"{what} {str(path)!r} is not writable: {exc}") from exc
    return path


def check_writable_folder(path: str | Path, what: str) -> Path:
    """:func:`writable_folder` that leaves no trace: the folders it had to create are removed again. The commands
    that write only after minutes of work check their output folders first with it, and a command that then fails
    leaves no empty folder behind."""
    path = Path(path)
    created = []  # deepest first, the order they can be removed in
    folder = path
    while not folder.exists() and folder != folder.parent:
        created.append(folder)
        folder = folder.parent
    try:
        return writable_folder(path, what)
    finally:
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()
