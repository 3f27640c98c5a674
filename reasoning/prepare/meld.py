"""MELD from the official CSVs plus the user's clip folders (MELD.Raw).

Ids are ``<split>_dia<D>_utt<U>``: dialogue numbers restart in every split (``dia0``
exists in train, dev and test), and manifest ids must be unique across the file.
The official splits share speakers (the six main characters are everywhere), so they are
not speaker-independent; the card says so.
"""

from __future__ import annotations

import re
from pathlib import Path

from reasoning.errors import UserError
from reasoning.prepare.clips import manifest_audio_path, require_ffmpeg
from reasoning.prepare.corpus import Corpus, PrepareOptions, find_dir, find_file
from reasoning.prepare.protocols import PROTOCOLS, Protocol
from reasoning.prepare.tables import read_csv

SPLITS = ("train", "dev", "test")
CSV_NAMES = {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
CLIP_DIRS = {"train": "train_splits", "dev": "dev_splits_complete",
             "test": "output_repeated_splits_test"}
REQUIRED_COLUMNS = ("Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID")
EMOTIONS = PROTOCOLS["meld7"].labels
# The six main characters; every other speaker's gender is left unknown.
CAST_GENDER = {"Chandler": "m", "Joey": "m", "Ross": "m",
               "Monica": "f", "Rachel": "f", "Phoebe": "f"}
TIMESTAMP = re.compile(r"^\s*(\d+):(\d\d):(\d\d)[,.](\d+)\s*$")


def fix_mojibake(text: str) -> str:
    """Undo UTF-8 read as Windows-1252 ("â€™" -> "’"), found in re-saved copies."""
    if "â€" in text or "Ã" in text:
        try:
            return text.encode("cp1252").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return text
    return text


def parse_timestamp(value: str) -> float | None:
    """``"00:16:16,059"`` (comma or dot decimals) -> seconds; None if unreadable."""
    m = TIMESTAMP.match(value or "")
    if not m:
        return None
    h, mnt, s, frac = m.groups()
    return round(int(h) * 3600 + int(mnt) * 60 + int(s) + float("0." + frac), 3)


def _clip_dirs(base: Path, corpus: Corpus) -> dict[str, Path | None]:
    found = {split: find_dir(base, CLIP_DIRS[split]) for split in SPLITS}
    for split, folder in found.items():
        if folder is None:
            corpus.problems.append(f"{base}: clip folder {CLIP_DIRS[split]}/ not found; the "
                                   f"{split} rows are listed as missing their clips.")
    return found


def read_split(path: Path, split: str, clip_dir: Path | None, out: Path,
               corpus: Corpus, seen: dict[str, str]) -> None:
    """Append the rows of one official CSV to ``corpus``."""
    header, records = read_csv(path, corpus, multiline=("Utterance",))
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        corpus.problems.append(
            f"{path}: missing column(s) {', '.join(missing)} (header: {', '.join(header)}); "
            f"its {len(records)} rows are NOT prepared. Restore the official header "
            f"({', '.join(REQUIRED_COLUMNS)}, ...).")
        return
    for where, record in records:
        get = lambda key: (record.get(key) or "").strip()  # noqa: E731
        try:
            dia, utt = int(get("Dialogue_ID")), int(get("Utterance_ID"))
        except ValueError:
            corpus.drop(None, where, f"Dialogue_ID {get('Dialogue_ID')!r} / Utterance_ID "
                        f"{get('Utterance_ID')!r} are not integers; fix the row")
            continue
        clip = f"dia{dia}_utt{utt}"
        row_id = f"{split}_{clip}"
        if row_id in seen:
            corpus.drop(row_id, where, f"duplicate id (first at {seen[row_id]})")
            continue
        emotion = get("Emotion").lower()
        if emotion not in EMOTIONS:
            corpus.drop(row_id, where, f"emotion {get('Emotion')!r} is not a MELD label "
                        f"({', '.join(EMOTIONS)}); fix the row")
            continue
        seen[row_id] = where
        speaker = " ".join(get("Speaker").split()) or None
        start, end = parse_timestamp(get("StartTime")), parse_timestamp(get("EndTime"))
        wav = out / "audio" / split / f"{clip}.wav"
        src = (clip_dir / f"{clip}.mp4") if clip_dir else None
        corpus.rows.append({
            "id": row_id,
            "audio": manifest_audio_path(wav, out),
            "start": None, "end": None,
            "dataset": "meld",
            "speaker": speaker,
            "gender": CAST_GENDER.get(speaker or ""),
            "transcript": " ".join(fix_mojibake(get("Utterance")).split()) or None,
            "emotion": emotion,
            "emotion_votes": None,
            "valence": None, "arousal": None, "dominance": None,
            "va_source": None,
            "split": split,
            "sentiment": get("Sentiment").lower() or None,
            "dialogue": f"{split}_dia{dia}",
            "season": int(get("Season")) if get("Season").isdigit() else None,
            "episode": int(get("Episode")) if get("Episode").isdigit() else None,
            "episode_start": start, "episode_end": end,
            "_src": str(src) if src else None, "_dst": str(wav), "_where": where,
            "_duration": round(end - start, 3) if start is not None and end is not None
            and end > start else None,
        })


def load(root: Path, out: Path, opts: PrepareOptions, protocol: Protocol) -> Corpus:
    """Parse the CSVs (and locate the clips) into manifest rows."""
    corpus = Corpus("meld", [], va_source="derived", default_split="official",
                    official_speaker_disjoint=False, labels=protocol.labels)
    csvs = {split: find_file(root, CSV_NAMES[split]) for split in SPLITS}
    if not any(csvs.values()):
        raise UserError(f"{root}: none of {', '.join(CSV_NAMES.values())} found here or in "
                        "its subfolders. Point --root at the folder holding the official MELD "
                        "CSVs (MELD.Raw or data/MELD).")
    clip_dirs = dict.fromkeys(SPLITS)
    if not opts.labels_only:
        base = Path(opts.clips) if opts.clips else root
        if not base.is_dir():
            raise UserError(f"--clips {base}: no such folder.")
        clip_dirs = _clip_dirs(base, corpus)
        if not any(clip_dirs.values()):
            raise UserError(f"{base}: no MELD clip folders ({', '.join(CLIP_DIRS.values())}). "
                            "Pass --clips DIR (the folder holding them, e.g. MELD.Raw), or "
                            "--labels-only to write the manifest without audio.")
        require_ffmpeg()
    seen: dict[str, str] = {}
    for split in SPLITS:
        if csvs[split] is None:
            corpus.problems.append(f"{root}: {CSV_NAMES[split]} not found; the {split} split "
                                   "is empty.")
            continue
        corpus.inputs.append(csvs[split])
        read_split(csvs[split], split, clip_dirs[split], out, corpus, seen)
    bad_times = [r["id"] for r in corpus.rows if r["_duration"] is None]
    if bad_times:
        corpus.problems.append(f"{len(bad_times)} rows have StartTime/EndTime that give no "
                               f"duration (unreadable, or end <= start; first: {bad_times[0]}); "
                               "harmless, the clips themselves are measured when read.")
    corpus.notes.append("MELD's official train/dev/test splits share speakers (the six main "
                        "characters are in all three): they are not speaker-independent. Use "
                        "--split speaker-random for a speaker-disjoint split.")
    corpus.notes.append("ids are <split>_dia<D>_utt<U> because dialogue numbers restart in "
                        "every split; 'sentiment' keeps MELD's sentiment label.")
    return corpus
