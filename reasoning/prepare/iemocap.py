"""IEMOCAP from the release folder (``IEMOCAP_full_release/Session1..5``).

Per utterance: the consensus label, every annotator's categorical votes (external
evaluators ``C-E*`` and the actors' self-evaluations ``C-F*``/``C-M*``; a line with several
labels gives one vote to each), the dimensional consensus mapped 1..5 -> -1..1, the
transcript, the speaker (``Ses01F``/``Ses01M`` from the utterance name, which gives the
gender) and ``split = session<n>``. The file formats are described in the shared
FORMAT.md; the parser is tolerant of the release's irregular whitespace.

Audio is the utterance's own file (``sentences/wav/<dialog>/<utt>.wav``, so ``start`` and
``end`` are null); where that file is missing but the whole-dialog recording
(``dialog/wav/<dialog>.wav``) is there, the row points at it with ``start``/``end`` from
the summary line. The summary times are kept as ``dialog_start``/``dialog_end`` always.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from reasoning.errors import UserError
from reasoning.prepare.clips import manifest_audio_path
from reasoning.prepare.corpus import Corpus, PrepareOptions
from reasoning.prepare.protocols import Protocol

# Consensus code -> canonical name (before the protocol's merge).
CODES = {"neu": "neutral", "hap": "happy", "exc": "excited", "sad": "sad", "ang": "angry",
         "fru": "frustrated", "sur": "surprised", "fea": "fearful", "dis": "disgusted",
         "oth": "other", "xxx": "xxx"}
# The annotators' full words -> consensus code.
VOTE_WORDS = {"neutral": "neu", "happiness": "hap", "excited": "exc", "sadness": "sad",
              "anger": "ang", "frustration": "fru", "surprise": "sur", "fear": "fea",
              "disgust": "dis", "other": "oth"}

_NUM = r"(\d+(?:\.\d*)?)"
SUMMARY = re.compile(rf"^\[\s*{_NUM}\s*-\s*{_NUM}\s*\]\s*(\S+)\s+(\S+)\s+"
                     r"\[\s*([-\d.]+)\s*,\s*([-\d.]+)\s*,\s*([-\d.]+)\s*\]\s*$")
VOTE = re.compile(r"^C-([A-Za-z]+\d*)\s*:\s*(.*?)\s*(\([^()]*\))?\s*$")
TRANSCRIPT = re.compile(rf"^(\S+)\s*\[\s*{_NUM}\s*-\s*{_NUM}\s*\]\s*:\s?(.*)$")
UTTERANCE = re.compile(r"^Ses(\d\d)[FM]_\S+_([FM])(\d+)$")


def find_sessions(root: Path) -> list[Path]:
    """The Session<n> folders under root or root/IEMOCAP_full_release; UserError if none."""
    for base in (root, root / "IEMOCAP_full_release"):
        sessions = sorted(p for p in base.glob("Session[1-5]") if p.is_dir())
        if sessions:
            return sessions
    raise UserError(f"{root}: no Session1..Session5 folders here or in "
                    f"{root / 'IEMOCAP_full_release'}. Point --root at the IEMOCAP release "
                    "folder (IEMOCAP_full_release).")


def _session_files(folder: Path) -> list[Path]:
    # "._Ses..." files are macOS resource forks that ship inside some copies.
    return sorted(p for p in folder.glob("Ses*.txt") if p.is_file())


def read_transcripts(path: Path) -> dict[str, str]:
    """Utterance name -> text from one ``transcriptions/<dialog>.txt``.

    ``M:``/``F:`` lines without a time stamp and ``...XX`` names are not utterances and
    are skipped."""
    texts = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        m = TRANSCRIPT.match(line)
        if not m or "XX" in m.group(1):
            continue
        texts[m.group(1)] = " ".join(m.group(4).split())
    return texts


def _parse_votes(text: str, where: str, corpus: Corpus) -> list[str]:
    """The consensus codes of one annotator line's labels ("Frustration; Other:annoyed;")."""
    codes = []
    for item in text.split(";"):
        item = item.strip()
        if not item:
            continue
        word = re.split(r"[:(]", item, maxsplit=1)[0].strip().lower()
        if word in VOTE_WORDS:
            codes.append(VOTE_WORDS[word])
        else:
            corpus.problems.append(f"{where}: vote {item!r} is not an IEMOCAP category "
                                   f"({', '.join(w.title() for w in VOTE_WORDS)}); not counted.")
    return codes


def read_evaluation(path: Path, corpus: Corpus) -> list[dict]:
    """Utterance blocks of one ``EmoEvaluation/<dialog>.txt``: summary fields and vote codes."""
    blocks, current = [], None
    for n, raw in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        line = raw.strip()
        where = f"{path}:{n}"
        if not line or line.startswith("%"):
            continue
        if line.startswith("["):
            m = SUMMARY.match(line)
            if not m:
                name = re.search(r"Ses\w+", line)
                corpus.drop(name.group(0) if name else None, where,
                            "summary line not in the form '[start - end] NAME LABEL [v, a, d]'; "
                            "fix the line")
                current = None
                continue
            start, end, name, code, v, a, d = m.groups()
            current = {"name": name, "code": code, "start": float(start), "end": float(end),
                       "vad": (v, a, d), "votes": [], "where": where}
            blocks.append(current)
        elif line.startswith("C-"):
            m = VOTE.match(line)
            if current is None or not m:
                corpus.problems.append(f"{where}: annotator line outside an utterance block or "
                                       "unreadable; ignored.")
                continue
            current["votes"].extend(_parse_votes(m.group(2), where, corpus))
        # A-... lines (per-annotator dimensions) are summarised by the summary line.
    return blocks


