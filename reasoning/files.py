"""Writing files and folders so that a killed process never leaves half of one."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; when the block ends without an error it
    takes the place of ``final``, otherwise it is removed.

    An existing ``final`` is first renamed aside and deleted only after the new folder is in
    place, so a complete copy exists at every moment (under the ``.old-`` name for the instant
    between the two renames).
    The new folder's files reach the disk before the rename does, so a power cut cannot leave
    empty files under the final name.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        yield tmp
        os.chmod(tmp, dir_mode())  # mkdtemp makes it 0700 whatever the umask
        for folder, _, names in os.walk(tmp):
            for name in names:
                _fsync(os.path.join(folder, name))
            _fsync(folder)
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old-"))
            os.replace(final, old)
        try:
            os.replace(tmp, final)
        except BaseException:
            if old is not None:  # the swap failed: the old copy goes back in place
                os.replace(old, final)
            raise
        _fsync(final.parent)
        if old is not None:
            shutil.rmtree(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fsync(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(final: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator:
    """Yield a file object open on a temporary file beside ``final``; when the block ends
    without an error the file is flushed to disk and renamed over ``final`` (with the mode a
    plain ``open()`` would give it), otherwise it is removed. Readers see the old file or
    the whole new one, never a part."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.tmp-")
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())  # mkstemp makes it 0600 whatever the umask
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a plain ``open()`` would give a new file under the current umask."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """The mode a plain ``mkdir`` would give a new folder under the current umask."""
    return 0o777 & ~_umask()
