"""Writing files and folders so that a killed process never leaves half of one, and
telling when a file the caches read has changed."""

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
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        yield tmp
        os.chmod(tmp, dir_mode())  # mkdtemp makes it 0700 whatever the umask
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
        if old is not None:
            shutil.rmtree(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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


def file_stamp(path: str | Path) -> tuple[int, int]:
    """``(size, mtime_ns)`` of a file: the content identity every cache of per-clip results
    is keyed on. Far cheaper than hashing the audio, and a replaced, rewritten or cut file
    changes it. Raises :class:`OSError` when the file is gone."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


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
