"""EmoDB (Berlin Emotional Speech Database): labels and speakers from the file names.

``SSTTTEV.wav``: SS speaker, TTT text code, E emotion letter (German initial), V version.
Sex comes from the corpus's speaker table; the sentence from ``transcripts.csv``
(text_code, transcript, english) when the root has one.
"""

from __future__ import annotations

import re
from pathlib import Path

from reasoning.errors import UserError
from reasoning.prepare.clips import manifest_audio_path
from reasoning.prepare.corpus import Corpus, PrepareOptions
from reasoning.prepare.protocols import Protocol
from reasoning.prepare.tables import read_csv

EMOTION_LETTERS = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear",
                   "F": "happiness", "T": "sadness", "N": "neutral"}
# The corpus's ten speakers (Burkhardt et al. 2005).
SPEAKER_SEX = {"03": "m", "08": "f", "09": "f", "10": "m", "11": "m",
               "12": "m", "13": "f", "14": "f", "15": "m", "16": "f"}
FILE_NAME = re.compile(r"^(\d\d)([a-z]\d\d)([A-Z])([a-z])$")


def read_transcripts(path: Path, corpus: Corpus) -> dict[str, tuple[str, str | None]]:
    """text code -> (sentence, English gloss) from ``transcripts.csv``."""
    header, records = read_csv(path, corpus)
    if not {"text_code", "transcript"} <= set(header):
        corpus.problems.append(f"{path}: needs columns text_code and transcript; not used, "
                               "transcripts left empty.")
        return {}
    return {r["text_code"].strip(): (r["transcript"].strip(),
                                     (r.get("english") or "").strip() or None)
            for _, r in records}


def load(root: Path, out: Path, opts: PrepareOptions, protocol: Protocol) -> Corpus:
    """One row per ``*.wav`` under ``root/wav`` (or ``root`` itself)."""
    corpus = Corpus("emodb", [], va_source="derived", default_split="loso",
                    labels=protocol.labels)
    folder = root / "wav" if (root / "wav").is_dir() else root
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".wav"
                   and not p.name.startswith("."))
    if not files:
        raise UserError(f"{root}: no .wav files here or in {root / 'wav'}. Point --root at the "
                        "EmoDB folder (the one holding wav/).")
    texts = {}
    tpath = root / "transcripts.csv"
    if tpath.is_file():
        corpus.inputs.append(tpath)
        texts = read_transcripts(tpath, corpus)
    else:
        corpus.notes.append("no transcripts.csv in the root: transcripts are empty.")
    unknown_speakers = set()
    for path in files:
        m = FILE_NAME.match(path.stem)
        if not m:
            corpus.drop(path.stem, str(path), "file name does not follow EmoDB's SSTTTEV.wav "
                        "(speaker, text code, emotion letter, version); rename or remove it")
            continue
        speaker, code, letter, _ = m.groups()
        if letter not in EMOTION_LETTERS:
            corpus.drop(path.stem, str(path), f"emotion letter {letter!r} is not one of "
                        f"{', '.join(EMOTION_LETTERS)}; rename or remove the file")
            continue
        if speaker not in SPEAKER_SEX:
            unknown_speakers.add(speaker)
        text, english = texts.get(code, (None, None))
        corpus.rows.append({
            "id": path.stem,
            "audio": manifest_audio_path(path, out),
            "start": None, "end": None,
            "dataset": "emodb",
            "speaker": speaker,
            "gender": SPEAKER_SEX.get(speaker),
            "transcript": text,
            "emotion": protocol.merge.get(EMOTION_LETTERS[letter], EMOTION_LETTERS[letter]),
            "emotion_votes": None,
            "valence": None, "arousal": None, "dominance": None,
            "va_source": None,
            "split": None,
            "text_code": code,
            "transcript_en": english,
            "_src": str(path), "_where": str(path),
        })
    if unknown_speakers:
        corpus.problems.append(f"speaker(s) {', '.join(sorted(unknown_speakers))} are not in "
                               "EmoDB's speaker table (03, 08-16); gender left empty.")
    if texts:
        missing = sorted({r["text_code"] for r in corpus.rows if r["transcript"] is None})
        if missing:
            corpus.problems.append(f"{tpath}: no sentence for text code(s) {', '.join(missing)}.")
    corpus.notes.append("EmoDB has no official split; the default is leave-one-speaker-out "
                        "(split = speaker-<SS>).")
    return corpus
