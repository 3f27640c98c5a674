import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from reasoning.training import checkpoint as ckpt_mod
from reasoning.training.checkpoint import list_checkpoints, load_for_inference
from reasoning.training.config import load_recipe
from reasoning.explain import Explainer
from reasoning.training.train import TrainRecipe

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


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_run_reproduces_the_uninterrupted_losses(tmp_path, small_manifest, workers):
    """With LoRA dropout on, as in the GPU recipes: the draws after the resume must be the
    uninterrupted run's (the checkpoint's random state). With DataLoader workers that
    augment the clips too: the batches a worker prepares must not depend on when it started."""
    sections = dict(lora={"dropout": 0.3}, data={"num_workers": workers, "prefetch_factor": 2},
                    augment={"p": 0.5, "gain_db": [-6, 6]} if workers else {})
    full = make_trainer(tmp_path / "a", small_manifest,
                        train={"epochs": 2, "save_every": 3, "keep_last": 0, "lr": 1e-2}, **sections)
    reference = full.train()
    assert len(reference) == 16
    ckpt = full.output_dir / "checkpoint-000003"
    assert ckpt.is_dir()

    # A second run folder holding only what the first had written at step 3.
    resumed_dir = tmp_path / "b" / "run"
    resumed_dir.mkdir(parents=True)
    shutil.copytree(ckpt, resumed_dir / ckpt.name)
    tree = tiny_recipe_tree(resumed_dir, small_manifest, train={"epochs": 2, "save_every": 3, "lr": 1e-2},
                            **sections)
    torch.manual_seed(1234)  # whatever state the process is in, the checkpoint's is restored
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


@pytest.mark.parametrize("emotion_loss", ["lm", "soft", "both"])
def test_the_losses_a_batch_reports_depend_on_its_task_only(trained, emotion_loss):
    """The loop reduces each reported loss over the processes, one collective per key: a
    process whose clips have no known gender, no votes or no VA must report the same keys
    as one whose clips have them all, or the processes hang."""
    from reasoning.tasks.collate import to_device

    trainer, rows = trained
    model = trainer.unwrapped
    known = [dict(r, gender="f", emotion_votes={r["emotion"]: 2, "neutral": 1}, valence=0.1, arousal=0.2)
             for r in rows[:2]]
    unknown = [dict(r, gender=None, emotion_votes=None, valence=None, arousal=None) for r in rows[:2]]
    saved = model.emotion_loss, model.va_in_emotion
    model.emotion_loss, model.va_in_emotion = emotion_loss, True
    try:
        with torch.no_grad():
            for task in ("emotion", "va"):
                keys = [list(model(to_device(trainer.collate(batch, task), trainer.accelerator.device)))
                        for batch in (known, unknown)]
                assert keys[0] == keys[1] and "gender" in keys[0], task
    finally:
        model.emotion_loss, model.va_in_emotion = saved


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
    """With a DataLoader worker on each process: every planned batch is split between the
    two ranks, each taking its own half."""
    tree = tiny_recipe_tree(tmp_path / "run", small_manifest, train={"max_steps": 4, "lr": 1e-2},
                            data={"num_workers": 1})
    train_on_two_processes(tmp_path, tree)
    meta = json.loads((tmp_path / "world.json").read_text())
    assert (meta["world_size"], meta["rows_per_rank"]) == (2, [4, 4])  # data.batch_size per process
    assert meta["wrapper"] == "DistributedDataParallel"
    ids = [json.loads((tmp_path / f"ids{r}.json").read_text()) for r in (0, 1)]
    assert len(ids[0]) == len(ids[1]) == len(meta["plan_ids"]) > 1
    for planned, a, b in zip(meta["plan_ids"], *ids):
        assert len(a) == len(b) == 4 and not set(a) & set(b) and sorted(a + b) == sorted(planned)


