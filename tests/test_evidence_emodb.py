"""Smoke test on a few real EmoDB clips (skipped when ../shared/data is absent)."""

import csv

import pytest

from reasoning.evidence import measure_manifest
from reasoning.rationales import write_rationales

EMOTIONS = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness",
            "T": "sadness", "N": "neutral"}


def emodb_rows(root, names):
    texts = {r["text_code"]: r for r in csv.DictReader(open(root / "transcripts.csv", encoding="utf-8"))}
    rows = []
    for name in names:
        path = root / "wav" / f"{name}.wav"
        if not path.is_file():
            pytest.skip(f"{path} is not present")
        rows.append({"id": name, "audio": str(path), "dataset": "emodb", "speaker": name[:2],
                     "gender": "m", "transcript": texts[name[2:5]]["english"],
                     "emotion": EMOTIONS[name[5]]})
    return rows


def test_emodb_clips_evidence_and_template_rationales(shared_data):
    root = shared_data / "emodb"
    if not (root / "wav").is_dir():
        pytest.skip("EmoDB clips are not present")
    # Speaker 03 (male): angry and sad readings of the same sentences, plus neutral ones.
    names = ["03a01Wa", "03a02Wb", "03a04Wc", "03a02Ta", "03a04Ta", "03a05Tc", "03a01Nc",
             "03a02Nc"]
    names = [n for n in names if (root / "wav" / f"{n}.wav").is_file()]
    if len(names) < 6:
        pytest.skip("not enough of the expected EmoDB clips")
    rows, summary = measure_manifest(emodb_rows(root, names), min_speaker_utterances=5)
    assert summary["failed"] == 0 and summary["unvoiced"] == 0
    ev = {r["id"]: r["evidence"] for r in rows}
    for e in ev.values():
        v = e["values"]
        assert 75 < v["f0_mean_hz"] < 400 and 0 < v["syllable_rate"] < 12
        assert e["baseline"]["kind"] == "speaker" and e["lexical"]["hits"] == []
    angry = [e["values"]["f0_mean_hz"] for n, e in ev.items() if n[5] == "W"]
    sad = [e["values"]["f0_mean_hz"] for n, e in ev.items() if n[5] == "T"]
    assert min(angry) > max(sad)  # acted anger is higher pitched than acted sadness
    rows, s = write_rationales(rows, "template")
    assert s["final_pass"] == len(rows) and s["fallbacks"] == 0
