"""`emoreason demo`: what the page shows for a clip, computed without a browser
(tests/test_demo_browser.py drives the page itself)."""

import shutil
import socket

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("gradio")

from reasoning.cli import main
from reasoning.demo import (
    CLIPS_HEADERS,
    MODEL_LABEL,
    QUADRANTS,
    DemoModel,
    evidence_rows,
    explain_many,
    explain_one,
    plain,
)
from reasoning.evidence import Z_FEATURES, measure_manifest
from reasoning.manifest import write_manifest


@pytest.fixture(scope="module")
def measured(trained, tmp_path_factory):
    """The fixture's training rows with their evidence measured: the corpus baseline."""
    _, rows = trained
    out, _ = measure_manifest(rows)
    return write_manifest(out, tmp_path_factory.mktemp("demo") / "measured.jsonl"), out


@pytest.fixture(scope="module")
def demo(trained, measured):
    trainer, _ = trained
    return DemoModel(trainer.output_dir, baseline=measured[0], device="cpu")


def test_one_clip_shows_probabilities_va_evidence_and_rationale(demo, trained, measured):
    _, rows = trained
    clip = rows[0]["audio"]
    status, probs, plane, evidence, rationale, claims, transcript = explain_one(demo, clip)
    pred = demo.explainer.predict([{"id": "c", "audio": clip}], progress=False)[0]  # what `explain` says
    assert probs == pred["probabilities"] and list(probs) == ["neutral", "happy", "angry", "sad"]
    assert f"**{pred['emotion']}**" in status
    assert "Baseline: the corpus `samples`, 8 measured clips" in status and "no speaker baseline" in status
    assert f"valence {pred['valence']:+.2f}, arousal {pred['arousal']:+.2f}" in plane
    assert all(name in plane for name in QUADRANTS.values())
    assert plain(pred["rationale"]) in rationale and "Verifier:" in rationale
    # the evidence table: each cue's value, the corpus mean ± sd (the 8 training clips and this
    # one) and the z-score
    table = {row[0].rsplit("(", 1)[1].rstrip(")"): row for row in evidence if "(" in row[0]}
    assert set(Z_FEATURES) <= set(table)
    pool = [r["evidence"]["values"]["f0_mean_st"] for r in measured[1]]
    value = next(r for r in measured[1] if r["audio"] == clip)["evidence"]["values"]["f0_mean_st"]
    pool.append(value)
    mean, sd = np.mean(pool), np.std(pool, ddof=1)
    assert table["f0_mean_st"][1] == f"{value:.2f} st"
    assert table["f0_mean_st"][2] == f"{mean:.2f} ± {sd:.2f} st"
    assert float(table["f0_mean_st"][3]) == pytest.approx((value - mean) / sd, abs=0.006)
    assert transcript == ""  # the tiny recipe does not put a transcript in its prompts
    assert all(c[2] in ("✓ supported", "✗ not supported") and c[3] for c in claims)


def test_each_claim_is_marked_with_the_verifiers_verdict(demo, trained, monkeypatch):
    """A known rationale through the page's path: the stated emotion is checked against the
    model's top label, the cue against the clip's z-score, the quote against the typed
    transcript."""
    _, rows = trained
    real = demo.explainer.predict

    def predict(batch, **kw):
        preds = real(batch, **kw)
        return [{**p, "rationale": f"{p['emotion']}: a loud voice, and 'meeting'"} for p in preds]

    monkeypatch.setattr(demo.explainer, "predict", predict)
    _, probs, _, evidence, rationale, claims, _ = explain_one(demo, rows[0]["audio"], "The meeting is on Tuesday.")
    top = max(probs, key=probs.get)
    by_kind = {c[1]: c for c in claims}
    assert by_kind["emotion"][2] == "✓ supported" and by_kind["emotion"][3] == MODEL_LABEL
    z = float(next(r for r in evidence if r[0].endswith("(loudness)"))[3])
    assert by_kind["cue: loudness"][2] == ("✓ supported" if z >= 0.5 else "✗ not supported")
    assert f"loudness z={z:+.2f}" in by_kind["cue: loudness"][3]
    assert by_kind["quote"][2:] == ["✓ supported", "in the transcript"]
    assert ("Verifier: passed" if z >= 0.5 else "Verifier: not passed") in rationale
    assert f"{top}: a loud voice" in rationale
    words = next(r for r in evidence if r[0] == "emotion words in the transcript")
    assert words[1] == "none"  # the lexical evidence reads the typed transcript


