"""Reading the manifest: a line that breaks the contract is named, never a traceback later."""

import json

import pytest

from reasoning.errors import ManifestError
from reasoning.manifest import read_manifest

GOOD = {"id": "u0", "audio": "u0.wav", "start": 0, "end": 1.5, "valence": 0.5,
        "emotion_votes": {"angry": 2, "sad": 1}, "rationale": {"text": "angry: loud."},
        "evidence": {"values": {}}, "transcript": "hi", "speaker": "s1"}


def write(tmp_path, *rows):
    path = tmp_path / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_well_typed_lines_are_read(tmp_path):
    assert read_manifest(write(tmp_path, GOOD), resolve_audio=False)[0]["valence"] == 0.5


@pytest.mark.parametrize("key, value, expected", [
    ("valence", "high", "a number"),
    ("arousal", True, "a number"),
    ("start", "0.5", "a number"),
    ("audio", 123, "a string"),
    ("id", 7, "a string"),
    ("transcript", ["hi"], "a string"),
    ("speaker", 3, "a string"),
    ("rationale", "angry: a loud voice", "an object"),
    ("rationale", {"text": 5}, "a string"),
    ("evidence", [], "an object"),
    ("emotion_votes", ["angry", "angry"], "an object"),
    ("emotion_votes", {"angry": "two"}, "a number"),
])
def test_a_wrongly_typed_field_is_named_with_its_line_and_type(tmp_path, key, value, expected):
    path = write(tmp_path, GOOD, {**GOOD, "id": "u1", key: value})
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    msg = str(err.value)
    assert f"{path}:2" in msg and key in msg and expected in msg, msg


def test_a_rewritten_manifest_follows_the_umask(tmp_path):
    """mkstemp makes 0600 files: a manifest rewritten in place was private on a shared machine."""
    import os
    import stat

    from reasoning.manifest import write_manifest

    path = tmp_path / "manifest.jsonl"
    old = os.umask(0o002)
    try:
        write_manifest([{"id": "a", "audio": "a.wav"}], path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o664
