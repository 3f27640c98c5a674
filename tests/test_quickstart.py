import json

import pytest

from reasoning.cli import main


@pytest.mark.slow
def test_quickstart_trains_evaluates_and_explains(tmp_path, capsys):
    from test_pretrained import fetched

    fetched("whisper-tiny.en"), fetched("smollm2-135m-instruct")
    out = tmp_path / "qs"
    assert main(["quickstart", "--out", str(out), "train.epochs=2"]) == 0
    printed = capsys.readouterr().out
    for stage in ("1/4 evidence", "2/4 train", "3/4 evaluate", "4/4 explain"):
        assert stage in printed
    assert "48/48 template rationales pass the verifier" in printed
    summary = json.loads((out / "quickstart.json").read_text())
    trained_on = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert all(r["rationale"]["writer"] == "template" and r["evidence"]["values"] for r in trained_on)
    assert set(summary["loss_curve"]) == {"emotion", "va", "rationale"}
    # The VA head learns inside the emotion batches (heads.va_in_emotion); over 2 epochs its
    # CCC + MSE on 8 clips is noise (1.49 -> 1.90 in one run; 1.50 -> 1.36 over the full 5).
    for task in ("emotion", "rationale"):
        first, last = summary["loss_curve"][task]
        assert last < first, task
    assert summary["eval"]["clips"] == 12 and summary["eval"]["rationale_pass"] is not None
    assert len(summary["explain"]) == 2
    # the evaluation writes what `emoreason eval` writes, into the run folder (as the README says)
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["systems"]["model"]["pooled"]["ua"] == summary["eval"]["UA"]
    assert set(metrics["systems"]) == {"model", "majority"}
    assert (out / "eval" / "report.md").is_file() and list((out / "eval").rglob("*.png"))
    for p in summary["explain"]:  # the real LM writes words, not fragments of tokens
        assert p["rationale"] and len(p["rationale"].split()) >= 3


def test_the_loss_curve_follows_the_va_head_into_emotion_batches():
    from reasoning.quickstart import loss_curve

    history = [{"task": "emotion", "loss": 3.0 - i, "lm": 1.0, "va": 1.0 - i / 10} for i in range(3)] + \
              [{"task": "rationale", "loss": 2.0, "lm": 2.0}]
    curve = loss_curve(history, n=1)
    assert curve == {"emotion": (3.0, 1.0), "va": (1.0, 0.8), "rationale": (2.0, 2.0)}
