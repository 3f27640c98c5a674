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
    for task, (first, last) in summary["loss_curve"].items():
        assert last < first, task
    assert summary["eval"]["clips"] == 12 and summary["eval"]["rationale_pass"] is not None
    assert len(summary["explain"]) == 2
    for p in summary["explain"]:  # the real LM writes words, not fragments of tokens
        assert p["rationale"] and len(p["rationale"].split()) >= 3
