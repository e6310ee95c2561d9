"""One way to replace a file atomically, shared by every einet writer (profiles, predictors, checkpoints).

:func:`atomic_write` writes to a temporary file with a unique name in the target's
directory, flushes and fsyncs it, renames it over the target with :func:`os.replace`
and fsyncs the directory, so that:

- readers see the previous file or the new one, never a mix or a half file;
- concurrent writers of the same path never share a temporary file: the last
  rename wins, and no writer fails because another one renamed "its" file;
- a crash (an exception, SIGKILL) mid-write leaves the previous file intact; after
  an exception the temporary file is removed (after SIGKILL or a power cut a
  ``.<name>.*.tmp`` file may stay behind, never under the target's name);
- once the context exits normally, the new file has reached the disk;
- a symlink is written through: its target gets the new file, the link stays (:func:`write_target`); a
  FIFO, a device or a socket (``/dev/stdout``) is refused, since renaming onto it would replace it.

Only the standard library: importing it costs nothing.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from .errors import EinetValueError

__all__ = ["atomic_write", "write_target"]


def process_umask() -> int:
    """The process umask, read without changing it where the platform allows (Linux)."""
    with suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii", errors="replace") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: set and restore (briefly racy with threads creating files)
    os.umask(mask)
    return mask


def _fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable; a no-op where directories cannot be opened (Windows)."""
    if os.name == "nt":
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as error:  # some file systems do not fsync directories
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def write_target(path: str | os.PathLike[str]) -> Path:
    """The file a write of `path` replaces: a symlink's final target (so the link is kept), which must be a
    regular file or not exist yet. A FIFO, a device or a socket is a ValueError: einet writes whole files
    by renaming them into place, which would replace it instead of writing to it."""
    target = Path(os.path.realpath(path))
    try:
        mode = os.stat(target).st_mode
    except (FileNotFoundError, NotADirectoryError):  # a new file (under a file: fails when written)
        return target
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or a socket"
        raise EinetValueError(f"{path} is {kind}, not a regular file: einet writes whole files, name a file")
    return target


@contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary file to write `path`'s new content to; on normal exit it atomically replaces `path`.

    The parent directory is created if needed. On an exception inside the block the
    temporary file is removed, `path` is left as it was and the exception propagates.
    The new file gets the usual permissions (0o666 minus the umask), not mkstemp's 0o600.
    """
    path = write_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            if hasattr(os, "fchmod"):
                os.fchmod(file.fileno(), 0o666 & ~process_umask())
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_directory(path.parent)
