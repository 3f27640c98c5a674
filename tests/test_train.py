import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from reasoning import checkpoint as ckpt_mod
from reasoning.checkpoint import list_checkpoints, load_for_inference
from reasoning.config import load_recipe
from reasoning.explain import Explainer
from reasoning.train import TrainRecipe

from conftest import ROOT, launch_two_processes, tiny_recipe_tree


def make_trainer(tmp_path, manifest, resume=False, **sections):
    recipe = load_recipe(tree=tiny_recipe_tree(tmp_path / "run", manifest, **sections))
    trainer = TrainRecipe(recipe, resume=resume)
    trainer.setup()
    return trainer


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def changed(before, model):
    return {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}


def test_trainable_parameters_change_and_frozen_ones_do_not(tmp_path, small_manifest):
    trainer = make_trainer(tmp_path, small_manifest, train={"max_steps": 8, "lr": 1e-2})
    model = trainer.unwrapped
    before = snapshot(model)
    trainer.train()
    moved = changed(before, model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable - moved == set(), "every trainable parameter changed"
    assert moved <= trainable, "no frozen parameter changed"
    assert any("lora_A" in n for n in moved) and any(n.startswith("va_head") for n in moved)
    assert any(n.startswith("speech_encoder.encoder.layers") for n in before) and \
        not any(n.startswith("speech_encoder.encoder.layers") for n in moved)


def test_each_phase_trains_only_its_parts(tmp_path, small_manifest):
    phases = [{"tasks": ["asr"], "train": ["speech"]},
              {"tasks": ["emotion", "va"], "train": ["paralinguistic", "heads"]}]
    trainer = make_trainer(tmp_path, small_manifest, data={"schedule": "phased", "phases": phases},
                           train={"epochs": 3, "lr": 1e-2})
    model = trainer.unwrapped
    part_of = {n: model.part_of(n) for n, p in model.named_parameters() if p.requires_grad}
    expected = [{"speech"}, {"paralinguistic", "heads"}, {"speech", "paralinguistic", "llm", "heads"}]
    for epoch, parts in enumerate(expected):
        before = snapshot(model)
        trainer.train_epoch(epoch)
        moved = changed(before, model)
        assert {part_of[n] for n in moved} == parts, f"epoch {epoch}"
        # every trainable parameter of the phase's parts moved (the gender head only
        # sees emotion/va batches, so it cannot move in an ASR-only phase)
        assert {n for n, p in part_of.items() if p in parts} - moved == set()


def test_resumed_run_reproduces_the_uninterrupted_losses(tmp_path, small_manifest):
    full = make_trainer(tmp_path / "a", small_manifest,
                        train={"epochs": 2, "save_every": 3, "keep_last": 0, "lr": 1e-2})
    reference = full.train()
    assert len(reference) == 16
    ckpt = full.output_dir / "checkpoint-000003"
    assert ckpt.is_dir()

    # A second run folder holding only what the first had written at step 3.
    resumed_dir = tmp_path / "b" / "run"
    resumed_dir.mkdir(parents=True)
    shutil.copytree(ckpt, resumed_dir / ckpt.name)
    tree = tiny_recipe_tree(resumed_dir, small_manifest, train={"epochs": 2, "save_every": 3, "lr": 1e-2})
    resumed = TrainRecipe(load_recipe(tree=tree), resume=True)
    resumed.setup()
    assert resumed.state["step"] == 3
    tail = resumed.train()
    assert [h["step"] for h in tail] == list(range(4, 17))
    for want, got in zip(reference[3:], tail):
        assert want["task"] == got["task"]
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5, abs=1e-6)


def test_reloaded_checkpoint_explains_identically(trained):
    trainer, rows = trained
    explainer = Explainer(trainer.output_dir)
    reloaded = explainer.predict(rows[:3], progress=False)
    explainer.model = trainer.unwrapped.eval()  # the model that was trained, still in memory
    in_memory = explainer.predict(rows[:3], progress=False)
    assert reloaded == in_memory
    assert Explainer(trainer.output_dir).predict(rows[:3], progress=False) == reloaded


