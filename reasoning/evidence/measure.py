"""Measure every utterance of a manifest, cache the results and add per-speaker z-scores."""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from importlib.metadata import version as _pkg_version
from pathlib import Path
from typing import Callable

import numpy as np

from reasoning.audio import SAMPLE_RATE, load_audio
from reasoning.errors import UserError
from reasoning.evidence.acoustic import ACOUSTIC_FEATURES, measure_acoustics
from reasoning.evidence.lexical import DEFAULT_LEXICON, lexical_evidence
from reasoning.files import file_stamp

log = logging.getLogger(__name__)

# Bump the first part when a measurement changes; the tool versions are part of the key
# because a new openSMILE or Praat can move the numbers.
EXTRACTOR_VERSION = (f"emoreason-evidence-1+opensmile-{_pkg_version('opensmile')}"
                     f"+parselmouth-{_pkg_version('praat-parselmouth')}")
# A speaker needs this many measured (non-silent) utterances to be their own baseline;
# below it the corpus baseline of the same gender, then of the whole dataset, is used.
MIN_SPEAKER_UTTERANCES = 10
# Values that get a z-score (the others, such as counts and durations, are context).
Z_FEATURES = ("f0_mean_st", "f0_range_st", "f0_sd_st", "loudness", "syllable_rate",
              "word_rate", "pause_ratio", "jitter_local", "shimmer_local", "hnr_db",
              "spectral_slope")
ACOUSTIC_FLAGS = ("silent", "unvoiced")
_MIN_STD = 1e-9


