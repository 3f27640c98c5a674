import os
import shutil
import stat

import pytest

from reasoning import files
from reasoning.files import atomic_dir, atomic_file


def test_atomic_dir_replaces_a_folder_only_once_the_new_one_is_whole(tmp_path):
    final = tmp_path / "checkpoint-000004"
    final.mkdir()
    (final / "weights").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("killed while writing")
    assert (final / "weights").read_text() == "old"
    with atomic_dir(final) as tmp:
        (tmp / "weights").write_text("new")
    assert (final / "weights").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-000004"]  # nothing left behind


def test_a_failed_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    final = tmp_path / "run"
    final.mkdir()
    (final / "weights").write_text("old")
    real = os.replace

    def replace(src, dst):
        if ".tmp-" in str(src):
            raise OSError("disk full")
        real(src, dst)

    monkeypatch.setattr(files.os, "replace", replace)
    with pytest.raises(OSError):
        with atomic_dir(final) as tmp:
            (tmp / "weights").write_text("new")
    assert (final / "weights").read_text() == "old"


def test_the_new_folder_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "shared") as tmp:
            (tmp / "f").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == 0o755


def test_atomic_file_keeps_the_old_file_until_the_new_one_is_whole(tmp_path):
    target = tmp_path / "rows.jsonl"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as f:
            f.write("half of the new")
            raise RuntimeError("killed")
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["rows.jsonl"]
    old = os.umask(0o002)
    try:
        with atomic_file(target) as f:
            f.write("new\n")
    finally:
        os.umask(old)
    assert target.read_text() == "new\n" and stat.S_IMODE(target.stat().st_mode) == 0o664


def test_atomic_dir_flushes_every_file_to_disk_before_the_swap(tmp_path, monkeypatch):
    """Without it a power cut after the rename can leave empty files under a whole name."""
    synced, swaps = [], []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(src, dst):
        swaps.append(set(synced))
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "fsync", fsync)
    monkeypatch.setattr(files.os, "replace", replace)
    with atomic_dir(tmp_path / "checkpoint-000004") as tmp:
        (tmp / "adapter").mkdir()
        (tmp / "adapter" / "weights").write_text("w")
        (tmp / "state.json").write_text("{}")
        written = {str(p.resolve()) for p in [tmp, tmp / "adapter", tmp / "adapter" / "weights", tmp / "state.json"]}
    assert written - swaps[0] == set(), "each file and folder is on disk before the rename"
    assert str(tmp_path.resolve()) in synced[len(swaps[0]):], "and so is the rename"


def test_a_failed_ffmpeg_extraction_leaves_no_file(tmp_path):
    """prepare/clips.py writes through atomic_path: a clip ffmpeg cannot read leaves nothing
    that a later run would take as extracted."""
    from reasoning.errors import AudioError
    from reasoning.prepare.clips import extract_wav
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    src = tmp_path / "broken.mp4"
    src.write_bytes(b"not a video")
    with pytest.raises(AudioError, match="ffmpeg could not extract"):
        extract_wav(str(src), str(tmp_path / "wav" / "broken.wav"))
    assert os.listdir(tmp_path / "wav") == []
