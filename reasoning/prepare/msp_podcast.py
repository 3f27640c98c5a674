"""MSP-Podcast from the release folder (``MSP-PODCAST``: ``Labels/``, ``Audios/``, ``Transcripts/``).

- ``Labels/labels_consensus.csv``: one row per clip with exactly the columns of
  :data:`CONSENSUS_COLUMNS`. ``EmoClass`` is one letter (:data:`EMOTION_LETTERS`); ``EmoAct``,
  ``EmoVal`` and ``EmoDom`` (arousal, valence, dominance) are on a 1..7 scale, mapped
  linearly to -1..1, a value outside 1..7 clipped and reported; ``Split_Set`` is Train,
  Development, Test1, Test2 (later releases add Test3, ...), giving ``split`` train, dev,
  test1, test2, ... A release whose table has other column names stops with an error that
  names them: this loader does not guess what a renamed column means.
- ``Labels/labels_detailed.csv``: one row per annotator and clip, for ``emotion_votes``. Two
  layouts are released, and both are read: ``FileName, EmoDetail`` (``"WORKER00014;
  Neutral; Concerned,Frustrated; A:4.0; V:3.0; D:4.0;"``: the primary emotion is the second
  field) and ``FileName, ..., EmoClass_Major, ...`` (older releases). Each annotator's
  primary emotion is one vote; "Other-..." answers vote ``other``.
- ``Transcripts/<clip>.txt``: the transcript; ``Audios/<FileName>``: the clip.

Speakers and genders given as "Unknown" are left empty (they are no single speaker).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

from reasoning.errors import UserError
from reasoning.prepare.clips import manifest_audio_path
from reasoning.prepare.corpus import Corpus, PrepareOptions, normalise_gender
from reasoning.prepare.protocols import Protocol
from reasoning.prepare.tables import read_csv

DATASET = "msp-podcast"
LABELS_DIR, AUDIO_DIR, TRANSCRIPT_DIR = "Labels", "Audios", "Transcripts"
CONSENSUS = "labels_consensus.csv"
DETAILED = "labels_detailed.csv"
CONSENSUS_COLUMNS = ("FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender",
                     "Split_Set")
EMOTION_LETTERS = {"A": "anger", "S": "sadness", "H": "happiness", "U": "surprise",
                   "F": "fear", "D": "disgust", "C": "contempt", "N": "neutral",
                   "O": "other", "X": "no_agreement"}
# Annotators' primary emotions as written in labels_detailed.csv (words or letters).
VOTE_WORDS = {"angry": "anger", "anger": "anger", "sad": "sadness", "sadness": "sadness",
              "happy": "happiness", "happiness": "happiness", "surprise": "surprise",
              "surprised": "surprise", "fear": "fear", "disgust": "disgust",
              "disgusted": "disgust", "contempt": "contempt", "neutral": "neutral",
              "other": "other",
              **{k.lower(): v for k, v in EMOTION_LETTERS.items() if k != "X"}}
# EmoAct, EmoVal, EmoDom -> manifest key
DIMENSION_COLUMNS = {"EmoAct": "arousal", "EmoVal": "valence", "EmoDom": "dominance"}
SCALE = (1.0, 7.0)
SPLITS = {"Train": "train", "Development": "dev"}
TEST_SET = re.compile(r"^Test(\d+)$")
UNKNOWN = "unknown"
SHOW = 5   # examples named in a problem line


def split_name(value: str) -> str | None:
    """``Train`` -> ``train``, ``Development`` -> ``dev``, ``Test<n>`` -> ``test<n>``; None
    for any other value."""
    if value in SPLITS:
        return SPLITS[value]
    m = TEST_SET.match(value)
    return f"test{m.group(1)}" if m else None


def scale(value: str, column: str, where: str, clipped: list[str],
          bad: list[str]) -> float | None:
    """1..7 -> -1..1; a value outside 1..7 is clipped (and listed in ``clipped``), one that is
    not a number is left empty (and listed in ``bad``)."""
    try:
        x = float(value)
    except ValueError:
        bad.append(f"{where} {column}={value!r}")
        return None
    lo, hi = SCALE
    if not lo <= x <= hi:
        clipped.append(f"{where} {column}={x:g}")
        x = min(hi, max(lo, x))
    return round(2 * (x - lo) / (hi - lo) - 1, 4)


def _primary(detail: str) -> str:
    """The primary emotion of one ``EmoDetail`` field: the one after the worker id."""
    parts = [p.strip() for p in detail.split(";")]
    return parts[1] if len(parts) > 1 else ""


def read_votes(path: Path, corpus: Corpus) -> dict[str, Counter]:
    """``FileName -> Counter(label -> votes)`` from ``labels_detailed.csv``."""
    header, records = read_csv(path, corpus)
    layout = next((c for c in ("EmoDetail", "EmoClass_Major") if "FileName" in header and c in header),
                  None)
    if layout is None:
        raise UserError(f"{path}: the header is {', '.join(header)}; this reader knows the two "
                        "layouts MSP-Podcast releases use: FileName, EmoDetail (\"WORKER; "
                        "Primary; Secondary; A:..; V:..; D:..;\") or FileName, EmoClass_Major, ... "
                        "(one row per annotator). Restore the released file, or move it away "
                        "to prepare without emotion_votes.")
    votes: dict[str, Counter] = defaultdict(Counter)
    unknown: Counter = Counter()
    for _, record in records:
        word = _primary(record[layout]) if layout == "EmoDetail" else record[layout].strip()
        key = word.lower()
        label = VOTE_WORDS.get(key) or ("other" if key.startswith("other") else None)
        if label is None:
            unknown[word or "(empty)"] += 1
            continue
        votes[record["FileName"].strip()][label] += 1
    if unknown:
        corpus.problems.append(f"{path}: {sum(unknown.values())} annotations name a primary "
                               f"emotion that is none of MSP-Podcast's ({', '.join(f'{k!r} ({v})' for k, v in unknown.most_common(SHOW))}); "
                               "not counted as votes.")
    return votes


def _listing(items: list[str]) -> str:
    return ", ".join(items[:SHOW]) + (f", ... ({len(items) - SHOW} more)" if len(items) > SHOW else "")


def load(root: Path, out: Path, opts: PrepareOptions, protocol: Protocol) -> Corpus:
    """Parse the release under ``root`` into manifest rows (audio not yet read)."""
    corpus = Corpus(DATASET, [], va_source="annotated", default_split="official",
                    labels=protocol.labels)
    labels_dir = root / LABELS_DIR
    consensus = labels_dir / CONSENSUS
    if not consensus.is_file():
        raise UserError(f"{root}: no {LABELS_DIR}/{CONSENSUS}. Point --root at the MSP-Podcast "
                        f"release folder (the one holding {LABELS_DIR}/, {AUDIO_DIR}/ and "
                        f"{TRANSCRIPT_DIR}/).")
    audio_dir, text_dir = root / AUDIO_DIR, root / TRANSCRIPT_DIR
    if not audio_dir.is_dir() and not opts.labels_only:
        raise UserError(f"{root}: no {AUDIO_DIR}/ folder. Unpack the clips there, or pass "
                        "--labels-only to write the manifest from the labels alone.")
    corpus.inputs.append(consensus)
    header, records = read_csv(consensus, corpus)
    missing = [c for c in CONSENSUS_COLUMNS if c not in header]
    if missing:
        raise UserError(f"{consensus}: missing column(s) {', '.join(missing)} (its header: "
                        f"{', '.join(header)}). MSP-Podcast releases name them "
                        f"{', '.join(CONSENSUS_COLUMNS)}; restore the released file (a renamed "
                        "copy must use these names), or prepare another layout with `emoreason "
                        "prepare generic --root TABLE` and its --*-col flags.")
    extra = [c for c in header if c not in CONSENSUS_COLUMNS]
    if extra:
        corpus.notes.append(f"{consensus.name}: column(s) {', '.join(extra)} not used.")

    votes: dict[str, Counter] = {}
    detailed = labels_dir / DETAILED
    if detailed.is_file():
        corpus.inputs.append(detailed)
        votes = read_votes(detailed, corpus)
        corpus.notes.append("emotion_votes: each annotator's primary emotion in "
                            f"{LABELS_DIR}/{DETAILED} is one vote ('Other-...' answers vote "
                            "'other').")
    else:
        corpus.notes.append(f"no {LABELS_DIR}/{DETAILED}: emotion_votes are empty.")

    seen: dict[str, str] = {}
    clipped: list[str] = []
    bad_numbers: list[str] = []
    no_text: list[str] = []
    no_votes: list[str] = []
    unknown_speaker = 0
    for where, fields in records:
        record = {k: (v or "").strip() for k, v in fields.items()}
        name = record["FileName"]
        row_id = Path(name).stem
        if not name:
            corpus.drop(None, where, "empty FileName; fill it or remove the row")
            continue
        if row_id in seen:
            corpus.drop(row_id, where, f"duplicate FileName (first at {seen[row_id]})")
            continue
        letter = record["EmoClass"]
        if letter not in EMOTION_LETTERS:
            corpus.drop(row_id, where, f"EmoClass {letter!r} is not one of "
                        f"{', '.join(EMOTION_LETTERS)}; fix the row")
            continue
        split = split_name(record["Split_Set"])
        if split is None:
            corpus.drop(row_id, where, f"Split_Set {record['Split_Set']!r} is not Train, "
                        "Development or Test<n>; fix the row")
            continue
        seen[row_id] = where
        dims = {key: scale(record[col], col, where, clipped, bad_numbers)
                for col, key in DIMENSION_COLUMNS.items()}
        speaker = record["SpkrID"]
        if speaker.lower() == UNKNOWN:
            speaker, unknown_speaker = "", unknown_speaker + 1
        text_file = text_dir / f"{row_id}.txt"
        transcript = None
        if text_file.is_file():
            transcript = " ".join(text_file.read_text(encoding="utf-8", errors="replace").split()) or None
        if transcript is None:
            no_text.append(row_id)
        clip_votes = votes.get(name) or votes.get(row_id)
        if votes and not clip_votes:
            no_votes.append(row_id)
        emotion = EMOTION_LETTERS[letter]
        wav = audio_dir / name
        corpus.rows.append({
            "id": row_id,
            "audio": manifest_audio_path(wav, out),
            "start": None, "end": None,
            "dataset": DATASET,
            "speaker": speaker or None,
            "gender": normalise_gender(record["Gender"]),
            "transcript": transcript,
            "emotion": protocol.merge.get(emotion, emotion),
            "emotion_votes": dict(sorted(clip_votes.items())) if clip_votes else None,
            **dims,
            "va_source": "annotated",
            "split": split,
            "emotion_raw": letter,
            "_src": str(wav), "_where": where,
        })
    if not corpus.rows and not corpus.dropped:
        raise UserError(f"{consensus}: no rows. Restore the released file.")
    for items, text in ((clipped, "dimension values outside 1..7, clipped to the scale: {}."),
                        (bad_numbers, "dimension values are not numbers, left empty: {}."),
                        (no_text, f"clips have no transcript in {TRANSCRIPT_DIR}/ (first: {{}}); "
                                  "transcript left empty."),
                        (no_votes, f"clips have no annotation in {DETAILED} (first: {{}}); "
                                   "emotion_votes left empty.")):
        if items:
            corpus.problems.append(f"{len(items)} " + text.format(_listing(items)))
    if unknown_speaker:
        corpus.notes.append(f"{unknown_speaker} clips have SpkrID 'Unknown': speaker left empty "
                            "(the split check cannot cover them).")
    corpus.notes.append("split = Split_Set: Train -> train, Development -> dev, Test<n> -> "
                        "test<n>; evaluate with `emoreason eval --protocol msp-podcast`, which "
                        "reports the Development set and each test set apart.")
    corpus.va_description = ("annotated: valence = EmoVal, arousal = EmoAct, dominance = EmoDom, "
                             "each 1..7 mapped linearly to -1..1 as (x - 4) / 3 (values outside "
                             "1..7 clipped, listed under the problems)")
    return corpus