def test_bad_uploads_are_reported_and_the_next_clip_is_explained(demo, trained, tmp_path):
    _, rows = trained
    (tmp_path / "notes.txt").write_text("not a sound")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    sf.write(tmp_path / "long.wav", np.zeros(16000 * 3, np.float32), 16000)
    for name, says in (("notes.txt", "not usable as audio"), ("empty.wav", "not usable as audio")):
        status, *rest = explain_one(demo, str(tmp_path / name))
        assert plain(name) in status and says in status and "Upload a clip with sound" in status
        assert rest[0] is None  # no probabilities
    demo.max_seconds = 2.0
    try:
        status, *_ = explain_one(demo, str(tmp_path / "long.wav"))
    finally:
        demo.max_seconds = 60.0
    assert "long.wav: 3.0 s long" in status and "\\-\\-max-seconds" not in status and "--max-seconds" in status
    status, probs, *_ = explain_one(demo, rows[1]["audio"])
    assert probs is not None and "⚠️" not in status
    sf.write(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000)  # usable, but in no baseline
    status, probs, *_ = explain_one(demo, str(tmp_path / "silent.wav"))
    assert probs is not None and "8 measured clips the model was trained on" in status and "this clip" not in status


def test_several_clips_give_one_table(demo, trained, tmp_path):
    _, rows = trained
    (tmp_path / "notes.txt").write_text("not a sound")
    paths = [rows[0]["audio"], str(tmp_path / "notes.txt"), rows[2]["audio"]]
    status, table = explain_many(demo, paths)
    assert status == "2 of 3 clips explained; 1 could not be used."
    assert [len(r) for r in table] == [len(CLIPS_HEADERS)] * 3
    assert table[1][0] == "notes.txt" and "not usable as audio" in table[1][-1]
    single = explain_one(demo, rows[2]["audio"])
    emotion = max(single[1], key=single[1].get)
    assert table[2][2] == emotion and table[2][3] == f"{single[1][emotion]:.3f}" and table[2][-1] == ""


def test_without_measured_training_rows_the_page_says_there_is_no_baseline(trained):
    trainer, rows = trained  # the fixture's manifest has no evidence
    model = DemoModel(trainer.output_dir, device="cpu")
    status, *_, evidence, _, _, _ = explain_one(model, rows[0]["audio"])
    assert "No baseline: the training manifest" in status and "has no measured evidence" in status
    assert "--baseline MANIFEST" in status
    assert all(row[3] == "n/a" for row in evidence if "(" in row[0])


def test_the_models_own_transcript_is_shown_and_measured(trained, measured):
    trainer, rows = trained
    model = DemoModel(trainer.output_dir, baseline=measured[0], device="cpu")
    model.explainer.prompt.transcript, model.asr = "asr", True  # the tiny recipe trains the asr task
    result = model.analyse([rows[0]["audio"]])[0]
    assert result["transcript"] == result["prediction"]["transcript"]
    *_, transcript = explain_one(model, rows[0]["audio"])
    assert transcript == result["transcript"]
    assert result["evidence"]["lexical"] is not None or not transcript.strip()


def test_demo_serves_an_export(trained, measured, tmp_path):
    from reasoning.export import export_model

    trainer, rows = trained
    out = export_model(trainer.output_dir, tmp_path / "merged", merge=True)
    a = DemoModel(trainer.output_dir, baseline=measured[0], device="cpu")
    b = DemoModel(out, baseline=measured[0], device="cpu")
    pa, pb = explain_one(a, rows[0]["audio"])[1], explain_one(b, rows[0]["audio"])[1]
    assert max(abs(pa[k] - pb[k]) for k in pa) <= 1.01e-4  # 4-decimal rounding of equal scores


def _listening() -> tuple[socket.socket, int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s, s.getsockname()[1]


def test_a_port_in_use_names_the_port_and_the_flag(tmp_path, capsys):
    s, port = _listening()
    with s:
        assert main(["demo", "--checkpoint", str(tmp_path), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is in use" in err and "--port" in err


def test_an_incomplete_checkpoint_is_refused_before_serving(trained, tmp_path, capsys):
    trainer, _ = trained
    ckpt = tmp_path / "checkpoint-000004"
    shutil.copytree(trainer.output_dir / "checkpoint-000004", ckpt)
    (ckpt / "modules.safetensors").write_bytes(b"cut")
    s, port = _listening()
    s.close()  # a free port
    assert main(["demo", "--checkpoint", str(ckpt), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert "modules.safetensors is 3 bytes" in err and "--checkpoint" in err


def test_evidence_rows_name_the_cue_each_feature_is_cited_by():
    ev = {"values": dict.fromkeys(Z_FEATURES, 1.0), "z": dict.fromkeys(Z_FEATURES), "flags": ["unvoiced"],
          "lexical": {"hits": [{"word": "happy", "category": "joy", "negated": True}]}, "error": None}
    rows = evidence_rows(ev, {})
    names = [r[0] for r in rows]
    assert "mean pitch (f0_mean_st)" in names and "loudness (loudness)" in names
    assert ["emotion words in the transcript", "not happy (joy)", "", ""] in rows
    assert ["flag: unvoiced", "yes", "", ""] in rows
