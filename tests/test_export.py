"""`emoreason export`: a self-contained model folder that predicts like its checkpoint."""

import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from conftest import SAMPLES, TINY, tiny_recipe_tree

from reasoning.training.checkpoint import COMPLETE_FILE, EXPORT_FILE, read_recipe
from reasoning.cli import main
from reasoning.tasks.collate import to_device
from reasoning.errors import UserError
from reasoning.evaluation.evaluate import probe_speech_config
from reasoning.explain import Explainer
from reasoning.export import (
    BASELINE_FILE,
    CARD_NAME,
    export_model,
    find_evaluation,
    training_evidence,
)


@torch.no_grad()
def raw_outputs(explainer: Explainer, rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Unrounded label probabilities (N, L) and VA (N, 2), through the pass predict_batch uses
    for a one-step model without transcripts."""
    ctx = [{} for _ in rows]
    emo = to_device(explainer.collate(rows, "emotion", contexts=ctx), explainer.device)
    audio = explainer.model.encode_audio(emo["waves"], emo["wave_lengths"])
    return explainer._label_probs(emo, ctx, audio, with_va=True)


def compare(checkpoint, export, rows: list[dict]) -> dict:
    """Max abs differences of probabilities and VA, and the two sets of greedy rationales."""
    a, b = Explainer(checkpoint, device="cpu"), Explainer(export, device="cpu")
    assert a.model.llm.dtype == torch.float32
    (pa, va), (pb, vb) = raw_outputs(a, rows), raw_outputs(b, rows)
    ra = [p["rationale"] for p in a.predict(rows, progress=False)]
    rb = [p["rationale"] for p in b.predict(rows, progress=False)]
    return {"probs": float(np.abs(pa - pb).max()), "va": float(np.abs(va - vb).max()),
            "rationales": (ra, rb), "merged_llm": type(b.model.llm).__name__}


def test_merged_export_predicts_like_the_adapter_checkpoint(trained, tmp_path):
    trainer, rows = trained
    out = export_model(trainer.output_dir, tmp_path / "merged", merge=True)
    info = json.loads((out / EXPORT_FILE).read_text())
    assert info["merged"] and not (out / "adapter").exists()
    assert (out / "llm" / "model.safetensors").is_file() and (out / "modules.safetensors").is_file()
    assert "the adapter merged in) |" in (out / CARD_NAME).read_text()
    result = compare(trainer.output_dir, out, rows[:4])
    print(f"merged export vs adapter checkpoint, float32, 4 clips: max |dp| = {result['probs']:.2e}, "
          f"max |dVA| = {result['va']:.2e}")
    assert "Peft" not in result["merged_llm"]  # the merged LLM runs without LoRA layers
    assert result["probs"] < 1e-4 and result["va"] < 1e-4
    ra, rb = result["rationales"]
    assert ra == rb and all(isinstance(t, str) for t in ra)


def test_merge_unties_an_output_layer_that_training_changed(tmp_path):
    """An LLM whose output layer is tied to its embeddings, trained with
    `modules_to_save: [lm_head]`: saved tied, the merged LLM would reload with the untrained
    output layer (the embeddings) and predict otherwise than the adapter."""
    from reasoning.training.config import load_recipe
    from reasoning.training.train import TrainRecipe


    config = json.loads((TINY / "llm.json").read_text())
    config["tie_word_embeddings"] = True
    (tmp_path / "tied.json").write_text(json.dumps(config))
    rows = [json.loads(x) for x in SAMPLES.read_text().splitlines()][:4]
    for r in rows:
        r["audio"] = str(SAMPLES.parent / r["audio"])
    tree = tiny_recipe_tree(tmp_path / "run", SAMPLES, train={"max_steps": 2, "lr": 0.05},
                            data={"tasks": {"emotion": 1.0, "rationale": 1.0}})
    tree["model"]["llm"]["config"] = str(tmp_path / "tied.json")
    trainer = TrainRecipe(load_recipe(tree=tree))
    trainer.setup()
    trainer.train()
    out = export_model(trainer.output_dir, tmp_path / "merged", merge=True)
    assert json.loads((out / "llm" / "config.json").read_text())["tie_word_embeddings"] is False
    result = compare(trainer.output_dir, out, rows)
    assert result["probs"] < 1e-4 and result["va"] < 1e-4
    assert result["rationales"][0] == result["rationales"][1]


def test_adapter_export_is_self_contained_and_explains_like_the_checkpoint(trained, tmp_path, capsys):
    trainer, rows = trained
    export_model(trainer.output_dir, tmp_path / "first")
    moved = shutil.move(str(tmp_path / "first"), str(tmp_path / "elsewhere"))  # a folder can be moved or published
    recipe = read_recipe(tmp_path / "elsewhere")
    for path in (recipe.model.speech.path, recipe.model.paralinguistic.path, recipe.model.llm.path,
                 recipe.model.llm.tokenizer):
        assert path.startswith(moved + "/base/"), path
    saved = yaml.safe_load((tmp_path / "elsewhere" / "recipe.yaml").read_text())["model"]
    assert saved["speech"]["path"] == "base/speech" and saved["llm"]["path"] == "base/llm"
    assert probe_speech_config(None, moved).path == recipe.model.speech.path  # eval's probe reads it too
    clip = rows[0]["audio"]
    outputs = []
    for ckpt in (trainer.output_dir, moved):
        assert main(["explain", clip, "--checkpoint", str(ckpt), "--json"]) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    assert outputs[0] == outputs[1]


def test_model_card_names_data_labels_protocol_and_metrics(trained, tmp_path):
    trainer, rows = trained
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({
        "protocol": {"name": "loso", "description": "leave-one-speaker-out"},
        "systems": {"model": {"pooled": {"n": 8, "ua": 0.625, "wa": 0.5, "macro_f1": 0.4,
                                         "va": {"annotated": {"valence": {"ccc": 0.31}, "arousal": {"ccc": 0.42}}},
                                         "rationales": {"pass_rate": 0.75}},
                              "per_fold": {"speaker-1": {}}},
                    "majority": {"pooled": {"ua": 0.25}}}}))
    out = export_model(trainer.output_dir, tmp_path / "x", metrics=metrics)
    card = (out / CARD_NAME).read_text()
    assert card.startswith("---\n") and "pipeline_tag: audio-classification" in card
    assert "`neutral`, `happy`, `angry`, `sad`" in card
    assert f"{len(rows)} utterances from" in card and "bundled synthesised clips" in card
    assert "Protocol: `loso`" in card and "| UA | 0.625 |" in card and "| CCC arousal (annotated VA) | 0.420 |" in card
    assert "| rationale pass rate | 0.750 |" in card and "majority 0.250" in card
    assert "## Intended use" in card and "Not for decisions about people" in card
    assert "base_model" not in card  # every base was a local folder, copied: no hub id to name
    assert f"| LLM | `{trainer.recipe.model.llm.path}` (float32) |" in card
    without = export_model(trainer.output_dir, tmp_path / "y")
    assert "No evaluation was found" in (without / CARD_NAME).read_text()


def test_evaluation_of_a_benchmark_fold_and_of_a_quickstart_run(tmp_path):
    fold = tmp_path / "bench" / "speaker-03" / "checkpoint-000010"
    fold.mkdir(parents=True)
    (tmp_path / "bench" / "eval").mkdir()
    (tmp_path / "bench" / "eval" / "metrics.json").write_text(json.dumps({
        "protocol": {"name": "loso"},
        "systems": {"model": {"pooled": {"ua": 0.5},
                              "per_fold": {"speaker-03": {"ua": 0.7}, "speaker-08": {"ua": 0.3}}}}}))
    found = find_evaluation(fold)
    assert found["model"]["UA"] == 0.7 and "fold speaker-03" in found["scope"]
    qs = tmp_path / "qs" / "checkpoint-000075"
    qs.mkdir(parents=True)
    (tmp_path / "qs" / "quickstart.json").write_text(json.dumps({"eval": {"clips": 12, "UA": 0.25}}))
    assert find_evaluation(qs)["model"]["UA"] == 0.25
    assert find_evaluation(tmp_path / "none" / "checkpoint-1") is None
    other = tmp_path / "bench" / "speaker-99" / "checkpoint-000010"  # a run the benchmark did not evaluate
    other.mkdir(parents=True)
    assert find_evaluation(other) is None
    (tmp_path / "odd.json").write_text(json.dumps({"rows": 3}))
    with pytest.raises(UserError, match="odd.json: holds neither"):
        find_evaluation(qs, tmp_path / "odd.json")


def test_training_evidence_becomes_the_exports_corpus_baseline(trained, tmp_path):
    from reasoning.evidence import measure_manifest
    from reasoning.manifest import write_manifest

    trainer, rows = trained
    measured, _ = measure_manifest(rows)
    recipe = read_recipe(trainer.output_dir / "checkpoint-000004")
    recipe.data.train_manifest = str(write_manifest(measured, tmp_path / "measured.jsonl"))
    reference, source = training_evidence(tmp_path, recipe)
    assert source == recipe.data.train_manifest and len(reference) == len(rows)
    assert reference[0]["evidence"]["values"] == measured[0]["evidence"]["values"]


def test_bad_export_targets_are_refused(trained, tmp_path, capsys):
    trainer, _ = trained
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    assert main(["export", "--checkpoint", str(trainer.output_dir), "--out", str(full)]) == 2
    err = capsys.readouterr().err
    assert str(full) in err and "not empty" in err and "--force" in err
    assert (full / "keep.txt").read_text() == "mine"
    assert main(["export", "--checkpoint", str(trainer.output_dir), "--out", str(full), "--force"]) == 0
    assert not (full / "keep.txt").exists() and (full / COMPLETE_FILE).is_file()
    capsys.readouterr()
    # --force never deletes the source: an --out that holds the checkpoint is refused
    assert main(["export", "--checkpoint", str(trainer.output_dir), "--out", str(trainer.output_dir.parent),
                 "--force"]) == 2
    assert "overlaps the checkpoint" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(full), "--out", str(tmp_path / "again")]) == 2
    assert "already an export" in capsys.readouterr().err


def test_an_incomplete_export_or_checkpoint_names_the_file(trained, tmp_path, capsys):
    trainer, rows = trained
    out = export_model(trainer.output_dir, tmp_path / "x")
    (out / "modules.safetensors").write_bytes(b"cut")
    assert main(["explain", rows[0]["audio"], "--checkpoint", str(out)]) == 2
    err = capsys.readouterr().err
    assert "modules.safetensors is 3 bytes" in err and "emoreason export" in err and "--force" in err
    ckpt = tmp_path / "checkpoint-000004"
    shutil.copytree(trainer.output_dir / "checkpoint-000004", ckpt)
    (ckpt / "adapter" / "adapter_model.safetensors").unlink()
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "y")]) == 2
    assert "adapter/adapter_model.safetensors is missing" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


def test_push_to_hub_offline_is_refused_before_the_export(trained, tmp_path, capsys):
    trainer, _ = trained
    assert main(["export", "--checkpoint", str(trainer.output_dir), "--out", str(tmp_path / "x"),
                 "--push-to-hub", "me/model"]) == 2
    err = capsys.readouterr().err
    assert "offline" in err and "hf upload me/model" in err
    assert not (tmp_path / "x").exists()


def test_no_baseline_file_without_measured_training_rows(trained, tmp_path):
    trainer, _ = trained  # the fixture's manifest has no evidence
    out = export_model(trainer.output_dir, tmp_path / "x")
    assert not (out / BASELINE_FILE).exists() and json.loads((out / EXPORT_FILE).read_text())["baseline_rows"] == 0
