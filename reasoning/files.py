"""Writing files and folders so that a killed process never leaves half of one, and
telling when a file the caches read has changed."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)


@contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; when the block ends without an error it
    takes the place of ``final``, otherwise it is removed.

    An existing ``final`` is first renamed aside and deleted only after the new folder is in
    place, so a complete copy exists at every moment (under the ``.old-`` name for the instant
    between the two renames: :func:`clean_leftovers` puts it back if the process dies there).
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


def remove_dir(path: str | Path) -> None:
    """Delete a folder so that a process killed midway leaves no part of it under its name:
    it is renamed aside (``.<name>.del-*``, which :func:`clean_leftovers` deletes) first."""
    path = Path(path)
    aside = tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.del-")
    os.replace(path, aside)
    shutil.rmtree(aside)


def clean_leftovers(parent: str | Path, names: str) -> None:
    """Finish what a killed :func:`atomic_dir` or :func:`remove_dir` left in ``parent`` for
    the folders called ``names`` (a glob): an old copy renamed aside whose new copy never
    arrived goes back in place, every other temporary folder is deleted.

    Only the process that writes ``parent`` may call it: in another one, it would delete the
    folder a running save is writing."""
    parent = Path(parent)
    for aside in sorted(parent.glob(f".{names}.old-*")):
        final = parent / aside.name[1:].rpartition(".old-")[0]
        if not final.exists():
            os.replace(aside, final)
            log.warning("put %s back as %s: the save that was replacing it was killed", aside.name, final)
    for tag in ("tmp", "old", "del"):
        for left in sorted(parent.glob(f".{names}.{tag}-*")):
            shutil.rmtree(left)
            log.info("removed %s, left in %s by a save that was killed", left.name, parent)


def _fsync(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(final: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield the path of an empty temporary file beside ``final`` (ending in ``suffix``, for
    tools that tell the format by it); when the block ends without an error the file is
    renamed over ``final`` (with the mode a plain ``open()`` would give it), otherwise it is
    removed. Readers see the old file or the whole new one, never a part. This is the one
    home of the write-then-rename idiom; :func:`atomic_file` opens the path for Python."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.tmp-", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, file_mode())  # mkstemp makes it 0600 whatever the umask
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_file(final: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator:
    """Yield a file object open on a temporary file beside ``final``, flushed to disk and
    renamed over it when the block ends without an error (:func:`atomic_path`)."""
    with atomic_path(final) as tmp, open(tmp, mode, encoding=None if "b" in mode else encoding) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


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
