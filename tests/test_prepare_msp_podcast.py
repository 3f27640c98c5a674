"""MSP-Podcast from a fixture in the release layout (Labels/, Audios/, Transcripts/)."""

import csv

import numpy as np
import pytest
import soundfile as sf

from reasoning.cli import main
from reasoning.errors import UserError
from reasoning.manifest import read_manifest
from reasoning.prepare import prepare

HEADER = ["FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set"]
# FileName stem, EmoClass, EmoAct, EmoVal, EmoDom, SpkrID, Gender, Split_Set
CONSENSUS = [
    ("0001_0001", "A", "6.0", "2.0", "5.5", "1", "Female", "Train"),
    ("0001_0002", "H", "5.0", "6.5", "4.0", "1", "Female", "Train"),
    ("0002_0001", "N", "4.0", "4.0", "4.0", "2", "Male", "Train"),
    ("0002_0002", "O", "3.2", "3.8", "4.4", "2", "Male", "Train"),
    ("0003_0001", "X", "4.6", "4.2", "3.6", "3", "Male", "Train"),
    ("0003_0002", "S", "7.6", "2.2", "2.5", "3", "Male", "Train"),      # EmoAct above 7
    ("0008_0001", "N", "4.0", "4.0", "4.0", "8", "Female", "Train"),    # its WAV is missing
    ("0004_0001", "U", "5.8", "4.8", "4.1", "4", "Female", "Development"),
    ("0004_0002", "A", "6.4", "1.6", "6.1", "4", "Female", "Development"),
    ("0005_0001", "F", "5.2", "2.4", "2.0", "5", "Male", "Test1"),
    ("0005_0002", "C", "4.4", "0.5", "5.0", "5", "Male", "Test1"),       # EmoVal below 1
    ("0006_0001", "D", "4.8", "2.6", "4.6", "Unknown", "Unknown", "Test2"),
    ("0006_0002", "N", "3.8", "4.0", "3.8", "Unknown", "Unknown", "Test2"),
    ("0007_0001", "H", "5.5", "6.0", "5.0", "7", "Female", "Test3"),
    ("0009_0001", "Z", "4.0", "4.0", "4.0", "9", "Male", "Train"),       # no such EmoClass
    ("0009_0002", "N", "4.0", "4.0", "4.0", "9", "Male", "Test"),        # no such Split_Set
]
# stem -> the annotators' primary emotions, as labels_detailed.csv writes them
ANNOTATIONS = {
    "0001_0001": ["Angry", "Angry", "Other-Frustrated"],
    "0003_0001": ["Happy", "Sad", "Neutral"],
    "0002_0002": ["Other-Curious", "Other", "Bored"],   # "Bored" is no MSP-Podcast class
    "0005_0002": ["Contempt", "Disgust", "Contempt"],
}
NO_TRANSCRIPT = {"0004_0002"}


def file_name(stem):
    return f"MSP-PODCAST_{stem}.wav"


