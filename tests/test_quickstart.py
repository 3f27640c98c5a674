import json

from reasoning.cli import main


def test_quickstart_trains_evaluates_and_explains(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "--out", str(out), "train.epochs=3"]) == 0
    printed = capsys.readouterr().out
    assert "1/3 train" in printed and "2/3 evaluate" in printed and "3/3 explain" in printed
    summary = json.loads((out / "quickstart.json").read_text())
    assert set(summary["loss_curve"]) == {"asr", "emotion", "va", "rationale"}
    for task, (first, last) in summary["loss_curve"].items():
        assert last < first, task
    assert summary["eval"]["clips"] == 12
    assert len(summary["explain"]) == 2 and all(p["rationale"] is not None for p in summary["explain"])