@pytest.mark.slow
def test_qlora_with_checkpointing_trains_under_ddp_on_two_processes(tmp_path, small_manifest):
    """recipes/large_qlora.yaml's setting (4-bit LLM, gradient checkpointing, LoRA dropout,
    emotion_loss both) under DDP: reentrant checkpointing failed the first backward with
    'Expected to mark a variable ready only once'. bitsandbytes runs NF4 on the CPU."""
    tree = tiny_recipe_tree(tmp_path / "run", small_manifest, train={"max_steps": 4, "lr": 1e-2},
                            lora={"dropout": 0.05}, heads={"emotion_loss": "both"})
    tree["model"]["llm"].update(quantization="4bit", gradient_checkpointing=True)
    train_on_two_processes(tmp_path, tree, timeout=300)
    meta = json.loads((tmp_path / "world.json").read_text())
    assert meta["wrapper"] == "DistributedDataParallel" and meta["world_size"] == 2
    assert meta["weights_4bit"] == 2 * 7 and meta["checkpointing"]  # two layers, seven projections
    history = [json.loads(x) for x in (tmp_path / "run" / "losses.jsonl").read_text().splitlines()]
    assert {h["task"] for h in history} == {"asr", "emotion", "va", "rationale"}


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


@pytest.mark.slow
def test_resume_on_two_processes_reproduces_the_uninterrupted_losses(tmp_path, small_manifest):
    """Each process resumes with its own random state (LoRA dropout draws), not the main
    process's on both."""
    import yaml

    def launch(run_dir, resume=False):
        tree = tiny_recipe_tree(run_dir, small_manifest, lora={"dropout": 0.3},
                                train={"epochs": 2, "max_steps": 6, "save_every": 3, "lr": 1e-2})
        recipe_path = run_dir.parent / "recipe.yaml"
        recipe_path.write_text(yaml.safe_dump(tree))
        launch_two_processes([str(ROOT / "tests" / "ddp_train.py"), str(recipe_path), str(run_dir.parent),
                              *(["resume"] if resume else [])], timeout=300)
        return [json.loads(x) for x in (run_dir / "losses.jsonl").read_text().splitlines()]

    (tmp_path / "a").mkdir()
    reference = launch(tmp_path / "a" / "run")
    assert [h["step"] for h in reference] == list(range(1, 7))
    ckpt = tmp_path / "a" / "run" / "checkpoint-000003"
    rng = load_file(ckpt / ckpt_mod.RNG_FILE)
    assert set(rng) == {"torch.0", "torch.1"}
    assert not torch.equal(rng["torch.0"], rng["torch.1"])  # the processes' states differ by then
    resumed_dir = tmp_path / "b" / "run"
    resumed_dir.mkdir(parents=True)
    shutil.copytree(ckpt, resumed_dir / ckpt.name)
    tail = launch(resumed_dir, resume=True)
    assert [h["step"] for h in tail] == [4, 5, 6]
    for want, got in zip(reference[3:], tail):
        assert want["task"] == got["task"]
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5, abs=1e-6)


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
    with pytest.raises(UserError, match=r"already holds a run \(1 checkpoint\(s\).*--resume.*--force"):
        make_trainer(tmp_path, small_manifest, train={"max_steps": 1})


def test_force_starts_the_run_folder_afresh(tmp_path, small_manifest):
    """`emoreason train --force` into a finished run: the old checkpoints and loss log go, and
    the folder holds the new run only (not two runs' losses appended)."""
    make_trainer(tmp_path, small_manifest, train={"max_steps": 2}).train()
    recipe = load_recipe(tree=tiny_recipe_tree(tmp_path / "run", small_manifest, train={"max_steps": 1}))
    trainer = TrainRecipe(recipe, force=True)
    trainer.setup()
    history = trainer.train()
    run = tmp_path / "run"
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-000001"]
    lines = [json.loads(x) for x in (run / "losses.jsonl").read_text().splitlines()]
    assert lines == history and {h["step"] for h in lines} == {1}


