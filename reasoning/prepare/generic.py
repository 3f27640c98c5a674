"""Any labelled corpus: a folder whose subfolders are labels, or a CSV/TSV/JSONL table.

Table columns are mapped to manifest keys with ``--audio-col``, ``--label-col``,
``--speaker-col``, ... (``PrepareOptions.columns``). A key with no flag uses the column of
the same name when the table has one (and ``audio``/``emotion`` also try the usual
alternatives). Audio paths in a table are relative to the table's folder, or absolute.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from reasoning.errors import UserError
from reasoning.manifest import DIMENSIONS
from reasoning.prepare.clips import manifest_audio_path
from reasoning.prepare.corpus import Corpus, PrepareOptions, normalise_gender
from reasoning.prepare.protocols import Protocol
from reasoning.prepare.tables import read_csv, read_text

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".opus", ".mp3", ".m4a", ".mp4", ".aac", ".webm"}
TABLE_SUFFIXES = {".csv", ".tsv", ".jsonl"}
COLUMN_KEYS = ("id", "audio", "label", "speaker", "gender", "transcript", "split",
               "start", "end", "valence", "arousal", "dominance")
AUTO_NAMES = {"audio": ("audio", "path", "file", "filename", "wav", "audio_path"),
              "label": ("emotion", "label")}


def dataset_name(root: Path, opts: PrepareOptions) -> str:
    """``--name`` or the root's name, lower case, spaces as underscores."""
    name = opts.name or (root.stem if root.is_file() else root.name)
    return re.sub(r"\s+", "_", name.strip().lower()) or "corpus"


def map_label(label: str | None, opts: PrepareOptions, protocol: Protocol) -> str | None:
    if label is None or not str(label).strip():
        return None
    label = str(label).strip()
    label = opts.label_map.get(label, label)
    return protocol.merge.get(label, label)


def base_row(row_id: str, audio: Path, out: Path, name: str) -> dict:
    return {"id": row_id, "audio": manifest_audio_path(audio, out), "start": None, "end": None,
            "dataset": name, "speaker": None, "gender": None, "transcript": None,
            "emotion": None, "emotion_votes": None, "valence": None, "arousal": None,
            "dominance": None, "va_source": None, "split": None,
            "_src": str(audio)}


def load_folder(root: Path, out: Path, opts: PrepareOptions, protocol: Protocol,
                corpus: Corpus) -> None:
    """``root/<label>/.../<clip>``: one row per audio file, labelled by its top folder."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in
                   AUDIO_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise UserError(f"{root}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) in its "
                        "subfolders. Put each label's clips in a subfolder named after the "
                        "label, or pass a CSV/JSONL table as --root.")
    stems = [p.stem for p in files]
    unique = len(set(stems)) == len(stems)
    for path in files:
        rel = path.relative_to(root)
        if len(rel.parts) < 2:
            corpus.drop(path.stem, str(path), "audio file directly in the root, not in a label "
                        "subfolder; move it into <root>/<label>/")
            continue
        row_id = path.stem if unique else "_".join(rel.with_suffix("").parts)
        row = base_row(row_id, path, out, corpus.dataset)
        row["emotion"] = map_label(rel.parts[0], opts, protocol)
        row["_where"] = str(path)
        corpus.rows.append(row)
    corpus.notes.append("folder layout: labels from the subfolder names; no speaker "
                        "information, so splits cannot be made speaker-disjoint.")


def _read_table(path: Path, corpus: Corpus,
                opts: PrepareOptions) -> tuple[list[str], list[tuple[str, dict]]]:
    """(columns, [(where, record), ...]) of a CSV/TSV/JSONL file."""
    if path.suffix.lower() != ".jsonl":
        # Only the transcript is free text that may span lines.
        return read_csv(path, corpus, delimiter="\t" if path.suffix.lower() == ".tsv" else ",",
                        multiline=(opts.columns.get("transcript") or "transcript",))
    columns: dict[str, None] = {}
    records = []
    for n, line in enumerate(read_text(path, corpus).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            corpus.drop(None, f"{path}:{n}", f"not valid JSON ({err.msg}); fix the line")
            continue
        if not isinstance(record, dict):
            corpus.drop(None, f"{path}:{n}", "not a JSON object; fix the line")
            continue
        columns.update(dict.fromkeys(record))
        records.append((f"{path}:{n}", record))
    return list(columns), records


def _resolve_columns(path: Path, available: list[str], opts: PrepareOptions) -> dict[str, str]:
    unknown = set(opts.columns) - set(COLUMN_KEYS)
    if unknown:
        raise UserError(f"unknown column key(s) {sorted(unknown)}; keys are "
                        f"{', '.join(COLUMN_KEYS)}.")
    mapping = {}
    for key in COLUMN_KEYS:
        if opts.columns.get(key):
            if opts.columns[key] not in available:
                raise UserError(f"{path}: no column {opts.columns[key]!r} (given for {key}); "
                                f"the columns are {', '.join(available)}. Fix --{key}-col.")
            mapping[key] = opts.columns[key]
            continue
        for candidate in AUTO_NAMES.get(key, (key,)):
            if candidate in available:
                mapping[key] = candidate
                break
    if "audio" not in mapping:
        raise UserError(f"{path}: no audio column (tried {', '.join(AUTO_NAMES['audio'])}); "
                        f"the columns are {', '.join(available)}. Name it with --audio-col.")
    return mapping


def _default_id(audio: Path, base: Path) -> str:
    """The audio path under the table's folder without its suffix; the stem elsewhere."""
    try:
        return audio.with_suffix("").relative_to(base).as_posix()
    except ValueError:
        return audio.stem