def _scale(value: str, where: str, corpus: Corpus) -> float | None:
    """1..5 -> -1..1; out-of-range values are clipped and reported."""
    try:
        x = float(value)
    except ValueError:
        corpus.problems.append(f"{where}: dimension value {value!r} is not a number; left empty.")
        return None
    if not 1.0 <= x <= 5.0:
        corpus.problems.append(f"{where}: dimension value {x} is outside 1..5; clipped.")
        x = min(5.0, max(1.0, x))
    return round((x - 3.0) / 2.0, 4)


def load(root: Path, out: Path, opts: PrepareOptions, protocol: Protocol) -> Corpus:
    """Parse the release under ``root`` into manifest rows (audio not yet read)."""
    corpus = Corpus("iemocap", [], va_source="annotated", default_split="official",
                    labels=protocol.labels)
    sessions = find_sessions(root)
    missing = sorted({f"Session{i}" for i in range(1, 6)} - {s.name for s in sessions})
    if missing:
        corpus.problems.append(f"{root}: {', '.join(missing)} not found; the other sessions "
                               "are prepared.")

    def name_of(code: str) -> str:
        return protocol.merge.get(CODES[code], CODES[code])

    seen: dict[str, str] = {}
    n_audio = 0
    no_text: list[str] = []
    for session in sessions:
        evaluation = session / "dialog" / "EmoEvaluation"
        files = _session_files(evaluation)
        if not files:
            corpus.problems.append(f"{evaluation}: no Ses*.txt label files; {session.name} "
                                   "is skipped. Check the release layout.")
            continue
        transcripts = {}
        for tfile in _session_files(session / "dialog" / "transcriptions"):
            corpus.inputs.append(tfile)
            transcripts.update(read_transcripts(tfile))
        for efile in files:
            corpus.inputs.append(efile)
            dialog = efile.stem
            for block in read_evaluation(efile, corpus):
                name, where = block["name"], block["where"]
                m = UTTERANCE.match(name)
                if not m:
                    corpus.drop(name, where, "utterance name not in the form "
                                "Ses<nn><F|M>_<dialog>_<F|M><nnn>; fix the name")
                    continue
                if name in seen:
                    corpus.drop(name, where, f"duplicate utterance id (first at {seen[name]})")
                    continue
                if block["code"] not in CODES:
                    corpus.drop(name, where, f"consensus label {block['code']!r} is not an "
                                f"IEMOCAP label ({', '.join(CODES)}); fix the file")
                    continue
                seen[name] = where
                session_no, letter = int(m.group(1)), m.group(2)
                wav, start, end = session / "sentences" / "wav" / dialog / f"{name}.wav", None, None
                if not wav.is_file() and (session / "dialog" / "wav" / f"{dialog}.wav").is_file():
                    # No sentence file: cut the utterance out of the whole-dialog recording.
                    wav = session / "dialog" / "wav" / f"{dialog}.wav"
                    start, end = block["start"], block["end"]
                n_audio += wav.is_file()
                votes = Counter(name_of(c) for c in block["votes"])
                v, a, d = (_scale(x, where, corpus) for x in block["vad"])
                transcript = transcripts.get(name)
                if transcript is None:
                    no_text.append(name)
                corpus.rows.append({
                    "id": name,
                    "audio": manifest_audio_path(wav, out),
                    "start": start, "end": end,
                    "dataset": "iemocap",
                    "speaker": f"Ses{session_no:02d}{letter}",
                    "gender": letter.lower(),
                    "transcript": transcript,
                    "emotion": name_of(block["code"]),
                    "emotion_votes": dict(sorted(votes.items())) or None,
                    "valence": v, "arousal": a, "dominance": d,
                    "va_source": "annotated",
                    "split": f"session{session_no}",
                    "emotion_raw": block["code"],
                    "dialog": dialog,
                    "dialog_start": block["start"], "dialog_end": block["end"],
                    "_src": str(wav), "_where": where,
                    "_duration": round(block["end"] - block["start"], 4),
                })
    if not corpus.rows and not corpus.dropped:
        raise UserError(f"{root}: no utterances found in Session*/dialog/EmoEvaluation/*.txt. "
                        "Point --root at the IEMOCAP release folder.")
    if corpus.rows and n_audio == 0 and not opts.labels_only:
        raise UserError(f"{root}: no utterance audio under Session*/sentences/wav/ (nor dialog "
                        "recordings under Session*/dialog/wav/). Unpack the audio there, or pass "
                        "--labels-only to write the manifest from the annotations alone.")
    if no_text:
        corpus.problems.append(f"{len(no_text)} utterances have no line in their "
                               f"transcriptions file (first: {no_text[0]}); transcript left "
                               "empty for them.")
    corpus.notes.append("split = session (sessions are speaker-disjoint); leave-one-session-out "
                        "uses each session once as the test fold.")
    corpus.notes.append("emotion_votes: one vote per label per annotator line (C-E external "
                        "evaluators and C-F/C-M self-evaluations); 'Other' with or without "
                        "free text counts as 'other'.")
    return corpus
