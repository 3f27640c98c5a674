"""`emoreason eval` end to end: metrics.json, the Markdown table and the plots render;
the checkpoint seam; bad input gives clear errors."""

import csv
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from reasoning.cli import main
from reasoning.evaluation.evaluate import evaluate_rows
from reasoning.manifest import write_manifest
from reasoning.evaluation.report import plot_confusion, plot_speaker_uar, plot_va_scatter

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR, after checking the signature."""
    data = Path(path).read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def check_png(path, min_bytes=5000):
    assert Path(path).is_file()
    assert Path(path).stat().st_size > min_bytes  # a drawn figure, not an empty canvas
    w, h = png_size(path)
    assert 200 < w < 4000 and 200 < h < 4000


def text_rows(root: Path, n_speakers=4, per_speaker=8):
    """Rows with transcripts, VA and placeholder audio files (the predictor below does not
    read audio, but the evaluation checks that every clip exists)."""
    words = {"angry": "furious hate yelling damn", "sad": "lonely tears miss alone",
             "neutral": "table paper monday window"}
    rows = []
    for s in range(n_speakers):
        for i in range(per_speaker):
            emotion = ["angry", "sad", "neutral"][i % 3]
            (root / f"s{s}_{i}.wav").touch()
            rows.append({"id": f"s{s}_{i}", "audio": str(root / f"s{s}_{i}.wav"),
                         "speaker": f"s{s}", "gender": "fm"[s % 2],
                         "transcript": f"well {words[emotion].split()[i % 4]} {i}",
                         "emotion": emotion, "valence": [-0.6, -0.4, 0.0][i % 3],
                         "arousal": [0.7, -0.5, 0.0][i % 3],
                         "va_source": "annotated" if s < 3 else "derived"})
    return rows


def oracle_with_noise(fold, rows):
    """A model stand-in through the predictor seam: right 3 times in 4, with VA and
    rationales."""
    labels = ["angry", "neutral", "sad"]
    rng = np.random.default_rng(sum(map(ord, fold)))  # a different draw per fold
    scores = rng.random((len(rows), 3))
    for i, r in enumerate(rows):
        if i % 4:
            scores[i, labels.index(r["emotion"])] += 1.0
    return {"labels": [labels[j] for j in scores.argmax(1)], "scores": scores,
            "label_set": labels,
            "valence": [r["valence"] + rng.normal(0, 0.1) for r in rows],
            "arousal": [r["arousal"] + rng.normal(0, 0.1) for r in rows],
            "rationales": [{"text": "t", "writer": "template", "emotion": r["emotion"],
                            "verdict": "pass" if i % 2 == 0 else "fail", "claims": [{"cue": "pitch"}],
                            "passed_other_clip": i % 4 == 0}
                           for i, r in enumerate(rows)]}


def test_report_and_plots_render(tmp_path):
    result = evaluate_rows(text_rows(tmp_path), "loso", tmp_path, baselines=["majority", "tfidf"],
                           predictor=oracle_with_noise, meta={"manifest": "m.jsonl"})
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["protocol"]["name"] == "loso" and data["protocol"]["labels"] == [
        "angry", "neutral", "sad"]
    assert [f["name"] for f in data["folds"]] == ["speaker-s0", "speaker-s1", "speaker-s2",
                                                  "speaker-s3"]
    assert set(data["versions"]) >= {"torch", "transformers", "peft", "emoreason", "sklearn",
                                     "opensmile"}
    assert {"checkpoint", "recipe_hash", "created"} <= set(data)
    assert list(data["systems"]) == ["model", "majority", "tfidf"]
    model = data["systems"]["model"]
    assert set(model["pooled"]["va"]) == {"annotated", "derived"}
    assert model["pooled"]["rationales"]["pass_rate"] == pytest.approx(0.5)
    # passes on its own clip half the time, on the other clip a quarter: 0.5 - 0.25
    assert model["pooled"]["rationales"]["clip_specific_grounding"] == pytest.approx(0.25)
    assert model["summary"]["ua"]["folds"] == 4
    assert result["systems"]["tfidf"]["pooled"]["ua"] > result["systems"]["majority"][
        "pooled"]["ua"]

    table = (tmp_path / "report.md").read_text()
    lines = [ln for ln in table.splitlines() if ln.startswith("|")]
    assert "UA %" in lines[0] and "CCC valence" in lines[0] and "speakers UAR ≥ .75" in lines[0]
    assert [ln.split("|")[1].strip() for ln in lines[2:]] == ["model", "majority", "tfidf"]
    assert "±" in lines[2] and "(annotated)" in lines[2]
    assert lines[0].endswith("| rationale pass % | clip-specific grounding |")
    assert lines[2].endswith("| 50.0 | 0.250 |") and lines[3].endswith("| – | – |")  # majority: none

    plots = {Path(p).name for p in result["report"]["plots"]}
    assert plots == {"confusion_model.png", "confusion_majority.png", "confusion_tfidf.png",
                     "va_model.png", "speaker_uar.png"}
    for name in plots:
        check_png(tmp_path / "plots" / name)
    pred = [json.loads(ln) for ln in (tmp_path / "predictions" / "model.jsonl").open()]
    assert len(pred) == 32 and set(pred[0]["scores"]) == {"angry", "neutral", "sad"}
    assert {"valence", "arousal", "rationale"} <= set(pred[0])


def test_plot_functions_directly(tmp_path):
    cm = [[5, 1, 0], [0, 0, 0], [2, 0, 3]]  # the middle class has no utterance
    check_png(plot_confusion(cm, ["a", "b", "c"], tmp_path / "cm.png", "title"))
    check_png(plot_speaker_uar({"x": {"s1": 0.8, "s2": None}, "y": {"s1": 0.4, "s2": 0.6}},
                               tmp_path / "uar.png", genders={"s1": "f"}), min_bytes=3000)
    rng = np.random.default_rng(0)
    t = list(rng.uniform(-1, 1, 30))
    check_png(plot_va_scatter({"valence": (t, t, ["annotated"] * 30),
                               "arousal": ([], [], [])}, tmp_path / "va.png",
                              ccc={"valence": {"annotated": 1.0}}))


def write_tone_manifest(root: Path, transcripts: bool = False) -> Path:
    rows = []
    for s, base in enumerate((120.0, 180.0, 230.0)):
        for i in range(8):
            loud = i % 2 == 0
            t = np.arange(8000) / 16000
            wave = (0.5 if loud else 0.03) * np.sin(2 * np.pi * base * (1 + 0.02 * i) * t)
            path = root / f"s{s}_{i}.wav"
            sf.write(path, wave.astype(np.float32), 16000)
            rows.append({"id": f"s{s}_{i}", "audio": path.name, "speaker": f"s{s}",
                         "gender": "f", "emotion": "angry" if loud else "sad",
                         "transcript": "words" if transcripts else None})
    return write_manifest(rows, root / "manifest.jsonl")


def test_cli_runs_the_baselines(tmp_path, capsys):
    manifest = write_tone_manifest(tmp_path)
    out = tmp_path / "run"
    rc = main(["eval", "--manifest", str(manifest), "--protocol", "loso", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| egemaps |" in printed and "Not run: tfidf (24 of 24 rows have no transcript)" \
        in printed
    data = json.loads((out / "metrics.json").read_text())
    ua = {name: s["summary"]["ua"]["mean"] for name, s in data["systems"].items()}
    assert ua["egemaps"] > ua["majority"] == 0.5
    assert (out / "egemaps_cache.npz").is_file()
    # one fold only, and the cache answers for every clip
    rc = main(["eval", "--manifest", str(manifest), "--protocol", "loso", "--out", str(out),
               "--fold", "speaker-s1", "--baselines", "egemaps"])
    assert rc == 0
    data = json.loads((out / "metrics.json").read_text())
    assert [f["name"] for f in data["folds"]] == ["speaker-s1"]


def test_missing_audio_is_left_out_for_every_system(tmp_path):
    manifest = write_tone_manifest(tmp_path)
    (tmp_path / "s0_3.wav").unlink()
    (tmp_path / "s1_2.wav").write_bytes(b"not audio")
    out = tmp_path / "run"
    assert main(["eval", "--manifest", str(manifest), "--protocol", "loso", "--out", str(out),
                 "--baselines", "majority,egemaps"]) == 0
    data = json.loads((out / "metrics.json").read_text())
    assert data["rows"] == {"read": 24, "kept": 22,
                            "excluded": {"audio file missing": 1, "audio unreadable": 1}}
    assert all(s["pooled"]["n"] == 22 for s in data["systems"].values())


def test_checkpoint_seam_per_fold(tmp_path, monkeypatch):
    manifest = write_tone_manifest(tmp_path)
    ckpt = tmp_path / "ckpt"
    for s in range(3):
        (ckpt / f"speaker-s{s}").mkdir(parents=True)
    calls = []

    def predict_rows(checkpoint_dir, rows, device=None):
        calls.append((Path(checkpoint_dir).name, {r["speaker"] for r in rows}))
        # the model's own label order, plus a label the protocol does not score
        labels = ["sad", "angry", "neutral"]
        scores = np.array([[0.1, 0.8, 0.1] if r["emotion"] == "angry" else [0.6, 0.1, 0.3]
                           for r in rows])
        return {"labels": [labels[j] for j in scores.argmax(1)], "scores": scores,
                "label_set": labels, "valence": None, "arousal": None, "rationales": None}

    monkeypatch.setitem(sys.modules, "reasoning.explain",
                        types.SimpleNamespace(predict_rows=predict_rows))
    out = tmp_path / "run"
    assert main(["eval", "--manifest", str(manifest), "--protocol", "loso", "--out", str(out),
                 "--checkpoint", str(ckpt), "--baselines", "none"]) == 0
    assert calls == [(f"speaker-s{s}", {f"s{s}"}) for s in range(3)]
    data = json.loads((out / "metrics.json").read_text())
    assert list(data["systems"]) == ["model"]
    assert data["systems"]["model"]["pooled"]["ua"] == 1.0
    assert data["checkpoint"] == str(ckpt.resolve())


def test_clear_errors(tmp_path, capsys, monkeypatch):
    manifest = write_tone_manifest(tmp_path)
    base = ["eval", "--manifest", str(manifest), "--protocol", "loso", "--out",
            str(tmp_path / "run")]
    assert main(base + ["--baselines", "majority,svm"]) == 2
    assert "unknown ['svm']" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "reasoning.explain",
                        types.SimpleNamespace(predict_rows=lambda c, r, device=None: None))
    (tmp_path / "one").mkdir()
    assert main(base + ["--checkpoint", str(tmp_path / "one")]) == 2
    err = capsys.readouterr().err
    assert "3 folds" in err and "--fold" in err
    assert main(base + ["--checkpoint", str(tmp_path / "one"), "--fold", "speaker-s0"]) == 2
    assert "must be a dict" in capsys.readouterr().err


def test_emodb_majority_and_tfidf(shared_data, tmp_path):
    """The real EmoDB clips' labels: the speaker-08 fold has no disgust, so the majority
    class scores 1/6 there and 1/7 elsewhere."""
    root = shared_data / "emodb"
    letters = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness",
               "T": "sadness", "N": "neutral"}
    text = {r["text_code"]: r["transcript"] for r in csv.DictReader(
        (root / "transcripts.csv").open(encoding="utf-8"))}
    rows = [{"id": p.stem, "audio": str(p), "speaker": p.stem[:2], "gender": None,
             "transcript": text[p.stem[2:5]], "emotion": letters[p.stem[5]]}
            for p in sorted((root / "wav").glob("*.wav"))]
    result = evaluate_rows(rows, "loso", tmp_path, baselines=["majority", "tfidf"])
    folds = result["systems"]["majority"]["per_fold"]
    assert len(folds) == 6
    assert folds["speaker-08"]["ua"] == pytest.approx(1 / 6)
    assert folds["speaker-03"]["ua"] == pytest.approx(1 / 7)
    assert folds["speaker-08"]["per_class"]["disgust"]["recall"] is None


def test_compare_puts_runs_side_by_side_and_refuses_other_test_sets(tmp_path, capsys):
    rows = text_rows(tmp_path)

    def two_step(fold, test):  # a run whose model also has an oracle-VA pass
        pred = oracle_with_noise(fold, test)
        return {**pred, "oracle_va": {**oracle_with_noise(fold + "-oracle", test), "rationales": None}}

    for name, predictor in (("plain", oracle_with_noise), ("two_step", two_step)):
        evaluate_rows(rows, "loso", tmp_path / name / "eval", baselines=["majority"], predictor=predictor)
    evaluate_rows(rows[:16], "loso", tmp_path / "half" / "eval", baselines=["majority"], predictor=oracle_with_noise)

    assert main(["compare", str(tmp_path / "plain"), f"ts={tmp_path / 'two_step' / 'eval'}",
                 "--out", str(tmp_path / "cmp.md")]) == 0
    table = (tmp_path / "cmp.md").read_text()
    assert table == capsys.readouterr().out
    body = [line.split(" | ")[:2] for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert body[1:] == [["| plain", "model"], ["| ts", "model"], ["| ts", "model-oracle-va"], ["| plain", "majority"]]
    plain = json.loads((tmp_path / "plain" / "eval" / "metrics.json").read_text())["systems"]["model"]
    ua = plain["summary"]["ua"]
    assert f"| plain | model | {100 * ua['mean']:.1f} ± {100 * ua['std']:.1f} |" in table
    assert f"| {100 * plain['pooled']['rationales']['pass_rate']:.1f} | 0.250 |" in table
    assert "| rationale pass % | clip-specific grounding |" in table

    assert "CCC dominance" not in table

    def vad(fold, test):  # a VAD head: dominance gets its own column
        return {**oracle_with_noise(fold, test), "dominance": [r["arousal"] for r in test]}

    vad_rows = [{**r, "dominance": r["arousal"]} for r in rows]
    evaluate_rows(vad_rows, "loso", tmp_path / "vad" / "eval", baselines=["majority"], predictor=vad)
    assert main(["compare", str(tmp_path / "vad")]) == 0
    vad_table = capsys.readouterr().out
    assert "| CCC valence | CCC arousal | CCC dominance |" in vad_table
    assert "| 1.000 |" in vad_table  # dominance predicted as the gold values

    assert main(["compare", str(tmp_path / "plain"), str(tmp_path / "half")]) == 2
    assert "not scored on the same folds and test rows" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "plain"), str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no metrics.json" in capsys.readouterr().err
