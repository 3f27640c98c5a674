import json
import shutil

import numpy as np
import soundfile as sf
import torch

from reasoning.cli import main
from reasoning.explain import Explainer


def test_explain_a_folder_as_json(trained, tmp_path, capsys):
    trainer, rows = trained
    folder = tmp_path / "clips"
    folder.mkdir()
    for r in rows[:3]:
        shutil.copy(r["audio"], folder)
    assert main(["explain", str(folder), "--checkpoint", str(trainer.output_dir), "--json", "--top-k", "2"]) == 0
    printed = capsys.readouterr()
    preds = json.loads(printed.out)  # stdout holds the JSON only
    assert len(preds) == 3
    assert "explain" in printed.err and "1/1" in printed.err  # progress on stderr, no terminal needed
    for p in preds:
        assert set(p) >= {"clip", "duration", "emotion", "probabilities", "top_k", "valence", "arousal", "rationale"}
        assert list(p["probabilities"]) == ["neutral", "happy", "angry", "sad"]
        assert abs(sum(p["probabilities"].values()) - 1) < 1e-3
        assert p["emotion"] == p["top_k"][0][0] and len(p["top_k"]) == 2
        assert p["top_k"][0][1] >= p["top_k"][1][1]
        assert -1 <= p["valence"] <= 1 and -1 <= p["arousal"] <= 1
        assert isinstance(p["rationale"], str)
        assert p["duration"] == round(sf.info(p["clip"]).frames / sf.info(p["clip"]).samplerate, 3)


def test_explain_summary_and_several_files(trained, capsys):
    trainer, rows = trained
    paths = [r["audio"] for r in rows[:2]]
    assert main(["explain", *paths, "--checkpoint", str(trainer.output_dir), "--no-rationale"]) == 0
    out = capsys.readouterr().out
    assert out.count("emotion ") == 2 and "valence" in out and "rationale" not in out


def test_explain_bad_input_names_the_file(trained, tmp_path, capsys):
    trainer, _ = trained
    assert main(["explain", str(tmp_path / "missing.wav"), "--checkpoint", str(trainer.output_dir)]) == 2
    assert "missing.wav: no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....not really a wave file")
    assert main(["explain", str(bad), "--checkpoint", str(trainer.output_dir)]) == 2
    assert "bad.wav" in capsys.readouterr().err
    sf.write(tmp_path / "ok.wav", np.zeros(1600, np.float32), 16000)
    assert main(["explain", str(tmp_path / "ok.wav"), "--checkpoint", str(tmp_path)]) == 2
    assert "no whole checkpoint here" in capsys.readouterr().err


def test_stereo_48k_clip_is_explained(trained, tmp_path, capsys):
    trainer, rows = trained
    x, sr = sf.read(rows[0]["audio"])
    from reasoning.audio import resample

    stereo = np.stack([resample(x, sr, 48000)] * 2, 1)
    sf.write(tmp_path / "st48.wav", stereo, 48000)
    assert main(["explain", str(tmp_path / "st48.wav"), "--checkpoint", str(trainer.output_dir), "--json"]) == 0
    (pred,) = json.loads(capsys.readouterr().out)
    assert abs(pred["duration"] - len(x) / sr) < 0.01


def test_silent_and_very_short_clips_are_explained(trained, tmp_path, capsys):
    trainer, _ = trained
    sf.write(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000)
    sf.write(tmp_path / "blip.wav", np.random.default_rng(0).normal(0, 0.1, 800).astype(np.float32), 16000)
    assert main(["explain", str(tmp_path / "silent.wav"), str(tmp_path / "blip.wav"),
                 "--checkpoint", str(trainer.output_dir), "--json", "--no-rationale"]) == 0
    preds = json.loads(capsys.readouterr().out)
    assert [p["duration"] for p in preds] == [1.0, 0.05]
    assert all(np.isfinite(list(p["probabilities"].values())).all() for p in preds)