def test_log_with_tensorboard_writes_each_logged_loss(tmp_path, small_manifest):
    """train.log_with [tensorboard]: accelerate's tracker writes the per-task mean losses and
    the learning rate at the steps the log line reports them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = make_trainer(tmp_path, small_manifest,
                           train={"max_steps": 2, "log_every": 1, "log_with": ["tensorboard"]})
    history = trainer.train()
    trainer.cleanup(end_process_group=False)
    logs = tmp_path / "run" / "trackers"
    events = EventAccumulator(str(next(p.parent for p in logs.rglob("events.out.tfevents.*")))).Reload()
    tags = events.Tags()["scalars"]
    assert "lr" in tags and any(t.startswith("loss/") for t in tags)
    for record in history:
        (value,) = [e.value for e in events.Scalars(f"loss/{record['task']}") if e.step == record["step"]]
        assert value == pytest.approx(record["loss"], rel=1e-6)


def test_resume_takes_no_value_so_an_override_after_it_stays_an_override():
    import argparse

    from reasoning.training import train

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
    ("DEEPSPEED", {"max_grad_norm": 0.5}, False, r"gradient_clipping\), not at train.max_grad_norm \(0.5\)"),
])
def test_launch_traps_are_refused_before_anything_is_built(tmp_path, kind, overrides, resume, message):
    from accelerate.utils import DistributedType

    from reasoning.errors import RecipeError
    from reasoning.training.train import check_launch

    recipe = load_recipe(tree=tiny_recipe_tree(tmp_path, train=overrides))
    deepspeed = {"gradient_clipping": 1.0, "gradient_accumulation_steps": 1}  # recipes/accelerate/deepspeed_*
    with pytest.raises(RecipeError, match=message):
        check_launch(recipe, DistributedType[kind], resume, deepspeed)
    check_launch(recipe, DistributedType.MULTI_CPU, resume)  # DDP takes all of them


@pytest.mark.parametrize("kind, resume, overrides, message", [
    ("FSDP", True, [], "resuming under FSDP is not supported"),
    ("DEEPSPEED", True, ["train.grad_accum=1"], "resuming under DEEPSPEED is not supported"),
    ("DEEPSPEED", False, [], "train.grad_accum is 2, but DeepSpeed accumulates by itself"),
])
def test_a_gpu_recipe_is_refused_under_a_sharded_launch_before_anything_is_built(tmp_path, monkeypatch, kind,
                                                                                 resume, overrides, message):
    """The shipped recipe as the launcher would start it: the refusal comes from setup()
    before a model is built or a file written, not after a step."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    from reasoning.training import train
    from reasoning.errors import RecipeError

    def never(*args, **kwargs):
        raise AssertionError("set-up went past the launch checks")

    monkeypatch.setattr(Accelerator, "distributed_type", property(lambda self: DistributedType[kind]))
    monkeypatch.setattr(train, "build_model", never)
    monkeypatch.setattr(train, "materialize", never)
    run = tmp_path / "run"
    # bf16 on a CPU would fix this process's accelerator state for the other tests
    recipe = load_recipe(ROOT / "recipes" / "small_lora.yaml",
                         [f"train.output_dir={run}", "train.mixed_precision='no'", *overrides])
    trainer = TrainRecipe(recipe, resume=resume)
    with pytest.raises(RecipeError, match=message):
        trainer.setup()
    assert not run.exists()


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


def test_with_workers_opensmile_runs_in_them_and_trains_alike(tmp_path, small_manifest):
    """openSMILE runs on the CPU: with DataLoader workers it runs there, not between the
    training steps, and the losses are the same as with none."""
    def run(workers):
        trainer = make_trainer(tmp_path / str(workers), small_manifest, train={"max_steps": 4, "lr": 1e-2},
                               data={"num_workers": workers, "tasks": {"emotion": 1.0, "va": 1.0}},
                               model={"paralinguistic": {"kind": "opensmile", "num_tokens": 4, "hidden_size": 16}})
        return [h["loss"] for h in trainer.train()], trainer.unwrapped.paralinguistic_encoder._cache

    inline, computed_here = run(0)
    in_workers, handed_over = run(2)
    assert in_workers == inline and len(inline) == 4
    assert computed_here.misses == 8, "each clip once, in the training process"
    assert handed_over.misses == 0 and handed_over.hits == 4 * 4, "none computed in the training process"
