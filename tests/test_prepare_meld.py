"""MELD preparation: fixture CSVs with the release's quirks, tiny MP4 clips, the real CSVs."""

import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import soundfile as sf

from reasoning.manifest import read_manifest
from reasoning.prepare import prepare
from reasoning.prepare.meld import parse_timestamp

HEADER = ("Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,"
          "StartTime,EndTime\n")
# Quirks of the real files: curly quotes and ellipses, commas inside quoted fields, a
# quoted field spanning two lines, comma-decimal time stamps, padded speaker names.
TRAIN = HEADER + (
    '1,"Oh my God, he’s lost it. He’s totally lost it.",Phoebe,sadness,negative,0,0,4,7,'
    '"00:20:57,256","00:21:00,049"\n'
    '2,What?,Monica,surprise,negative,0,1,4,7,"00:21:00,049","00:21:01,072"\n'
    '3,"Or, or, we could go to the bank…\nand cut them off at the source.",Chandler ,neutral,'
    'neutral,1,0,3,19,"00:12:04,009","00:12:07,844"\n'
    '4,You’re a genius!,The Interviewer,joy,positive,1,1,3,19,"00:12:08,000","00:12:09,500"\n'
    '5,No way.,Joey,rage,negative,1,2,3,19,"00:12:10,000","00:12:11,000"\n'
    '6,What?,Monica,surprise,negative,0,1,4,7,"00:21:00,049","00:21:01,072"\n'
)
DEV = HEADER + '1,Hi.,Ross,neutral,neutral,0,0,1,1,"00:00:01,000","00:00:02,000"\n'
# Saved by a Windows tool: Windows-1252 bytes (’ is 0x92) behind a BOM-less header.
TEST = (HEADER + '1,It’s fine.,Rachel,joy,positive,0,0,2,3,"00:01:00,000","00:01:01,250"\n'
        '2,Whatever.,Rachel,disgust,negative,0,1,2,3,"00:01:02,000","00:01:00,000"\n')


def write_csvs(folder: Path, dev: str = DEV) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train_sent_emo.csv").write_text(TRAIN, encoding="utf-8")
    (folder / "dev_sent_emo.csv").write_text(dev, encoding="utf-8")
    (folder / "test_sent_emo.csv").write_bytes(TEST.encode("cp1252"))
    return folder