def _number(value, key: str) -> float | None:
    if value is None or str(value).strip() == "":
        return None
    try:
        return float(str(value).strip())
    except ValueError:
        raise ValueError(f"{key} {value!r} is not a number") from None


def scale_dimension(value, key: str, lo: float, hi: float) -> float | None:
    """A dimensional value on the scale ``lo..hi`` mapped linearly to -1..1 (None when empty);
    ValueError for a value that is not a number or lies outside the scale."""
    x = _number(value, key)
    if x is None:
        return None
    if not lo <= x <= hi:
        raise ValueError(f"{key} {x} is outside --va-range {lo:g},{hi:g}")
    return round(2 * (x - lo) / (hi - lo) - 1, 4)


def load_table(path: Path, out: Path, opts: PrepareOptions, protocol: Protocol,
               corpus: Corpus) -> None:
    """One row per table record, through the column map."""
    corpus.inputs.append(path)
    available, records = _read_table(path, corpus, opts)
    cols = _resolve_columns(path, available, opts)
    lo, hi = (float(x) for x in opts.va_range)
    if not hi > lo:
        raise UserError(f"--va-range {lo:g},{hi:g}: the high end must be above the low end.")
    if any(k in cols for k in ("valence", "arousal", "dominance")):
        corpus.va_source = "annotated"
    if "split" in cols:
        corpus.default_split = "official"
    if "label" not in cols:
        corpus.notes.append("no label column: emotion is empty (usable for ASR/VA tasks).")
    seen: dict[str, str] = {}
    bad_gender = 0
    for where, record in records:
        get = lambda key: record.get(cols[key]) if key in cols else None  # noqa: E731
        audio = str(get("audio") or "").strip()
        if not audio:
            corpus.drop(None, where, f"empty audio column {cols['audio']!r}; fill it or remove "
                        "the row")
            continue
        audio_path = Path(audio) if Path(audio).is_absolute() else path.parent / audio
        row_id = str(get("id") or "").strip() or _default_id(audio_path, path.parent)
        if row_id in seen:
            corpus.drop(row_id, where, f"duplicate id (first at {seen[row_id]})")
            continue
        row = base_row(row_id, audio_path, out, corpus.dataset)
        try:
            row["start"], row["end"] = _number(get("start"), "start"), _number(get("end"), "end")
            for key in DIMENSIONS:
                row[key] = scale_dimension(get(key), key, lo, hi)
        except ValueError as err:
            corpus.drop(row_id, where, f"{err}; fix the row")
            continue
        if row["valence"] is not None or row["arousal"] is not None:
            row["va_source"] = "annotated"
        speaker = str(get("speaker") or "").strip()
        row["speaker"] = speaker or None
        if get("gender") not in (None, ""):
            row["gender"] = normalise_gender(get("gender"))
            bad_gender += row["gender"] is None
        row["transcript"] = str(get("transcript") or "").strip() or None
        row["emotion"] = map_label(get("label"), opts, protocol)
        if "split" in cols:
            row["split"] = str(get("split") or "").strip() or None
            if row["split"] is None:
                corpus.drop(row_id, where, f"empty split column {cols['split']!r}; fill it or "
                            "drop --split-col")
                continue
        row["_where"] = where
        seen[row_id] = where
        corpus.rows.append(row)
    if bad_gender:
        corpus.problems.append(f"{path}: {bad_gender} rows have a gender other than f/m "
                               "(female/male, woman/man); left empty.")


def load(root: Path, out: Path, opts: PrepareOptions, protocol: Protocol) -> Corpus:
    """A folder of label subfolders, or a table file given as ``root``."""
    # Speaker-disjoint unless the table has a split column. A row without a speaker then
    # stops the split (splits.require_speakers) once the audio stage has dropped what it
    # drops, so that a row left out of the manifest cannot change the split.
    corpus = Corpus(dataset_name(root, opts), [], va_source="derived",
                    default_split="speaker-random", labels=tuple(opts.labels or protocol.labels))
    if root.is_file():
        if root.suffix.lower() not in TABLE_SUFFIXES:
            raise UserError(f"{root}: a table must be .csv, .tsv or .jsonl; for a folder of "
                            "label subfolders pass the folder.")
        load_table(root, out, opts, protocol, corpus)
    else:
        load_folder(root, out, opts, protocol, corpus)
    return corpus