def test_adapter_loads_with_peft(trained):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    trainer, _ = trained
    ckpt = list_checkpoints(trainer.output_dir)[-1]
    base = AutoModelForCausalLM.from_pretrained(trainer.recipe.model.llm.path)
    peft_model = PeftModel.from_pretrained(base, ckpt / ckpt_mod.ADAPTER_DIR)
    ours = {k: v for k, v in trainer.unwrapped.llm.state_dict().items() if "lora_" in k}
    theirs = {k: v for k, v in peft_model.state_dict().items() if "lora_" in k}
    assert ours.keys() == theirs.keys() and ours
    for k in ours:
        torch.testing.assert_close(ours[k], theirs[k])
    # nothing but tensors in the checkpoint: every file loads without unpickling code
    for f in ckpt.iterdir():
        if f.suffix == ".pt":
            torch.load(f, weights_only=True)
        elif f.suffix == ".safetensors":
            load_file(f)


def test_a_crash_while_saving_keeps_the_previous_checkpoint(trained, monkeypatch):
    trainer, rows = trained
    before = list_checkpoints(trainer.output_dir)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(ckpt_mod, "save_file", boom)
    monkeypatch.setitem(trainer.state, "step", trainer.state["step"] + 1)  # `trained` is shared: undone below
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint()
    monkeypatch.undo()
    assert list_checkpoints(trainer.output_dir) == before
    *_, loaded = load_for_inference(trainer.output_dir)  # the last whole checkpoint still loads
    assert loaded == before[-1]


def train_on_two_processes(tmp_path, tree, timeout=600):
    """Train ``tree`` under `accelerate launch` on two CPU processes (tests/ddp_train.py);
    returns each rank's final and rank 0's initial trainable parameters."""
    import yaml

    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(tree))
    launch_two_processes([str(ROOT / "tests" / "ddp_train.py"), str(recipe_path), str(tmp_path)], timeout)
    r0, r1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert r0.keys() == r1.keys() and r0
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    init = load_file(tmp_path / "init0.safetensors")
    assert any(not torch.equal(r0[k], init[k]) for k in r0), "the run trained"
    return r0, r1, init


@pytest.mark.slow
def test_two_cpu_processes_end_with_identical_parameters(tmp_path, small_manifest):
    tree = tiny_recipe_tree(tmp_path / "run", small_manifest, train={"max_steps": 4, "lr": 1e-2})
    train_on_two_processes(tmp_path, tree)
    meta = json.loads((tmp_path / "world.json").read_text())
    assert meta == {"world_size": 2, "rows_per_rank": [4, 4]}  # data.batch_size per process


@pytest.mark.slow
def test_two_cpu_processes_agree_when_metadata_is_known_for_some_clips_only(tmp_path, small_manifest):
    """One known gender, votes and VA on some clips only: the ranks' shards differ in what
    they know, and every rank must still log the same losses (one collective per key)."""
    rows = [json.loads(line) for line in small_manifest.read_text().splitlines()]
    for i, r in enumerate(rows):
        r["gender"] = r["gender"] if i == 0 else None
        if i % 3 == 0:
            r["emotion_votes"] = {r["emotion"]: 2, "neutral": 1}
        if i % 2:
            r.pop("valence")
    manifest = tmp_path / "mixed.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tree = tiny_recipe_tree(tmp_path / "run", manifest, train={"max_steps": 4, "lr": 1e-2},
                            data={"tasks": {"emotion": 1.0, "va": 1.0}, "batch_size": 4},
                            heads={"emotion_loss": "soft", "va_in_emotion": True})
    train_on_two_processes(tmp_path, tree, timeout=240)


