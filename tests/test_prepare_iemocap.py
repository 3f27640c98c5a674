"""IEMOCAP preparation on a fixture written in the release's exact format (FORMAT.md)."""

import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from reasoning.audio import load_audio
from reasoning.errors import UserError
from reasoning.manifest import read_manifest
from reasoning.evaluation.folds import PROTOCOLS, iter_folds, select_rows
from reasoning.prepare import prepare
from reasoning.prepare.iemocap import read_transcripts

T = "\t"

# Session 1, two dialogs. Note the dialog Ses01M_script01_1 holds an F utterance: the
# speaker comes from the utterance name, not the dialog name.
S1_IMPRO = f"""% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]

[6.2901 - 8.2357]{T}Ses01F_impro01_F000{T}neu{T}[2.5000, 2.5000, 2.5000]
C-E1:{T}Neutral;{T}()
C-E2:{T}Neutral;{T}()
C-E3:{T}Frustration;{T}(tired)
A-E1:{T}val 3; act 2; dom  2;{T}()
A-E2:{T}val 2; act 3; dom  3;{T}()

[10.0100 - 11.3925]{T}Ses01F_impro01_M000{T}exc{T}[3.5000, 4.0000, 3.0000]
C-E1:{T}Excited; Happiness;{T}()
C-E2:{T}Excited;{T}()
C-M1:{T}Happiness;{T}()
A-E1:{T}val 4; act 4; dom  3;{T}()

[14.8872 - 18.0175]{T}Ses01F_impro01_F001{T}xxx{T}[2.0000, 3.5000, 3.0000]
C-E1:{T}Anger;{T}()
C-E2:{T}Frustration;{T}()
C-E3:{T}Other:annoyed;{T}(sarcastic, maybe)
C-F1:{T}Happy;{T}()
A-E1:{T}val 2; act 4; dom  3;{T}()

[19.2900  -  20.8100]   Ses01F_impro01_M001   fru   [ 2.0000,  3.0000, 3.5000 ]  
C-E1:   Frustration;  Anger;   ( )
C-E2:{T}Frustration;{T}()
C-E4:{T}Neutral;{T}()
"""

S1_SCRIPT = f"""% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]

[1.0000 - 2.5000]{T}Ses01M_script01_1_F000{T}hap{T}[4.5000, 3.0000, 3.0000]
C-E1:{T}Happiness;{T}()
C-E2:{T}Happiness;{T}()
C-E3:{T}Excited;{T}()

[3.0000 - 4.0000]{T}Ses01M_script01_1_M000{T}ang{T}[1.5000, 4.5000, 4.0000]
C-E1:{T}Anger;{T}()
C-E2:{T}Anger; Frustration;{T}()
C-E3:{T}Anger;{T}()

[5.0000 - 6.0000]{T}Ses01M_script01_1_M001{T}sad{T}[1.0000, 1.5000, 2.0000]
C-E1:{T}Sadness;{T}()
C-E2:{T}Sadness;{T}()
C-E3:{T}Neutral;{T}()
"""

S2_IMPRO = f"""% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]

[0.5000 - 2.0000]{T}Ses02F_impro02_F000{T}sad{T}[1.5000, 2.0000, 2.0000]
C-E1:{T}Sadness;{T}()
C-E2:{T}Sadness;{T}()
C-F1:{T}Sadness;{T}()

[2.5000 - 3.5000]{T}Ses02F_impro02_M000{T}oth{T}[3.0000, 3.0000, 3.0000]
C-E1:{T}Other: amused;{T}()
C-E2:{T}Other;{T}()
C-E3:{T}Surprise;{T}()

[4.0000 - 5.0000]{T}Ses02F_impro02_F001{T}neu{T}[3.0000, 2.0000, 3.0000]
C-E1:{T}Neutral;{T}()
C-E2:{T}Neutral;{T}()

[5.5000 - 6.5000]{T}Ses02F_impro02_M001{T}sur{T}[3.5000, 4.0000, 3.0000]
C-E1:{T}Surprise;{T}()
C-E2:{T}Surprise; Happiness;{T}()

[7.0000 - 8.0000]{T}Ses02F_impro02_F002{T}abc{T}[3.0000, 3.0000, 3.0000]
C-E1:{T}Neutral;{T}()

[8.0000 - 9.0000]{T}Ses02F_impro02_F000{T}neu{T}[3.0000, 3.0000, 3.0000]
C-E1:{T}Neutral;{T}()

[9.5000 - 10.0000]{T}Ses02F_impro02_M002{T}neu{T}[3.0000, 3.0000]
C-E1:{T}Neutral;{T}()
"""

