"""The later stages' work survives a new run of ``prepare``.

The README's workflow prepares into a folder, then runs ``emoreason evidence`` and
``emoreason rationales`` on that manifest in place. When the corpus changes and prepare
runs again, it writes the manifest anew; :func:`carry_over` copies the old rows'
:data:`~reasoning.manifest.DOWNSTREAM_FIELDS` (``evidence``, ``rationale``) into the new
rows that did not change, and leaves them empty, with a count in the log, for those that did.

A row is *changed* when anything its evidence or rationale was made from differs, as
:func:`row_digest` records it:

- the audio it was measured on: ``audio`` (the path), ``start``, ``end``, and the size and
  modification time of the file, so a clip re-recorded under the same name counts, and so
  does a clip merely touched (measured again rather than trusted);
- what the rationale states and is verified against: ``emotion`` and ``transcript``.

The speaker, gender, split and valence/arousal are not part of it: they change no measured
value. The z-scores against the speaker's baseline (which also move when rows come or go)
are recomputed by every run of the evidence stage, and the rationales stage keeps an old
rationale only if it still passes against them, hence the log's advice to run both again.
card.json keeps each row's digest (``row_digests``); a row whose digest the old card lacks
(an output of an older emoreason) counts as changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from reasoning.errors import ManifestError, UserError
from reasoning.manifest import DOWNSTREAM_FIELDS, read_manifest
from reasoning.prepare.corpus import file_stamp

log = logging.getLogger(__name__)

SHOW_IDS = 10   # changed rows named in the log line


def row_digest(row: dict, out: Path) -> str:
    """Digest of what a manifest row's evidence and rationale depend on (module docstring).
    ``out`` is the manifest's folder, which relative ``audio`` paths start from."""
    key = {k: row.get(k) for k in ("audio", "start", "end", "emotion", "transcript")}
    key["file"] = file_stamp(out / row["audio"])
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def read_downstream(manifest: Path) -> dict[str, dict]:
    """``id -> {field: value}`` of the :data:`DOWNSTREAM_FIELDS` in the manifest prepare is
    about to write over, for the rows that have any (``{}`` when there is no manifest).

    Raises :class:`UserError` when it cannot be read: writing over it would lose what it
    holds. Called before the audio stage, so that this stops a run before its slow part.
    """
    if not manifest.is_file():
        return {}
    try:
        rows = read_manifest(manifest, resolve_audio=False)
    except ManifestError as err:
        raise UserError(f"{err} prepare would write over it and lose the evidence and "
                        "rationales it holds: fix it, or move it away to prepare afresh.") from err
    return {r["id"]: {k: r[k] for k in DOWNSTREAM_FIELDS} for r in rows
            if any(r[k] is not None for k in DOWNSTREAM_FIELDS)}


def carry_over(rows: list[dict], old: dict[str, dict], digests: dict[str, str],
               old_digests: dict[str, str] | None, manifest: Path) -> None:
    """Fill the downstream fields of ``rows`` (manifest rows, in place) from ``old``
    (:func:`read_downstream` of ``manifest``) where the row's digest is the one the previous
    card recorded (``old_digests``); log how many were kept, and which changed rows lost
    theirs.
    """
    old_digests = old_digests or {}
    kept, dropped = 0, []
    for row in rows:
        if row["id"] not in old:
            continue
        if old_digests.get(row["id"]) == digests[row["id"]]:
            row.update(old[row["id"]])
            kept += 1
        else:
            dropped.append(row["id"])
    if dropped:
        names = ", ".join(dropped[:SHOW_IDS]) + (f", ... ({len(dropped) - SHOW_IDS} more)"
                                                 if len(dropped) > SHOW_IDS else "")
        why = ("their audio, times, label or transcript differ" if old_digests else
               "the old card.json, from an older emoreason, records no row digests to check")
        log.warning("%s: kept evidence and rationales of %d rows; dropped them for %d changed "
                    "row%s: %s (%s). Run `emoreason evidence` and `emoreason rationales` on it "
                    "again to fill them in.", manifest, kept, len(dropped),
                    "s" * (len(dropped) != 1), names, why)
    elif kept:
        log.info("%s: kept evidence and rationales of %d rows (none changed).", manifest, kept)