def make_release(root, detailed="EmoDetail", header=HEADER):
    labels, audios, texts = root / "Labels", root / "Audios", root / "Transcripts"
    for d in (labels, audios, texts):
        d.mkdir(parents=True, exist_ok=True)
    with open(labels / "labels_consensus.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for stem, *rest in CONSENSUS:
            w.writerow([file_name(stem), *rest])
    with open(labels / "labels_detailed.csv", "w", newline="") as f:
        w = csv.writer(f)
        if detailed == "EmoDetail":
            w.writerow(["FileName", "EmoDetail"])
        else:
            w.writerow(["FileName", "WorkerID", "EmoClass_Major", "EmoClass_Second", "EmoAct",
                        "EmoVal", "EmoDom"])
        for stem, *_rest in CONSENSUS:
            for k, primary in enumerate(ANNOTATIONS.get(stem) or [_first_word(stem)]):
                if detailed == "EmoDetail":
                    detail = f"WORKER{k:05d}; {primary}; Concerned,Annoyed; A:4.0; V:3.0; D:4.0;"
                    w.writerow([file_name(stem), detail])
                else:
                    w.writerow([file_name(stem), f"WORKER{k:05d}", primary, "Concerned", "4.0",
                                "3.0", "4.0"])
    t = np.arange(8000) / 16000
    for i, (stem, *_rest) in enumerate(CONSENSUS):
        if stem != "0008_0001":
            sf.write(audios / file_name(stem), (0.2 * np.sin(2 * np.pi * (120 + 10 * i) * t)).astype("float32"), 16000)
        if stem not in NO_TRANSCRIPT:
            (texts / f"MSP-PODCAST_{stem}.txt").write_text(f"words of clip {stem}\n")
    return root


def _first_word(stem):
    """One annotator agreeing with the consensus letter, as a word."""
    letter = next(c[1] for c in CONSENSUS if c[0] == stem)
    return {"A": "Angry", "S": "Sad", "H": "Happy", "U": "Surprise", "F": "Fear", "D": "Disgust",
            "C": "Contempt", "N": "Neutral", "O": "Other", "X": "Neutral", "Z": "Neutral"}[letter]


@pytest.fixture
def release(tmp_path):
    return make_release(tmp_path / "MSP-PODCAST")


def test_release_prepares_with_exact_counts_votes_and_vad(release, tmp_path):
    result = prepare("msp-podcast", release, tmp_path / "out")
    rows = {r["id"]: r for r in read_manifest(result.manifest)}
    card = result.card
    assert card["counts"]["label_by_split"] == {
        "train": {"anger": 1, "happiness": 1, "neutral": 1, "no_agreement": 1, "other": 1, "sadness": 1},
        "dev": {"anger": 1, "surprise": 1},
        "test1": {"contempt": 1, "fear": 1},
        "test2": {"disgust": 1, "neutral": 1},
        "test3": {"happiness": 1},
    }
    # votes: one per annotator's primary emotion, "Other-..." as other, an unknown word not counted
    assert rows["MSP-PODCAST_0001_0001"]["emotion_votes"] == {"anger": 2, "other": 1}
    assert rows["MSP-PODCAST_0003_0001"]["emotion_votes"] == {"happiness": 1, "neutral": 1, "sadness": 1}
    assert rows["MSP-PODCAST_0002_0002"]["emotion_votes"] == {"other": 2}
    assert rows["MSP-PODCAST_0005_0002"]["emotion_votes"] == {"contempt": 2, "disgust": 1}
    assert any("'Bored' (1)" in p for p in card["problems"])
    # VAD: 1..7 -> -1..1 as (x - 4) / 3, outside values clipped and reported
    r = rows["MSP-PODCAST_0001_0001"]
    assert (r["valence"], r["arousal"], r["dominance"]) == (-0.6667, 0.6667, 0.5)
    assert rows["MSP-PODCAST_0003_0002"]["arousal"] == 1.0
    assert rows["MSP-PODCAST_0005_0002"]["valence"] == -1.0
    clipped = next(p for p in card["problems"] if "outside 1..7" in p)
    assert clipped.startswith("2 dimension values") and "EmoAct=7.6" in clipped and "EmoVal=0.5" in clipped
    assert all(r["va_source"] == "annotated" for r in rows.values())
    # speakers, genders, transcripts, the letter kept as emotion_raw
    assert rows["MSP-PODCAST_0006_0001"]["speaker"] is None and rows["MSP-PODCAST_0006_0001"]["gender"] is None
    assert rows["MSP-PODCAST_0001_0002"]["speaker"] == "1" and rows["MSP-PODCAST_0001_0002"]["gender"] == "f"
    assert rows["MSP-PODCAST_0004_0001"]["transcript"] == "words of clip 0004_0001"
    assert rows["MSP-PODCAST_0004_0002"]["transcript"] is None
    assert any("1 clips have no transcript" in p for p in card["problems"])
    assert rows["MSP-PODCAST_0003_0001"]["emotion_raw"] == "X"
    # left out, with their reasons
    reasons = {d["id"]: d["reason"] for d in card["dropped"]}
    assert set(reasons) == {"MSP-PODCAST_0008_0001", "MSP-PODCAST_0009_0001", "MSP-PODCAST_0009_0002"}
    assert "audio file not found" in reasons["MSP-PODCAST_0008_0001"]
    assert "EmoClass 'Z'" in reasons["MSP-PODCAST_0009_0001"]
    assert "Split_Set 'Test'" in reasons["MSP-PODCAST_0009_0002"]
    # the protocol: eight classes; other and no agreement stay in the manifest, excluded
    assert card["protocol"]["name"] == "msp-podcast" and card["protocol"]["rows_in"] == 11
    assert sorted(e["label"] for e in card["protocol"]["excluded"]) == ["no_agreement", "other"]
    assert card["split"]["speaker_disjoint"]


def test_keep_other_makes_other_and_no_agreement_one_training_class(release, tmp_path):
    result = prepare("msp-podcast", release, tmp_path / "out", keep_other=True)
    rows = {r["id"]: r for r in read_manifest(result.manifest)}
    assert rows["MSP-PODCAST_0003_0001"]["emotion"] == "other"
    assert rows["MSP-PODCAST_0003_0001"]["emotion_orig"] == "no_agreement"
    assert rows["MSP-PODCAST_0002_0002"]["emotion"] == "other"
    assert result.card["protocol"]["rows_in"] == 13 and not result.card["protocol"]["excluded"]
    assert result.card["protocol"]["labels"][-1] == "other"


def test_both_layouts_of_labels_detailed_give_the_same_votes(tmp_path):
    a = prepare("msp-podcast", make_release(tmp_path / "a"), tmp_path / "out_a")
    b = prepare("msp-podcast", make_release(tmp_path / "b", detailed="EmoClass_Major"), tmp_path / "out_b")
    votes_a, votes_b = ({r["id"]: r["emotion_votes"] for r in read_manifest(res.manifest)} for res in (a, b))
    assert votes_a == votes_b and any(votes_a.values())


def test_a_release_with_other_column_names_stops(tmp_path):
    renamed = [("Dominance" if c == "EmoDom" else "Speaker" if c == "SpkrID" else c) for c in HEADER]
    root = make_release(tmp_path / "r", header=renamed)
    with pytest.raises(UserError) as err:
        prepare("msp-podcast", root, tmp_path / "out")
    msg = str(err.value)
    assert str(root / "Labels" / "labels_consensus.csv") in msg
    assert "missing column(s) EmoDom, SpkrID" in msg and "Dominance" in msg
    assert "restore the released file" in msg
    (root / "Labels" / "labels_consensus.csv").unlink()
    make_release(root)
    (root / "Labels" / "labels_detailed.csv").write_text("File,Emotion\nx.wav,Angry\n")
    with pytest.raises(UserError, match=r"labels_detailed.csv: the header is File, Emotion; .*"
                                        r"FileName, EmoDetail .*FileName, EmoClass_Major"):
        prepare("msp-podcast", root, tmp_path / "out")
    with pytest.raises(UserError, match=r"no Labels/labels_consensus.csv"):
        prepare("msp-podcast", tmp_path, tmp_path / "out")


def test_cli_prints_the_counts_and_writes_the_card(release, tmp_path, capsys):
    assert main(["prepare", "msp-podcast", "--root", str(release), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "13 rows (written)" in out and "test2: 2 rows" in out
    card = (tmp_path / "o" / "card.md").read_text()
    assert "| no_agreement | 1 | 0 | 0 | 0 | 0 | 1 |" in card
    assert main(["prepare", "msp-podcast", "--root", str(release), "--out", str(tmp_path / "o")]) == 0
    assert "up to date" in capsys.readouterr().out