def test_batches_of_similar_duration_return_in_the_given_order(trained):
    from reasoning.audio import duration
    from reasoning.explain import Explainer

    trainer, rows = trained
    rows = sorted(rows, key=duration, reverse=True)  # longest first: the batches reorder them
    explainer = Explainer(trainer.output_dir, batch_size=3, max_new_tokens=4)
    seen, predict_batch = [], explainer.predict_batch
    explainer.predict_batch = lambda chunk, *a: seen.append([duration(r) for r in chunk]) or predict_batch(chunk, *a)
    batched = explainer.predict(rows, progress=False)
    assert sum(seen, []) == sorted(map(duration, rows)) and len(seen) == 3
    explainer.batch_size = 1
    single = explainer.predict(rows, progress=False)
    assert [p["id"] for p in batched] == [r["id"] for r in rows] == [p["id"] for p in single]
    for b, s in zip(batched, single):
        assert b["duration"] == s["duration"]
        # alone or in a padded batch, every encoder reads the same frames of a clip
        np.testing.assert_allclose(list(b["probabilities"].values()), list(s["probabilities"].values()), atol=1e-4)
        np.testing.assert_allclose([b["valence"], b["arousal"]], [s["valence"], s["arousal"]], atol=1e-4)


def test_one_unreadable_clip_is_skipped_and_the_others_are_explained(trained, tmp_path, capsys):
    trainer, rows = trained
    folder = tmp_path / "clips"
    folder.mkdir()
    shutil.copy(rows[0]["audio"], folder / "a_good.wav")
    (folder / "b_bad.wav").write_bytes(b"RIFF....not really a wave file")
    shutil.copy(rows[1]["audio"], folder / "c_good.wav")
    assert main(["explain", str(folder), "--checkpoint", str(trainer.output_dir), "--json", "--no-rationale"]) == 1
    captured = capsys.readouterr()
    assert [p["id"] for p in json.loads(captured.out)] == ["a_good", "c_good"]
    assert "skipped" in captured.err and "b_bad.wav" in captured.err


def test_clips_are_checked_before_the_model_is_loaded(tmp_path, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....not really a wave file")
    # The checkpoint does not exist either: the clip's error comes first, without loading anything.
    assert main(["explain", str(bad), "--checkpoint", str(tmp_path / "no_run")]) == 2
    err = capsys.readouterr().err
    assert "bad.wav" in err and "no checkpoint" not in err


def test_device_flag_defaults_to_the_gpu_when_there_is_one_and_refuses_a_missing_one(trained, tmp_path, capsys,
                                                                                 monkeypatch):
    from reasoning.training.checkpoint import resolve_device

    trainer, _ = trained
    sf.write(tmp_path / "ok.wav", np.zeros(1600, np.float32), 16000)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert str(resolve_device(None)) == "cpu"
    for command in (["explain", str(tmp_path / "ok.wav"), "--checkpoint", str(trainer.output_dir)],
                    ["eval", "--manifest", str(tmp_path / "m.jsonl"), "--protocol", "loso", "--out",
                     str(tmp_path / "e"), "--checkpoint", str(trainer.output_dir)],
                    ["benchmark", str(tmp_path / "r.yaml")]):
        assert main([*command, "--device", "cuda"]) == 2
        assert "--device cuda: no GPU" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert str(resolve_device(None)) == "cuda"
    # explained on the device asked for: every tensor of the model is there
    explainer = Explainer(trainer.output_dir, device="cpu")
    assert {p.device.type for p in explainer.model.parameters()} == {"cpu"}
    assert explainer.predict([{"id": "ok", "audio": str(tmp_path / "ok.wav")}], rationale=False)[0]["emotion"]


def test_the_trained_fixture_is_a_copy_no_module_can_change(trained, trained_once):
    """A test that edits the run folder, the recipe or the rows must not change what other
    modules' tests see (the session fixture was shared and could be mutated)."""
    (trainer, rows), (original, original_rows) = trained, trained_once
    rows[0]["audio"] = "elsewhere.wav"
    trainer.recipe.train.keep_last = 99
    (trainer.output_dir / "checkpoint-000004" / "junk").write_text("x")
    assert original_rows[0]["audio"] != "elsewhere.wav"
    assert original.recipe.train.keep_last != 99
    assert not (original.output_dir / "checkpoint-000004" / "junk").exists()
    rows[0]["audio"] = original_rows[0]["audio"]  # the module's later tests read this copy
    (trainer.output_dir / "checkpoint-000004" / "junk").unlink()
    trainer.recipe.train.keep_last = original.recipe.train.keep_last


def test_load_for_inference_puts_every_parameter_and_buffer_on_the_device(trained):
    """The model is built on the CPU; every part (encoders, projectors, heads, LLM) must
    follow ``device``. The meta device stands in for a GPU here: nothing is left behind."""
    from reasoning.training.checkpoint import load_for_inference

    trainer, _ = trained
    model, *_ = load_for_inference(trainer.output_dir, device="meta")
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    assert {t.device.type for t in tensors.values()} == {"meta"}, \
        sorted(n for n, t in tensors.items() if t.device.type != "meta")[:5]
