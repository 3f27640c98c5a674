"""Corpora as Hugging Face ``datasets``: prepare a manifest from one, and export one.

``emoreason prepare hf --dataset ID_OR_PATH`` reads a dataset from the hub (online), or from
a local ``save_to_disk`` folder, a parquet file or a folder of parquet files (offline), and
maps its columns to the manifest (:func:`load`, a loader of :func:`reasoning.prepare.prepare`):

- the audio column is the first ``Audio`` feature (or a ``{bytes, path}`` or ``{array,
  sampling_rate}`` struct, or a string column of file paths named like one); the label
  column the first ``ClassLabel`` or a column named like a label; speaker, gender,
  transcript, split, id, start, end and the VA dimensions columns of the usual names. The
  ``--*-column`` flags (``PrepareOptions.columns``) choose others; a column that is not
  there is an error listing the columns that are.
- audio stored in the dataset (bytes, or arrays: written as float WAV) is written once to
  ``<out>/audio/`` and reused while its bytes are the same; audio given by path is read in
  place (a relative path is relative to the local dataset's folder).
- a ``DatasetDict``'s split names become ``split`` unless a split column is mapped.
- columns the manifest contract also has (``dataset``, ``emotion_votes``, ``va_source``,
  ``evidence``, ``rationale``) and any other plain column are kept in the rows.

Audio is never decoded by ``datasets`` (whose decoder needs torchcodec): the rows are read
as Arrow, and every clip is decoded by :mod:`reasoning.audio` in the audio stage.

:func:`export_manifest` (``emoreason export --manifest M --to hf OUT``) writes a prepared
manifest as a ``datasets.Dataset`` with an ``Audio`` feature (the clips embedded) and every
manifest key as a column. Two marks in the features make the round trip exact:
object-valued keys (``emotion_votes``, ``evidence``, ``rationale``) are JSON strings whose
feature ``id`` is :data:`JSON_ID`, and the dimensional columns carry :data:`SCALE_ID`, the
manifest's own [-1, 1] scale, which ``prepare hf`` then takes instead of ``--va-range``.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from reasoning.errors import ManifestError, UserError
from reasoning.files import atomic_dir, atomic_file
from reasoning.manifest import DIMENSIONS, FIELDS, read_manifest
from reasoning.prepare.corpus import Corpus, PrepareOptions, normalise_gender
from reasoning.prepare.generic import (AUDIO_SUFFIXES, COLUMN_KEYS, base_row, dataset_name,
                                       map_label, scale_dimension)
from reasoning.prepare.protocols import Protocol
from reasoning.prepare.splits import LeakageError, check_splits

log = logging.getLogger(__name__)

AUDIO_DIR = "audio"
JSON_ID = "emoreason:json"            # a string column holding JSON (objects, lists)
SCALE_ID = "emoreason:scale=-1,1"     # a dimensional column already on the manifest's scale
BATCH = 256                           # rows per Arrow batch read
# Column names tried, in order, for a manifest key that no --*-column names.
AUTO_NAMES = {
    "id": ("id", "utterance_id", "utt_id", "file_id", "segment_id", "key"),
    "audio": ("audio", "path", "file", "filename", "wav", "audio_path", "audio_file"),
    "label": ("emotion", "label", "labels", "emotion_label", "major_emotion", "emotion_class"),
    "speaker": ("speaker", "speaker_id", "spk", "spk_id", "speakerid", "actor", "actor_id"),
    "gender": ("gender", "sex"),
    "transcript": ("transcript", "text", "transcription", "sentence", "utterance",
                   "normalized_text"),
    "split": ("split",),
    "start": ("start",), "end": ("end",),
    "valence": ("valence",), "arousal": ("arousal",), "dominance": ("dominance",),
}
# Contract keys a dataset column may carry under the same name (an export of ours does).
PASSTHROUGH = ("dataset", "emotion_votes", "va_source", "evidence", "rationale")
MAGIC = ((b"RIFF", ".wav"), (b"fLaC", ".flac"), (b"OggS", ".ogg"), (b"ID3", ".mp3"),
         (b"\xff\xfb", ".mp3"), (b"\xff\xf3", ".mp3"), (b"\xff\xf2", ".mp3"))


# ------------------------------------------------------------------------------ reading

def _datasets():
    """The ``datasets`` module, imported when first used: it pulls in pandas and pyarrow,
    which the stages that import :mod:`reasoning.prepare` for its protocols never need."""
    import datasets

    return datasets


def open_dataset(source: str) -> tuple[dict, list[Path], Path | None]:
    """``({split: Dataset}, files read, local folder)`` of ``source``: a ``save_to_disk``
    folder, a parquet file, a folder of data files, or a hub id (cached, or online).

    A single ``Dataset`` comes back under the split ``None``. Raises :class:`UserError`
    saying what to do when it cannot be read.
    """
    datasets = _datasets()
    path = Path(source).expanduser()
    saved = path.is_dir() and any((path / n).is_file() for n in
                                  ("dataset_dict.json", "state.json", "dataset_info.json"))
    if path.is_file() and path.suffix.lower() != ".parquet":
        raise UserError(f"--dataset {source}: a file must be .parquet; for a CSV or JSONL table "
                        "use `emoreason prepare generic --root FILE`.")
    files: list[Path] = []
    try:
        if saved:
            loaded = datasets.load_from_disk(str(path))
        elif path.is_file():
            files = [path]
            loaded = datasets.load_dataset("parquet", data_files=str(path))
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
            loaded = datasets.load_dataset(str(path))
        else:
            loaded = datasets.load_dataset(source)
    except (OSError, ValueError) as err:
        where = ("a local folder" if path.exists() else
                 "a hub id (no such local file or folder)")
        raise UserError(
            f"--dataset {source}: cannot load it as {where} ({type(err).__name__}: {err}). "
            "Offline, load it where the hub can be reached and save it with "
            "`datasets.load_dataset(ID).save_to_disk(DIR)`, then pass --dataset DIR.") from err
    splits = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {None: loaded}
    for ds in splits.values():
        files += [Path(f["filename"]) for f in ds.cache_files]
    return splits, sorted(set(files)), (path if path.exists() else None)


def _feature_kind(feature) -> str | None:
    """``audio`` ({bytes, path}), ``array`` ({array, sampling_rate}), ``path`` (a string)
    or None: how a column can hold audio."""
    datasets = _datasets()
    if isinstance(feature, datasets.Audio):
        return "audio"
    if isinstance(feature, dict):
        if {"bytes", "path"} <= set(feature):
            return "audio"
        if {"array", "sampling_rate"} <= set(feature):
            return "array"
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        return "path"
    return None


def _describe(features: dict) -> str:
    return ", ".join(f"{name} ({type(f).__name__ if not isinstance(f, dict) else 'struct'})"
                     for name, f in features.items())


def resolve_columns(source: str, features: dict, opts: PrepareOptions) -> dict[str, str]:
    """Manifest key -> dataset column, from ``opts.columns`` and the features."""
    datasets = _datasets()
    unknown = set(opts.columns) - set(COLUMN_KEYS)
    if unknown:
        raise UserError(f"unknown column key(s) {sorted(unknown)}; keys are {', '.join(COLUMN_KEYS)}.")
    mapping: dict[str, str] = {}
    for key, column in opts.columns.items():
        if column not in features:
            raise UserError(f"--dataset {source}: no column {column!r} (given with --{key}-column); "
                            f"the columns are {_describe(features)}. Fix --{key}-column.")
        mapping[key] = column
    if "audio" in mapping and _feature_kind(features[mapping["audio"]]) is None:
        raise UserError(f"--dataset {source}: column {mapping['audio']!r} holds no audio (an Audio "
                        "feature, a {bytes, path} or {array, sampling_rate} struct, or file paths); "
                        f"the columns are {_describe(features)}. Fix --audio-column.")
    if "audio" not in mapping:
        found = [c for c, f in features.items() if _feature_kind(f) in ("audio", "array")] or \
                [c for c in AUTO_NAMES["audio"] if c in features and _feature_kind(features[c])]
        if not found:
            raise UserError(f"--dataset {source}: no audio column (no Audio feature, no "
                            f"{{bytes, path}} or {{array, sampling_rate}} struct, no string column "
                            f"named {', '.join(AUTO_NAMES['audio'])}); the columns are "
                            f"{_describe(features)}. Name it with --audio-column.")
        mapping["audio"] = found[0]
    if "label" not in mapping:
        labels = [c for c, f in features.items() if isinstance(f, datasets.ClassLabel)
                  and c not in mapping.values()]
        named = [c for c in AUTO_NAMES["label"] if c in features and c not in mapping.values()]
        preferred = [c for c in named if c in labels] or named or labels
        if preferred:
            mapping["label"] = preferred[0]
    taken = set(mapping.values())
    for key in COLUMN_KEYS:
        if key in mapping:
            continue
        for candidate in AUTO_NAMES[key]:
            if candidate in features and candidate not in taken:
                mapping[key] = candidate
                taken.add(candidate)
                break
    return mapping


def _scale(feature, opts: PrepareOptions) -> tuple[float, float]:
    """The scale of a dimensional column: [-1, 1] when an export marked it, else --va-range."""
    if getattr(feature, "id", None) == SCALE_ID:
        return -1.0, 1.0
    return tuple(float(x) for x in opts.va_range)


def _decoder(feature):
    """value -> what the manifest keeps: a ClassLabel's name, parsed JSON, or the value."""
    datasets = _datasets()
    if isinstance(feature, datasets.ClassLabel):
        return lambda v: None if v is None or v < 0 else feature.int2str(int(v))
    if getattr(feature, "id", None) == JSON_ID:
        return lambda v: None if v is None else json.loads(v)
    return lambda v: v


