"""The manifest: JSON Lines, one utterance per line (schema in DESIGN.md).

Unknown keys are kept and written back unchanged, so every stage can add its own columns
(``evidence``, ``rationale``) without the others knowing about them.
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from reasoning.errors import ManifestError
from reasoning.files import atomic_file

MANIFEST_NAME = "manifest.jsonl"

# Every key of the contract, with its default when a line leaves it out.
FIELDS: dict[str, Any] = {
    "id": None,
    "audio": None,
    "start": None,
    "end": None,
    "dataset": None,
    "speaker": None,
    "gender": None,
    "transcript": None,
    "emotion": None,
    "emotion_votes": None,
    "valence": None,
    "arousal": None,
    "dominance": None,
    "va_source": None,
    "split": None,
    "evidence": None,
    "rationale": None,
}
REQUIRED = ("id", "audio")
# The dimensional keys, each in [-1, 1]: the VA head predicts the first two, or all three
# with `heads.dimensions: [valence, arousal, dominance]`.
DIMENSIONS = ("valence", "arousal", "dominance")
# The keys the stages after prepare fill in (`emoreason evidence`, `emoreason rationales`);
# a new run of prepare carries them over for the rows that did not change.
DOWNSTREAM_FIELDS = ("evidence", "rationale")
# The JSON type of each key when it is not null. Checked where a manifest is read, so a
# hand-edited line fails here with its line number instead of as a traceback in a later stage.
TYPES = {"id": "string", "audio": "string", "start": "number", "end": "number",
         "dataset": "string", "speaker": "string", "gender": "string", "transcript": "string",
         "emotion": "string", "emotion_votes": "object", "valence": "number",
         "arousal": "number", "dominance": "number", "va_source": "string", "split": "string",
         "evidence": "object", "rationale": "object"}
_ARTICLE = {"string": "a string", "number": "a number", "object": "an object"}


def _json_type(value: Any) -> str:
    if isinstance(value, bool):  # a bool is an int to Python, never a number to JSON
        return "boolean"
    return {str: "string", int: "number", float: "number", dict: "object",
            list: "array", type(None): "null"}[type(value)]


def _expect(value: Any, kind: str, what: str, where: str) -> None:
    if _json_type(value) != kind:
        raise ManifestError(f"{where}: {what} must be {_ARTICLE[kind]}, got "
                            f"{_json_type(value)} {json.dumps(value)[:60]}. Fix the line "
                            "(DESIGN.md lists the manifest keys and their types).")


def _check(row: dict, where: str) -> None:
    for key in REQUIRED:
        if not row.get(key):
            raise ManifestError(f"{where}: missing '{key}'. Every line needs 'id' and 'audio'.")
    for key, kind in TYPES.items():
        if row.get(key) is not None:
            _expect(row[key], kind, f"'{key}'", where)
    for label, count in (row.get("emotion_votes") or {}).items():
        _expect(count, "number", f"'emotion_votes' count of {label!r}", where)
    if (row.get("rationale") or {}).get("text") is not None:
        _expect(row["rationale"]["text"], "string", "'rationale.text'", where)
    if row.get("gender") not in (None, "f", "m"):
        raise ManifestError(f"{where}: gender must be \"f\", \"m\" or null, got {row['gender']!r}.")
    for key in DIMENSIONS:
        value = row.get(key)
        if value is not None and not -1.0 <= value <= 1.0:
            raise ManifestError(f"{where}: {key}={value} is outside [-1, 1]. Map the corpus "
                                "scale linearly (1..5 -> -1..1) when preparing.")


def require_manifest(path: Path) -> None:
    """Raise :class:`ManifestError` unless ``path`` is a file: checked before a stage locks
    its manifest, so that a mistyped path fails without leaving a lock file or folder."""
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest. Run `emoreason prepare` first, or "
                            "check the path.")


def read_manifest(path: str | Path, resolve_audio: bool = True) -> list[dict]:
    """Read a manifest, fill absent keys with their defaults and check the contract.

    With ``resolve_audio`` relative ``audio`` paths become absolute, relative to the
    manifest's folder. Raises :class:`ManifestError` naming the file and line.
    """
    path = Path(path)
    require_manifest(path)
    rows, seen = [], {}
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ManifestError(f"{where}: not valid JSON ({err.msg}). Fix or remove the "
                                    "line.") from err
            if not isinstance(row, dict):
                raise ManifestError(f"{where}: each line must be a JSON object.")
            _check(row, where)
            if row["id"] in seen:
                raise ManifestError(f"{where}: duplicate id {row['id']!r} (first on line "
                                    f"{seen[row['id']]}). Ids must be unique.")
            seen[row["id"]] = n
            row = {**FIELDS, **row}
            if resolve_audio and not os.path.isabs(row["audio"]):
                row["audio"] = str((path.parent / row["audio"]).resolve())
            rows.append(row)
    return rows


def write_manifest(rows: Iterable[dict], path: str | Path) -> Path:
    """Write rows atomically (a temporary file renamed over the target)."""
    path = Path(path)
    with atomic_file(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


@contextmanager
def locked_manifest(path: str | Path, stage: str) -> Iterator[Path]:
    """Hold ``<manifest>.lock`` while ``stage`` reads, changes and writes the manifest.

    Each stage writes back every row it read, so two stages rewriting one manifest at once
    lose the earlier one's work without a word. The lock is advisory (``fcntl.flock`` on a
    file beside the manifest, released by the system when the process dies). A second stage
    refuses at once, naming the one that holds it, rather than waiting an unknown time
    behind a run that can take hours. The lock file is left in place: removing it would race
    with a stage that has just opened it.
    """
    path = Path(path)
    lock = path.with_name(path.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)  # less the umask, like open()
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another stage"
            raise ManifestError(f"{path}: {holder} is changing this manifest. Wait until it "
                                "has finished, or write this stage's result elsewhere with "
                                "--out.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"`emoreason {stage}` (pid {os.getpid()})".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock
