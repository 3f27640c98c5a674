"""The manifest: JSON Lines, one utterance per line (schema in DESIGN.md).

Unknown keys are kept and written back unchanged, so every stage can add its own columns
(``evidence``, ``rationale``) without the others knowing about them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

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
# The keys the stages after prepare fill in (`emoreason evidence`, `emoreason rationales`);
# a new run of prepare carries them over for the rows that did not change.
DOWNSTREAM_FIELDS = ("evidence", "rationale")


def _check(row: dict, where: str) -> None:
    for key in REQUIRED:
        if not row.get(key):
            raise ManifestError(f"{where}: missing '{key}'. Every line needs 'id' and 'audio'.")
    if row.get("gender") not in (None, "f", "m"):
        raise ManifestError(f"{where}: gender must be \"f\", \"m\" or null, got {row['gender']!r}.")
    for key in ("valence", "arousal", "dominance"):
        value = row.get(key)
        if value is not None and not -1.0 <= float(value) <= 1.0:
            raise ManifestError(f"{where}: {key}={value} is outside [-1, 1]. Map the corpus "
                                "scale linearly (1..5 -> -1..1) when preparing.")


def read_manifest(path: str | Path, resolve_audio: bool = True) -> list[dict]:
    """Read a manifest, fill absent keys with their defaults and check the contract.

    With ``resolve_audio`` relative ``audio`` paths become absolute, relative to the
    manifest's folder. Raises :class:`ManifestError` naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest. Run `emoreason prepare` first, or "
                            "check the path.")
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