def _plain(feature) -> bool:
    """Whether a column not mapped to a manifest key can be kept in the rows as it is."""
    datasets = _datasets()
    if isinstance(feature, datasets.ClassLabel) or getattr(feature, "id", None) == JSON_ID:
        return True
    return isinstance(feature, datasets.Value) and feature.dtype not in ("binary", "large_binary")


def _extension(path: str | None, data: bytes) -> str:
    suffix = Path(path).suffix.lower() if path else ""
    if suffix in AUDIO_SUFFIXES:
        return suffix
    for magic, ext in MAGIC:
        if data.startswith(magic):
            return ext
    if data[4:8] == b"ftyp":
        return ".m4a"
    return ".audio"  # decoded by ffmpeg, which reads the content, not the name


def write_once(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` unless it already holds exactly those bytes (so a second
    run changes no file, and no modification time); True when written."""
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    with atomic_file(path, "wb") as f:
        f.write(data)
    return True


def _array_wav(value: dict) -> bytes:
    """A float WAV of an ``{array, sampling_rate}`` value (float keeps every sample exact)."""
    wave = np.asarray(value["array"], dtype=np.float32)
    if wave.ndim == 2 and wave.shape[0] < wave.shape[1]:   # (channels, samples)
        wave = wave.T
    buf = io.BytesIO()
    sf.write(buf, wave, int(value["sampling_rate"]), format="WAV", subtype="FLOAT")
    return buf.getvalue()


def _file_name(row_id: str, used: set[str]) -> str:
    """A file name for ``row_id``: its characters that are safe in a path, made unique."""
    base = re.sub(r"[^\w.-]+", "_", row_id).strip("._") or "clip"
    name, n = base, 1
    while name in used:
        n += 1
        name = f"{base}_{n}"
    used.add(name)
    return name


def _column(ds, column: str, field: str | None = None) -> list:
    """Every value of one column (of one ``field`` of a struct column), read as Arrow: an
    audio column's paths come without its bytes."""
    out: list = []
    for table in ds.select_columns([column]).with_format("arrow").iter(batch_size=4 * BATCH):
        values = table.column(column).combine_chunks()
        out += (values.field(field) if field else values).to_pylist()
    return out


def _ids(splits: dict, cols: dict[str, str], kind: str) -> dict:
    """``{split: [id per row]}``: the id column; else the audio file's stem (``<split>-<row
    number>`` for a row without a path) when these are unique over the dataset; else
    ``<split>-<row number>`` for every row."""
    if "id" in cols:
        return {s: [None if v is None or str(v).strip() == "" else str(v).strip()
                    for v in _column(ds, cols["id"])] for s, ds in splits.items()}
    if kind == "array":
        paths = {s: [None] * len(ds) for s, ds in splits.items()}
    else:
        paths = {s: _column(ds, cols["audio"], "path" if kind == "audio" else None)
                 for s, ds in splits.items()}
    stems = {s: [Path(p).stem if p else f"{s or 'row'}-{i}" for i, p in enumerate(v)]
             for s, v in paths.items()}
    flat = [x for v in stems.values() for x in v]
    if len(set(flat)) == len(flat):
        return stems
    return {s: [f"{s or 'row'}-{i}" for i in range(len(ds))] for s, ds in splits.items()}


@dataclass
class _RowReader:
    """One dataset record -> a manifest row, with the column map :func:`load` resolved."""

    corpus: Corpus
    cols: dict[str, str]            # manifest key -> column
    decode: dict                    # column -> value decoder (:func:`_decoder`)
    kind: str                       # how the audio column holds audio (:func:`_feature_kind`)
    scales: dict                    # dimension -> (lo, hi) of its column
    extras: list[str]               # columns kept in the rows under their own names
    out: Path
    base: Path | None               # folder that relative audio paths start from
    opts: PrepareOptions
    protocol: Protocol
    used: set = field(default_factory=set)         # file names taken under audio/
    labels: Counter = field(default_factory=Counter)  # the dataset's labels, before the map
    written: int = 0
    reused: int = 0
    in_place: int = 0

    def get(self, record: dict, key: str):
        column = self.cols.get(key)
        return None if column is None else self.decode[column](record[column])

    def audio(self, record: dict, row_id: str) -> Path | None:
        """The clip's file: its stored bytes (or array) written once under ``out/audio/``, or
        its path; None when the row has neither."""
        value = record[self.cols["audio"]]
        data, path = None, None
        if self.kind == "array":
            data = _array_wav(value) if value and value.get("array") is not None else None
        elif self.kind == "audio":
            data, path = (value or {}).get("bytes"), (value or {}).get("path")
        else:
            path = value
        if data:
            dst = self.out / AUDIO_DIR / (_file_name(row_id, self.used) + _extension(path, data))
            if write_once(dst, data):
                self.written += 1
            else:
                self.reused += 1
            return dst
        if path:
            self.in_place += 1
            return Path(path) if Path(path).is_absolute() or self.base is None else self.base / path
        return None

    def read(self, record: dict, row_id: str, split: str | None, where: str) -> dict | None:
        """The manifest row of ``record``; None (and the reason in the card) when it cannot be one."""
        corpus, get = self.corpus, lambda key: self.get(record, key)
        src = self.audio(record, row_id)
        if src is None:
            corpus.drop(row_id, where, f"no audio in column {self.cols['audio']!r} (neither bytes "
                        "nor a path); add it or remove the row")
            return None
        row = base_row(row_id, src, self.out, corpus.dataset)
        try:
            for key in ("start", "end"):
                row[key] = None if get(key) is None else float(get(key))
            for key, (lo, hi) in self.scales.items():
                row[key] = scale_dimension(get(key), key, lo, hi)
        except (TypeError, ValueError) as err:
            corpus.drop(row_id, where, f"{err}; fix the row")
            return None
        speaker = get("speaker")
        row["speaker"] = None if speaker is None or not str(speaker).strip() else str(speaker).strip()
        row["gender"] = normalise_gender(get("gender"))
        text = get("transcript")
        row["transcript"] = (str(text).strip() or None) if text is not None else None
        label = get("label")
        if label is not None and str(label).strip():
            self.labels[str(label).strip()] += 1
        row["emotion"] = map_label(None if label is None else str(label), self.opts, self.protocol)
        for column in self.extras:
            kept = self.decode[column](record[column])
            if kept is not None or column not in FIELDS:  # a null `dataset` keeps the name
                row[column] = kept
        if self.scales and row["va_source"] not in ("annotated", "derived"):
            row["va_source"] = "annotated" if any(row[k] is not None for k in self.scales) else None
        value = get("split") if "split" in self.cols else split
        row["split"] = None if value is None else (str(value).strip() or None)
        if "split" in self.cols and row["split"] is None:
            corpus.drop(row_id, where, f"empty split column {self.cols['split']!r}; fill it or "
                        "pass --split loso, speaker-random or random")
            return None
        row["_where"] = where
        return row


def load(root: Path, out: Path, opts: PrepareOptions, protocol: Protocol) -> Corpus:
    """Rows of the dataset ``root`` (a hub id or a local path); see the module docstring."""
    source = str(root)
    splits, files, local = open_dataset(source)
    corpus = Corpus(dataset_name(root, opts), [], inputs=files, va_source="derived",
                    default_split="speaker-random", labels=tuple(opts.labels or protocol.labels))
    first = next(iter(splits.values()))
    features = dict(first.features)
    for split, ds in splits.items():
        if set(ds.features) != set(features):
            raise UserError(f"--dataset {source}: split {split!r} has the columns "
                            f"{', '.join(ds.features)}, split {next(iter(splits))!r} "
                            f"{', '.join(features)}; the splits of a dataset must share them.")
    cols = resolve_columns(source, features, opts)
    kind = _feature_kind(features[cols["audio"]])
    scales = {k: _scale(features[cols[k]], opts) for k in DIMENSIONS if k in cols}
    for lo, hi in scales.values():
        if not hi > lo:
            raise UserError(f"--va-range {lo:g},{hi:g}: the high end must be above the low end.")
    decode = {c: _decoder(f) for c, f in features.items()}
    mapped = set(cols.values())
    extras = [c for c, f in features.items() if c not in mapped and _plain(f)
              and (c in PASSTHROUGH or c not in FIELDS)]
    skipped = [c for c in features if c not in mapped and c not in extras]
    ids = _ids(splits, cols, kind)
    base = local if local is None or local.is_dir() else local.parent

    corpus.notes.append("columns: " + ", ".join(f"{k} <- {c}" for k, c in cols.items())
                        + (f"; kept as they are: {', '.join(extras)}" if extras else ""))
    if skipped:
        corpus.notes.append(f"columns not kept (nested, binary, or named like a manifest key "
                            f"another column fills): {', '.join(skipped)}")
    if "label" not in cols:
        corpus.notes.append("no label column: emotion is empty (usable for ASR/VA tasks).")
        others = [c for c in features if c not in mapped] or ["(none)"]
        log.warning("%s: no label column (none named %s): every row's emotion is empty. If one of "
                    "the columns %s holds the labels, name it with --label-column.",
                    source, ", ".join(AUTO_NAMES["label"]), ", ".join(others))
    corpus.default_split = "official" if "split" in cols or None not in splits else "speaker-random"

    reader = _RowReader(corpus, cols, decode, kind, scales, extras, out, base, opts, protocol)
    seen: dict[str, str] = {}
    bar = tqdm(total=sum(len(ds) for ds in splits.values()), desc="hf rows", unit="row",
               disable=None, mininterval=2.0)
    for split, ds in splits.items():
        n = 0
        for table in ds.with_format("arrow").iter(batch_size=BATCH):
            for record in table.to_pylist():
                where = f"{source}[{split}]:{n}" if split is not None else f"{source}:{n}"
                row_id, n = ids[split][n], n + 1
                bar.update(1)
                if not row_id:
                    corpus.drop(None, where, f"empty id column {cols.get('id')!r}; fill it or "
                                "drop --id-column")
                elif row_id in seen:
                    corpus.drop(row_id, where, f"duplicate id (first at {seen[row_id]})")
                else:
                    row = reader.read(record, row_id, split, where)
                    if row is not None:
                        seen[row_id] = where
                        corpus.rows.append(row)
    bar.close()
    if not corpus.rows and not corpus.dropped:
        raise UserError(f"--dataset {source}: it has no rows.")
    given = {k: v for k, v in scales.items() if any(r[k] is not None for r in corpus.rows)}
    if given:  # else VA is derived from the acoustics, as for any corpus without it
        corpus.va_source = "annotated"
        corpus.va_description = "taken from the dataset: " + ", ".join(
            f"{k} <- {cols[k]} ("
            + ("on -1..1 already, as an emoreason export marks it" if (lo, hi) == (-1.0, 1.0)
               and getattr(features[cols[k]], "id", None) == SCALE_ID
               else f"mapped linearly from {lo:g}..{hi:g} to -1..1") + ")"
            for k, (lo, hi) in given.items()) + "; va_source per row from its va_source column, if any"
    if opts.label_map and reader.labels:
        unmapped = {k: v for k, v in reader.labels.items() if k not in opts.label_map}
        if unmapped:
            corpus.problems.append("labels not in --label-map, kept under their own names: "
                                   + ", ".join(f"{k} ({v} rows)" for k, v in sorted(unmapped.items())))
    corpus.audio_origin = (f"{reader.written + reader.reused} stored in the dataset and written "
                           f"to {AUDIO_DIR}/ ({reader.written} written now, {reader.reused} "
                           f"unchanged from an earlier run), {reader.in_place} read in place "
                           "where the dataset gives a path")
    if corpus.default_split == "official":
        corpus.official_speaker_disjoint = _speaker_disjoint(corpus)
    return corpus


def _speaker_disjoint(corpus: Corpus) -> bool:
    """Whether the dataset's own split keeps speakers apart; a note when it does not."""
    if not all(r["speaker"] for r in corpus.rows):
        corpus.notes.append("the dataset's split cannot be checked for shared speakers: not every "
                            "row has a speaker.")
        return False
    try:
        check_splits(corpus.rows)
    except LeakageError as err:
        corpus.notes.append(f"the dataset's own split is not speaker-disjoint ({err})")
        return False
    return True


# ------------------------------------------------------------------------------ export

def _column_feature(name: str, values: list):
    """The feature of a manifest key's column and its values as stored."""
    datasets = _datasets()
    if name in DIMENSIONS:
        return datasets.Value("float64", id=SCALE_ID), values
    kinds = {type(v) for v in values if v is not None}
    if kinds & {dict, list} or (len(kinds) > 1 and not kinds <= {int, float}):
        return (datasets.Value("string", id=JSON_ID),
                [None if v is None else json.dumps(v, ensure_ascii=False) for v in values])
    if kinds == {bool}:
        return datasets.Value("bool"), values
    if kinds == {int}:
        return datasets.Value("int64"), values
    if kinds and kinds <= {int, float}:
        return datasets.Value("float64"), [None if v is None else float(v) for v in values]
    return datasets.Value("string"), values


def manifest_dataset(rows: list[dict], description: str = ""):
    """A ``datasets.Dataset`` of manifest ``rows`` (audio paths absolute): ``audio`` an
    ``Audio`` feature pointing at each clip, then every other key as a column."""
    datasets = _datasets()
    keys = ["id", "audio"] + [k for k in FIELDS if k not in ("id", "audio")]
    for row in rows:
        keys += [k for k in row if k not in keys]
    data, features = {}, {}
    for key in keys:
        if key == "audio":
            data[key] = [{"bytes": None, "path": str(r["audio"])} for r in rows]
            features[key] = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}
            continue
        features[key], data[key] = _column_feature(key, [r.get(key) for r in rows])
    # The Audio feature's own encoder needs torchcodec: build the {bytes, path} struct, then
    # cast it (an Arrow-level change of the feature).
    ds = datasets.Dataset.from_dict(data, features=datasets.Features(features))
    ds = ds.cast_column("audio", datasets.Audio())
    ds.info.description = description
    return ds


def export_manifest(manifest: str | Path, out: str | Path, push_to_hub: str | None = None,
                    private: bool = False):
    """Write ``manifest`` (with its evidence and rationales) as a ``datasets`` dataset saved
    to disk at ``out``, every clip embedded; with ``push_to_hub`` also push it to that repo.

    Returns the saved dataset (read back from ``out``). The folder is written beside ``out``
    and renamed into place, so an interrupted export leaves the previous one whole. Raises
    :class:`UserError` when a clip is missing, and when the push fails (after saving).
    """
    manifest, out = Path(manifest), Path(out)
    try:
        rows = read_manifest(manifest)
    except ManifestError as err:
        raise UserError(f"--manifest: {err}") from err
    missing = [r for r in rows if not Path(r["audio"]).is_file()]
    if missing:
        raise UserError(f"{manifest}: {len(missing)} of {len(rows)} rows have no audio file (first: "
                        f"{missing[0]['id']}: {missing[0]['audio']}). Prepare the corpus again, or "
                        "remove those rows, before exporting.")
    ds = manifest_dataset(rows, f"emoreason manifest {manifest.resolve()} ({len(rows)} rows); "
                                "object columns are JSON strings (feature id "
                                f"{JSON_ID!r}), valence/arousal/dominance are on -1..1.")
    with atomic_dir(out) as tmp:
        ds.save_to_disk(str(tmp))   # embeds every clip's bytes
    saved = _datasets().load_from_disk(str(out))
    log.info("wrote %s: %d rows, columns %s", out, len(saved), ", ".join(saved.column_names))
    if push_to_hub:
        try:
            saved.push_to_hub(push_to_hub, private=private)
        except (OSError, ValueError) as err:
            raise UserError(f"--push-to-hub {push_to_hub}: the push failed ({type(err).__name__}: "
                            f"{err}). The dataset is saved at {out}; push it from a machine that "
                            "reaches the hub (and is logged in: `hf auth login`) with "
                            f"`datasets.load_from_disk('{out}').push_to_hub('{push_to_hub}')`.") from err
        log.info("pushed %s to the hub as %s", out, push_to_hub)
    return saved