def _clean(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return round(x, 4) if math.isfinite(x) else None


def _clip(row: dict) -> dict:
    return {"audio": row["audio"], "start": row.get("start"), "end": row.get("end")}


def _audio_path(row: dict, base_dir: Path | None) -> Path:
    audio = Path(row["audio"])
    return base_dir / audio if not audio.is_absolute() and base_dir is not None else audio


def _cache_key(row: dict, base_dir: Path | None) -> dict:
    """The clip and its file's content identity: a clip replaced or deleted under the same
    path is not taken from the cache. Raises :class:`OSError` when the file is gone."""
    size, mtime_ns = file_stamp(_audio_path(row, base_dir))
    return {**_clip(row), "size": size, "mtime_ns": mtime_ns}


def _cached(row: dict, base_dir: Path | None) -> dict | None:
    old = row.get("evidence")
    if not (isinstance(old, dict) and old.get("version") == EXTRACTOR_VERSION
            and not old.get("error") and isinstance(old.get("values"), dict)):
        return None
    try:
        return old if old.get("measured") == _cache_key(row, base_dir) else None
    except OSError:  # the file is gone: measuring it again reports why
        return None


def _measure_one(row: dict, base_dir: Path | None) -> dict:
    wave = load_audio(_audio_path(row, base_dir), row.get("start"), row.get("end"))
    values, flags = measure_acoustics(wave, SAMPLE_RATE)
    return {"version": EXTRACTOR_VERSION, "measured": _cache_key(row, base_dir),
            "values": {k: _clean(values[k]) for k in ACOUSTIC_FEATURES},
            "flags": flags, "error": None}


def _add_transcript_evidence(ev: dict, transcript: str | None, lexicon: Path) -> None:
    """Transcript-dependent parts: recomputed every run (cheap, and the text may change)."""
    ev["flags"] = [f for f in ev.get("flags", []) if f in ACOUSTIC_FLAGS]
    ev["lexical"] = lexical_evidence(transcript, lexicon)
    values = ev["values"]
    if ev["lexical"] is None:
        ev["flags"].append("no_transcript")
        values["word_rate"] = None
    else:
        speech_s = values.get("speech_s")
        n = ev["lexical"]["n_words"]
        values["word_rate"] = _clean(n / speech_s) if speech_s else None


Z_FEATURE_UNITS = {"f0_mean_st": "st", "f0_range_st": "st", "f0_sd_st": "st", "loudness": "sone",
                   "syllable_rate": "syll/s", "word_rate": "words/s", "pause_ratio": "", "jitter_local": "%",
                   "shimmer_local": "%", "hnr_db": "dB", "spectral_slope": "dB/Hz"}


def has_evidence(row: dict) -> bool:
    """Whether ``row`` holds measured evidence (the verifier, z-scores and cue lines read it)."""
    ev = row.get("evidence")
    return isinstance(ev, dict) and not ev.get("error")


def _baseline_groups(rows: list[dict]) -> tuple[dict[tuple, list[dict]], dict[tuple, dict]]:
    """The candidate baselines of ``rows`` (speaker, corpus and gender, corpus) and each one's
    (mean, sample std) per feature of :data:`Z_FEATURES`."""
    usable = [r for r in rows if has_evidence(r) and "silent" not in r["evidence"].get("flags", [])]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in usable:
        ds = r.get("dataset")
        groups[("corpus", ds)].append(r)
        if r.get("speaker") is not None:
            groups[("speaker", ds, r["speaker"])].append(r)
        if r.get("gender") is not None:
            groups[("corpus_gender", ds, r["gender"])].append(r)
    stats: dict[tuple, dict] = {}
    for key, members in groups.items():
        stats[key] = {}
        for f in Z_FEATURES:
            vals = np.array([m["evidence"]["values"].get(f) for m in members
                             if m["evidence"]["values"].get(f) is not None], dtype=float)
            if len(vals) >= 2 and vals.std(ddof=1) > _MIN_STD:
                stats[key][f] = (float(vals.mean()), float(vals.std(ddof=1)))
    return groups, stats


def _set_zscores(row: dict, groups: dict, stats: dict, min_speaker_utterances: int) -> tuple | None:
    """Fill ``row``'s ``evidence["z"]`` and ``["baseline"]`` by the rule of :func:`add_zscores`;
    returns the key of the baseline used (None: no baseline)."""
    ev = row["evidence"]
    ds = row.get("dataset")
    candidates = [("speaker", ds, row.get("speaker")), ("corpus_gender", ds, row.get("gender")),
                  ("corpus", ds)]
    key = next((k for k in candidates if k in groups
                and len(groups[k]) >= min_speaker_utterances), None)
    if key is None and ("corpus", ds) in groups:
        key = ("corpus", ds)  # a small corpus: still the best baseline there is
    if key is None:
        ev["baseline"] = {"kind": "none", "n": 0}
        ev["z"] = dict.fromkeys(Z_FEATURES)
        return None
    ev["baseline"] = {"kind": key[0], "n": len(groups[key])}
    if key[0] != "corpus":
        ev["baseline"]["group"] = key[2]
    ev["z"] = {}
    for f in Z_FEATURES:
        value, ms = ev["values"].get(f), stats[key].get(f)
        ev["z"][f] = None if value is None or ms is None else _clean((value - ms[0]) / ms[1])
    return key


def add_zscores(rows: list[dict], min_speaker_utterances: int = MIN_SPEAKER_UTTERANCES) -> Counter:
    """Fill ``evidence["z"]`` and ``evidence["baseline"]`` of every measured row in place.

    The baseline of a row is, in order: all measured utterances of its speaker (same
    dataset) when there are at least ``min_speaker_utterances``; else all of the dataset's
    utterances of the same gender, when the gender is known and there are that many; else
    the whole dataset. The utterance itself is part of its baseline. Silent clips and rows
    that failed are left out of every baseline. ``z = (value - mean) / std`` (sample std);
    ``None`` where the value is missing, the baseline has fewer than 2 values of that
    feature, or they do not vary. Returns the count of rows per baseline kind.
    """
    groups, stats = _baseline_groups(rows)
    kinds: Counter = Counter()
    for r in rows:
        ev = r.get("evidence")
        if not isinstance(ev, dict) or ev.get("error"):
            continue
        _set_zscores(r, groups, stats, min_speaker_utterances)
        kinds[ev["baseline"]["kind"]] += 1
    return kinds


def zscores_against(row: dict, reference: list[dict],
                    min_speaker_utterances: int = MIN_SPEAKER_UTTERANCES) -> dict[str, tuple[float, float]]:
    """Z-score one row measured on its own (an uploaded clip) against ``reference``, measured
    rows of a corpus, by the rule of :func:`add_zscores`, with ``row`` part of its baseline.

    A row without a speaker or gender (a clip of an unknown voice) gets the corpus baseline of
    its ``dataset`` among the reference rows. Fills ``row``'s ``evidence["z"]`` and
    ``["baseline"]`` in place (``reference`` is not changed) and returns that baseline's
    ``{feature: (mean, std)}`` (empty when there is none).
    """
    groups, stats = _baseline_groups([*reference, row])
    key = _set_zscores(row, groups, stats, min_speaker_utterances)
    return {} if key is None else stats[key]


def measure_alone(row: dict, reference: list[dict]) -> tuple[dict, dict[str, tuple[float, float]]]:
    """``row``, a clip of an unknown voice (an upload, a file given to ``explain``), measured
    on its own and z-scored by :func:`zscores_against` against the corpus of ``reference``
    (e.g. the rows the model was trained on). Returns the row with its evidence, and the
    baseline's ``{feature: (mean, std)}``."""
    datasets = Counter(r.get("dataset") for r in reference)
    dataset = datasets.most_common(1)[0][0] if datasets else None
    measured, _ = measure_manifest([{**row, "dataset": dataset, "speaker": None, "gender": None}])
    out = measured[0]
    return out, {} if out["evidence"].get("error") else zscores_against(out, reference)


def measure_manifest(
    rows: list[dict],
    *,
    base_dir: str | Path | None = None,
    force: bool = False,
    lexicon: str | Path = DEFAULT_LEXICON,
    min_speaker_utterances: int = MIN_SPEAKER_UTTERANCES,
    checkpoint: Callable[[list[dict]], None] | None = None,
    checkpoint_every: int = 200,
    progress: bool = False,
) -> tuple[list[dict], dict]:
    """Measure the evidence of every row; returns ``(new_rows, summary)``.

    Rows keep all their keys; ``evidence`` is (re)written as the package docstring
    describes. Utterances already measured with :data:`EXTRACTOR_VERSION` from the same
    audio/start/end, with the file's size and modification time unchanged, are not measured
    again unless ``force``. Relative ``audio`` paths are
    taken relative to ``base_dir`` (the manifest's folder). A row whose audio cannot be
    read gets ``evidence.error`` (the message) and is counted, and the run goes on.
    ``checkpoint(rows)`` is called every ``checkpoint_every`` measured rows, so that an
    interrupted run on a large corpus keeps its work.
    """
    base = Path(base_dir) if base_dir is not None else None
    out = [dict(r) for r in rows]
    summary = {"rows": len(out), "measured": 0, "cached": 0, "failed": 0, "errors": []}
    todo = [r for r in out if force or _cached(r, base) is None]
    summary["cached"] = len(out) - len(todo)
    iterator = todo
    if progress:
        from tqdm import tqdm
        iterator = tqdm(todo, desc="evidence", unit="clip", mininterval=2.0)  # on stderr, terminal or not
    for n, row in enumerate(iterator, 1):
        try:
            row["evidence"] = _measure_one(row, base)
            summary["measured"] += 1
        except (UserError, RuntimeError, ValueError, OSError) as err:
            # parselmouth.PraatError is a RuntimeError; a bad clip must not stop the corpus.
            log.warning("evidence: row %r: %s", row["id"], err)
            row["evidence"] = {"version": EXTRACTOR_VERSION, "measured": _clip(row),
                               "values": None, "flags": ["error"], "error": str(err)}
            summary["failed"] += 1
            summary["errors"].append({"id": row["id"], "error": str(err)})
        if checkpoint is not None and n % checkpoint_every == 0:
            checkpoint(out)
    for row in out:
        ev = row["evidence"]
        if not ev.get("error"):
            _add_transcript_evidence(ev, row.get("transcript"), Path(lexicon))
    summary["baseline"] = dict(add_zscores(out, min_speaker_utterances))
    flags = Counter(f for r in out for f in r["evidence"].get("flags", []))
    summary.update(silent=flags["silent"], unvoiced=flags["unvoiced"],
                   no_transcript=flags["no_transcript"],
                   lexical_hits=sum(len(r["evidence"]["lexical"]["hits"]) for r in out
                                    if r["evidence"].get("lexical")))
    return out, summary