TRANSCRIPTS = {
    ("Session1", "Ses01F_impro01"): """Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me. [LAUGHTER]
Ses01F_impro01_M000 [010.0100-011.3925]:   Do you   have your forms?
M: [BREATHING]
Ses01F_impro01_MXX0 [012.0000-012.5000]: [GARBAGE]
Ses01F_impro01_F001 [014.8872-018.0175]: Yeah, sure, whatever.
""",
    ("Session1", "Ses01M_script01_1"): """Ses01M_script01_1_F000 [001.0000-002.5000]: Oh, this is wonderful!
F: hmm
Ses01M_script01_1_M000 [003.0000-004.0000]: Get out.
Ses01M_script01_1_M001 [005.0000-006.0000]: I miss her.
""",
    ("Session2", "Ses02F_impro02"): """Ses02F_impro02_F000 [000.5000-002.0000]: It's gone.
Ses02F_impro02_M000 [002.5000-003.5000]: Ha, funny.
Ses02F_impro02_F001 [004.0000-005.0000]: Okay.
Ses02F_impro02_M001 [005.5000-006.5000]: Really? [LAUGHTER]
""",
}
EVALUATIONS = {("Session1", "Ses01F_impro01"): S1_IMPRO,
               ("Session1", "Ses01M_script01_1"): S1_SCRIPT,
               ("Session2", "Ses02F_impro02"): S2_IMPRO}
CORRUPT = "Ses02F_impro02_F001"