def test_projector_lr_sets_the_rate_of_the_parts_trained_from_scratch(tmp_path, small_manifest):
    trainer = make_trainer(tmp_path, small_manifest, train={"lr": 1e-4, "projector_lr": 5e-3, "warmup_steps": 0,
                                                            "lr_schedule": "constant"})
    model = trainer.unwrapped
    group_of = {id(p): g["lr"] for g in trainer.optimizer.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert group_of[id(p)] == (1e-4 if model.part_of(name) == "llm" else 5e-3), name


def test_training_again_into_a_finished_run_folder_is_refused(tmp_path, small_manifest):
    from reasoning.errors import UserError

    make_trainer(tmp_path, small_manifest, train={"max_steps": 1}).train()
    with pytest.raises(UserError, match=r"already holds a run \(1 checkpoint\(s\).*--resume"):
        make_trainer(tmp_path, small_manifest, train={"max_steps": 1})


def test_resume_takes_no_value_so_an_override_after_it_stays_an_override():
    import argparse

    from reasoning import train

    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    args = parser.parse_args(["--config", "r.yaml", "--resume", "train.epochs=2"])
    assert args.resume is True and args.overrides == ["train.epochs=2"] and args.resume_from is None
    args = parser.parse_args(["--config", "r.yaml", "--resume-from", "runs/x/checkpoint-000004"])
    assert args.resume_from == "runs/x/checkpoint-000004"


@pytest.mark.parametrize("kind, overrides, resume, message", [
    ("DEEPSPEED", {"grad_accum": 2}, False, "train.grad_accum=1"),
    ("DEEPSPEED", {}, True, "resum"),
    ("FSDP", {}, True, "resum"),
    ("FSDP", {"projector_lr": 1e-3}, False, "projector_lr"),
])
def test_launch_traps_are_refused_before_anything_is_built(tmp_path, kind, overrides, resume, message):
    from accelerate.utils import DistributedType

    from reasoning.errors import RecipeError
    from reasoning.train import check_launch

    recipe = load_recipe(tree=tiny_recipe_tree(tmp_path, train=overrides))
    with pytest.raises(RecipeError, match=message):
        check_launch(recipe, DistributedType[kind], resume)
    check_launch(recipe, DistributedType.MULTI_CPU, resume)  # DDP takes all of them


def _long_clip_manifest(tmp_path, small_manifest, seconds=40.0):
    import numpy as np
    import soundfile as sf

    rows = [json.loads(line) for line in small_manifest.read_text().splitlines()]
    t = np.arange(int(seconds * 16000)) / 16000
    sf.write(tmp_path / "long.wav", (0.1 * np.sin(2 * np.pi * 180 * t)).astype("float32"), 16000)
    rows[0] = {**rows[0], "id": "long", "audio": str(tmp_path / "long.wav")}
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_40_s_clip_stretched_by_tempo_trains_in_whisper_windows(tmp_path, small_manifest):
    """Clips are no longer cut to 30 s before augmentation (a 30 s cut stretched by 0.9 is
    33 s, past Whisper's positions): long clips are encoded in 30 s windows."""
    manifest = _long_clip_manifest(tmp_path, small_manifest)
    trainer = make_trainer(tmp_path, manifest, train={"max_steps": 2},
                           data={"tasks": {"asr": 1.0, "emotion": 1.0}, "batch_size": 8},
                           augment={"p": 1.0, "tempo": [0.9, 0.9]})
    assert 0 in trainer.schedule.examples["asr"]  # the whole clip, so its transcript still fits
    assert len(trainer.collate.wave(trainer.rows[0], epoch=0)) == pytest.approx(40 / 0.9 * 16000, rel=0.01)
    trainer.train()
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in trainer.history)


def test_with_max_seconds_a_clip_is_cut_after_augmentation_and_leaves_the_asr_task(tmp_path, small_manifest):
    manifest = _long_clip_manifest(tmp_path, small_manifest)
    tree_model = tiny_recipe_tree(tmp_path, manifest)["model"]
    tree_model["speech"]["max_seconds"] = 30.0
    trainer = make_trainer(tmp_path, manifest, model=tree_model, train={"max_steps": 1},
                           data={"tasks": {"asr": 1.0, "emotion": 1.0}, "batch_size": 8},
                           augment={"p": 1.0, "tempo": [0.9, 0.9]})
    assert 0 not in trainer.schedule.examples["asr"]  # its transcript covers 40 s, not 30
    assert 0 in trainer.schedule.examples["emotion"]
    assert len(trainer.collate.wave(trainer.rows[0], epoch=0)) == 30 * 16000