def make_mp4(path: Path, volume: float, seconds: float = 0.6) -> None:
    """A tiny MP4 like MELD's: a video track and 48 kHz stereo AAC."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"anoisesrc=color=pink:sample_rate=48000:seed=1:duration={seconds}", "-f", "lavfi",
                    "-i", f"color=c=black:s=16x16:d={seconds}:r=10", "-af", f"volume={volume}",
                    "-ac", "2", "-c:a", "aac", "-c:v", "mpeg4", "-shortest", str(path)],
                   check=True)


@pytest.fixture
def meld_raw(tmp_path):
    """MELD.Raw as unpacked: CSVs at the top, clips one level down; dia1_utt1 has no clip
    and the dev clip is not a video at all."""
    raw = write_csvs(tmp_path / "MELD.Raw")
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    train = raw / "train" / "train_splits"
    make_mp4(train / "dia0_utt0.mp4", 1.0)
    make_mp4(train / "dia1_utt0.mp4", 0.05)
    shutil.copy(train / "dia0_utt0.mp4", train / "dia0_utt1.mp4")
    dev = raw / "dev" / "dev_splits_complete"
    dev.mkdir(parents=True)
    (dev / "dia0_utt0.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    test = raw / "test" / "output_repeated_splits_test"
    test.mkdir(parents=True)
    shutil.copy(train / "dia1_utt0.mp4", test / "dia0_utt0.mp4")
    shutil.copy(train / "dia0_utt0.mp4", test / "dia0_utt1.mp4")
    return raw


def test_timestamps_with_comma_decimals():
    assert parse_timestamp("00:16:16,059") == 976.059
    assert parse_timestamp("0:00:01.5") == 1.5
    assert parse_timestamp("garbage") is None


def test_labels_only_reads_the_quirky_csvs(tmp_path):
    root = write_csvs(tmp_path / "meld")
    result = prepare("meld", root, tmp_path / "out", labels_only=True)
    rows = {r["id"]: r for r in read_manifest(result.manifest, resolve_audio=False)}
    assert sorted(rows) == ["dev_dia0_utt0", "test_dia0_utt0", "test_dia0_utt1",
                            "train_dia0_utt0", "train_dia0_utt1", "train_dia1_utt0",
                            "train_dia1_utt1"]
    first = rows["train_dia0_utt0"]
    assert first["transcript"] == "Oh my God, he’s lost it. He’s totally lost it."
    assert (first["speaker"], first["gender"], first["sentiment"]) == ("Phoebe", "f", "negative")
    assert (first["episode_start"], first["episode_end"]) == (1257.256, 1260.049)
    assert (first["split"], first["dialogue"], first["season"]) == ("train", "train_dia0", 4)
    assert first["audio"] == "audio/train/dia0_utt0.wav"
    multi = rows["train_dia1_utt0"]
    assert multi["transcript"] == "Or, or, we could go to the bank… and cut them off at the source."
    assert multi["speaker"] == "Chandler" and multi["gender"] == "m"
    assert rows["train_dia1_utt1"]["gender"] is None
    assert rows["test_dia0_utt0"]["transcript"] == "It’s fine."
    assert any("Windows-1252" in n for n in result.card["notes"])
    dropped = {d["where"].rsplit(":", 1)[-1]: d["reason"] for d in result.card["dropped"]}
    assert "'rage' is not a MELD label" in dropped["7"]
    assert "duplicate id (first at" in dropped["8"]
    assert result.card["counts"]["label_by_split"] == {
        "train": {"joy": 1, "neutral": 1, "sadness": 1, "surprise": 1},
        "dev": {"neutral": 1}, "test": {"disgust": 1, "joy": 1}}
    assert result.card["va"]["source"] is None
    assert any("end <= start" in p for p in result.card["problems"])


def test_csv_missing_a_column_is_reported_and_the_rest_prepared(tmp_path):
    broken = DEV.replace("Emotion,", "Feeling,")
    root = write_csvs(tmp_path / "meld", dev=broken)
    result = prepare("meld", root, tmp_path / "out", labels_only=True)
    assert result.card["rows"] == 6
    problem = next(p for p in result.card["problems"] if "dev_sent_emo.csv" in p)
    assert "missing column(s) Emotion" in problem and "1 rows are NOT prepared" in problem


def test_csv_row_with_a_missing_field_is_an_error(tmp_path):
    from reasoning.errors import UserError
    short = DEV.replace(',"00:00:02,000"', "")        # EndTime left out: 10 fields of 11
    root = write_csvs(tmp_path / "meld", dev=short)
    with pytest.raises(UserError, match=r"dev_sent_emo.csv:2: 10 fields where the header has 11"):
        prepare("meld", root, tmp_path / "out", labels_only=True)


def test_clips_are_extracted_once_and_bad_clips_listed(meld_raw, tmp_path):
    out = tmp_path / "out"
    result = prepare("meld", meld_raw, out, workers=2)
    rows = {r["id"]: r for r in read_manifest(result.manifest)}
    assert sorted(rows) == ["test_dia0_utt0", "test_dia0_utt1", "train_dia0_utt0",
                            "train_dia0_utt1", "train_dia1_utt0"]
    info = sf.info(rows["train_dia0_utt0"]["audio"])
    assert (info.samplerate, info.channels) == (16000, 1)
    assert rows["train_dia0_utt0"]["audio"] == str((out / "audio/train/dia0_utt0.wav").resolve())
    assert abs(rows["train_dia0_utt0"]["duration"] - 0.6) < 0.05
    reasons = {d["id"]: d["reason"] for d in result.card["dropped"]}
    assert "audio file not found" in reasons["train_dia1_utt1"]
    assert "dia1_utt1.mp4" in reasons["train_dia1_utt1"]
    assert "ffmpeg could not extract" in reasons["dev_dia0_utt0"]
    # ... plus the CSV's 'rage' row and its duplicate id (that one keeps the first row).
    assert sorted(reasons) == ["dev_dia0_utt0", "train_dia0_utt1", "train_dia1_utt1",
                               "train_dia1_utt2"]
    assert "duplicate" in reasons["train_dia0_utt1"]
    # Derived VA: the loud clip is more aroused than the quiet one.
    assert all(r["va_source"] == "derived" for r in rows.values())
    assert rows["train_dia0_utt0"]["arousal"] > rows["train_dia1_utt0"]["arousal"]
    assert "5 clips decoded" in result.card["audio"] and "5 extracted now" in result.card["audio"]

    # A second run with the same inputs does nothing; --force re-writes the manifest but
    # reuses the extracted WAVs.
    assert prepare("meld", meld_raw, out).skipped
    forced = prepare("meld", meld_raw, out, force=True, workers=1)
    assert "0 extracted now, 5 reused" in forced.card["audio"]
    # Deleting an extracted WAV makes the output out of date.
    (out / "audio/train/dia0_utt1.wav").unlink()
    again = prepare("meld", meld_raw, out, workers=1)
    assert not again.skipped and "1 extracted now" in again.card["audio"]


def test_no_clip_folders_asks_for_labels_only(tmp_path):
    from reasoning.errors import UserError
    root = write_csvs(tmp_path / "meld")
    with pytest.raises(UserError, match="--labels-only"):
        prepare("meld", root, tmp_path / "out")


def test_real_meld_csvs(shared_data, tmp_path):
    root = shared_data / "meld"
    if not (root / "train_sent_emo.csv").is_file():
        pytest.skip("MELD CSVs not present")
    result = prepare("meld", root, tmp_path / "out", labels_only=True)
    rows = read_manifest(result.manifest, resolve_audio=False)
    per_split = Counter(r["split"] for r in rows)
    assert per_split == {"train": 9989, "dev": 1109, "test": 2610}
    train = Counter(r["emotion"] for r in rows if r["split"] == "train")
    assert train == {"neutral": 4710, "joy": 1743, "surprise": 1205, "anger": 1109,
                     "sadness": 683, "disgust": 271, "fear": 268}
    assert not result.card["dropped"]
    assert all(r["sentiment"] in ("neutral", "positive", "negative") for r in rows)
    assert all("â€" not in (r["transcript"] or "") for r in rows)
    assert any("’" in (r["transcript"] or "") for r in rows)
    assert result.card["split"]["speaker_disjoint"] is False