def write_release(root: Path, audio: bool = True) -> Path:
    """IEMOCAP_full_release with two sessions; every labelled utterance gets a short WAV
    (one of them corrupt), and an IEMOCAP-style macOS resource fork to ignore."""
    release = root / "IEMOCAP_full_release"
    for (session, dialog), text in EVALUATIONS.items():
        evaluation = release / session / "dialog" / "EmoEvaluation"
        evaluation.mkdir(parents=True, exist_ok=True)
        (evaluation / "Categorical").mkdir(exist_ok=True)
        (evaluation / f"{dialog}.txt").write_text(text)
        (evaluation / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07 not a label file")
        transcriptions = release / session / "dialog" / "transcriptions"
        transcriptions.mkdir(parents=True, exist_ok=True)
        (transcriptions / f"{dialog}.txt").write_text(TRANSCRIPTS[(session, dialog)])
        if not audio:
            continue
        wav_dir = release / session / "sentences" / "wav" / dialog
        wav_dir.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for name in re.findall(r"^\[.*?\]\s*(Ses\S+)", text, flags=re.M):
            path = wav_dir / f"{name}.wav"
            if name == CORRUPT:
                path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
            else:
                sf.write(path, (0.1 * rng.standard_normal(4000)).astype("float32"), 16000)
    return release


@pytest.fixture
def release(tmp_path):
    return write_release(tmp_path)


def by_id(rows):
    return {r["id"]: r for r in rows}


def test_labels_only_reads_every_annotation(tmp_path):
    release = write_release(tmp_path / "corpus", audio=False)
    result = prepare("iemocap", tmp_path / "corpus", tmp_path / "out", labels_only=True)
    rows = by_id(read_manifest(result.manifest, resolve_audio=False))
    assert len(rows) == 11
    card = result.card
    assert card["labels_only"] and "labels-only" in card["audio"]
    assert "--labels-only" in (tmp_path / "out" / "card.md").read_text()

    # Multi-label votes count once per label; excited merges into happy (iemocap4); the
    # self-evaluation C-M1 is counted.
    assert rows["Ses01F_impro01_M000"]["emotion"] == "happy"
    assert rows["Ses01F_impro01_M000"]["emotion_votes"] == {"happy": 4}
    assert rows["Ses01F_impro01_M000"]["emotion_raw"] == "exc"
    # xxx kept under its own name; "Other:annoyed" counts as other; the unknown "Happy" of
    # C-F1 is reported, not counted.
    xxx = rows["Ses01F_impro01_F001"]
    assert xxx["emotion"] == "xxx"
    assert xxx["emotion_votes"] == {"angry": 1, "frustrated": 1, "other": 1}
    assert any("'Happy'" in p for p in card["problems"])
    assert rows["Ses02F_impro02_M000"]["emotion_votes"] == {"other": 2, "surprised": 1}
    # Odd whitespace everywhere on this block.
    fru = rows["Ses01F_impro01_M001"]
    assert fru["emotion"] == "frustrated"
    assert fru["emotion_votes"] == {"angry": 1, "frustrated": 2, "neutral": 1}
    assert (fru["dialog_start"], fru["dialog_end"]) == (19.29, 20.81)
    assert (fru["valence"], fru["arousal"], fru["dominance"]) == (-0.5, 0.0, 0.25)

    neu = rows["Ses01F_impro01_F000"]
    assert (neu["valence"], neu["arousal"], neu["dominance"]) == (-0.25, -0.25, -0.25)
    assert neu["va_source"] == "annotated"
    assert rows["Ses01M_script01_1_M001"]["valence"] == -1.0
    assert neu["transcript"] == "Excuse me. [LAUGHTER]"
    assert rows["Ses01F_impro01_M000"]["transcript"] == "Do you have your forms?"
    assert rows["Ses01F_impro01_M001"]["transcript"] is None   # no transcription line

    # Speaker and gender from the utterance name, not the dialog name.
    script_f = rows["Ses01M_script01_1_F000"]
    assert (script_f["speaker"], script_f["gender"], script_f["split"]) == ("Ses01F", "f", "session1")
    assert rows["Ses02F_impro02_M000"]["speaker"] == "Ses02M"
    assert rows["Ses02F_impro02_M000"]["split"] == "session2"
    assert script_f["audio"] == str(
        release / "Session1" / "sentences" / "wav" / "Ses01M_script01_1" / "Ses01M_script01_1_F000.wav")
    assert all(r["start"] is None and r["dataset"] == "iemocap" for r in rows.values())

    # Dropped rows: unknown label, duplicate id, unreadable summary line, each with a reason.
    dropped = {d["id"]: d for d in card["dropped"]}
    assert set(dropped) == {"Ses02F_impro02_F002", "Ses02F_impro02_F000", "Ses02F_impro02_M002"}
    assert "'abc' is not an IEMOCAP label" in dropped["Ses02F_impro02_F002"]["reason"]
    assert "duplicate" in dropped["Ses02F_impro02_F000"]["reason"]
    line = 1 + next(i for i, t in enumerate(S2_IMPRO.splitlines()) if t.startswith("[8.0000"))
    assert dropped["Ses02F_impro02_F000"]["where"].endswith(f"Ses02F_impro02.txt:{line}")
    assert "summary line" in dropped["Ses02F_impro02_M002"]["reason"]
    assert rows["Ses02F_impro02_F000"]["emotion"] == "sad"      # the first one is kept

    # 4-class protocol: 7 in, 4 excluded (kept in the manifest, listed in the card).
    assert card["protocol"]["rows_in"] == 7
    assert sorted(e["label"] for e in card["protocol"]["excluded"]) == [
        "frustrated", "other", "surprised", "xxx"]
    assert card["counts"]["label_by_split"] == {
        "session1": {"angry": 1, "frustrated": 1, "happy": 2, "neutral": 1, "sad": 1, "xxx": 1},
        "session2": {"neutral": 1, "other": 1, "sad": 1, "surprised": 1}}
    assert any("Session3, Session4, Session5 not found" in p for p in card["problems"])
    assert card["durations"]["clips"] == 11


def test_full_protocol_keeps_excited_apart(tmp_path):
    write_release(tmp_path / "corpus", audio=False)
    result = prepare("iemocap", tmp_path / "corpus", tmp_path / "out", labels_only=True,
                     protocol="iemocap_full")
    rows = by_id(read_manifest(result.manifest))
    assert rows["Ses01F_impro01_M000"]["emotion"] == "excited"
    assert rows["Ses01F_impro01_M000"]["emotion_votes"] == {"excited": 2, "happy": 2}
    assert [e["label"] for e in result.card["protocol"]["excluded"]] == ["xxx"]
    assert result.card["protocol"]["rows_in"] == 10


def test_keep_other_makes_other_a_class(tmp_path):
    write_release(tmp_path / "corpus", audio=False)
    result = prepare("iemocap", tmp_path / "corpus", tmp_path / "out", labels_only=True,
                     keep_other=True)
    rows = by_id(read_manifest(result.manifest))
    assert (rows["Ses01F_impro01_F001"]["emotion"], rows["Ses01F_impro01_F001"]["emotion_orig"]) == (
        "other", "xxx")
    assert rows["Ses01F_impro01_M001"]["emotion"] == "other"
    assert rows["Ses01F_impro01_F000"]["emotion"] == "neutral"
    assert result.card["protocol"]["labels"] == ["neutral", "happy", "angry", "sad", "other"]
    assert result.card["protocol"]["rows_in"] == 11 and not result.card["protocol"]["excluded"]


def test_with_audio_drops_the_corrupt_clip_and_folds_by_session(release, tmp_path):
    result = prepare("iemocap", release, tmp_path / "out", workers=2)
    rows = read_manifest(result.manifest)
    assert len(rows) == 10
    assert CORRUPT not in {r["id"] for r in rows}
    reason = next(d["reason"] for d in result.card["dropped"] if d["id"] == CORRUPT)
    assert f"{CORRUPT}.wav" in reason
    assert all(r["duration"] == 0.25 and os.path.isfile(r["audio"]) for r in rows)
    assert result.card["durations"]["clips"] == 10
    assert result.card["split"]["speaker_disjoint"]
    # Leave-one-session-out: each session is the test fold once, speakers never shared.
    kept, _, _ = select_rows(rows, PROTOCOLS["iemocap4"])
    pairs = list(iter_folds(kept, PROTOCOLS["iemocap4"]))
    assert [name for name, _, _, _ in pairs] == ["session1", "session2"]
    for _, train, _, test in pairs:
        assert not {r["speaker"] for r in train} & {r["speaker"] for r in test}


def test_dialog_recording_stands_in_for_a_missing_sentence_file(release, tmp_path):
    session = release / "Session1"
    (session / "sentences" / "wav" / "Ses01M_script01_1" / "Ses01M_script01_1_M000.wav").unlink()
    (session / "dialog" / "wav").mkdir()
    t = np.arange(7 * 16000) / 16000
    # Loud only between 3 s and 4 s, where the summary line puts the utterance.
    loud_then_quiet = np.where((t >= 3) & (t < 4), 0.5, 0.001) * np.sin(2 * np.pi * 200 * t)
    sf.write(session / "dialog" / "wav" / "Ses01M_script01_1.wav",
             loud_then_quiet.astype("float32"), 16000)
    result = prepare("iemocap", release, tmp_path / "out", workers=1)
    row = {r["id"]: r for r in read_manifest(result.manifest)}["Ses01M_script01_1_M000"]
    assert row["audio"].endswith("dialog/wav/Ses01M_script01_1.wav")
    assert (row["start"], row["end"], row["duration"]) == (3.0, 4.0, 1.0)
    assert np.abs(load_audio(row["audio"], row["start"], row["end"])).max() > 0.4


def test_rerun_skips_until_an_input_changes(release, tmp_path):
    out = tmp_path / "out"
    first = prepare("iemocap", release, out, workers=1)
    mtime = (out / "manifest.jsonl").stat().st_mtime_ns
    again = prepare("iemocap", release, out, workers=1)
    assert again.skipped and not first.skipped
    assert (out / "manifest.jsonl").stat().st_mtime_ns == mtime
    assert prepare("iemocap", release, out, workers=1, force=True).skipped is False
    # An edited annotation file is a changed input.
    label_file = release / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    later = time.time() + 5
    os.utime(label_file, (later, later))
    assert prepare("iemocap", release, out, workers=1).skipped is False
    # Different options are a different output.
    assert prepare("iemocap", release, out, workers=1, protocol="iemocap_full").skipped is False


def test_missing_audio_folder_says_to_use_labels_only(tmp_path):
    write_release(tmp_path / "corpus", audio=False)
    with pytest.raises(UserError, match="--labels-only"):
        prepare("iemocap", tmp_path / "corpus", tmp_path / "out")


def test_wrong_root_names_the_fix(tmp_path):
    (tmp_path / "somewhere").mkdir()
    with pytest.raises(UserError, match="IEMOCAP_full_release"):
        prepare("iemocap", tmp_path / "somewhere", tmp_path / "out", labels_only=True)
    with pytest.raises(UserError, match="no such file or folder"):
        prepare("iemocap", tmp_path / "absent", tmp_path / "out", labels_only=True)


def test_transcript_reader_skips_non_utterances(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(TRANSCRIPTS[("Session1", "Ses01F_impro01")])
    assert read_transcripts(path) == {
        "Ses01F_impro01_F000": "Excuse me. [LAUGHTER]",
        "Ses01F_impro01_M000": "Do you have your forms?",
        "Ses01F_impro01_F001": "Yeah, sure, whatever."}
