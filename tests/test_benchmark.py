import json
import logging

import pytest

import yaml

from reasoning.cli import main
from reasoning.manifest import read_manifest

from conftest import SAMPLES, launch_two_processes, tiny_recipe_tree


@pytest.mark.slow
def test_benchmark_trains_every_fold_and_reports_beside_the_baselines(tmp_path, capsys):
    run = tmp_path / "bench"
    tree = tiny_recipe_tree(run, SAMPLES, train={"max_steps": 2})
    tree["data"].update(train_split=[], eval_split=[], labels=[], tasks={"emotion": 1.0, "va": 1.0})
    tree["eval"] = {"protocol": "loso", "baselines": ["majority", "probe"]}
    recipe = tmp_path / "bench.yaml"
    recipe.write_text(yaml.safe_dump(tree))
    assert main(["benchmark", str(recipe)]) == 0
    table = capsys.readouterr().out
    assert "| model" in table and "| majority" in table and "| probe" in table

    speakers = {r["speaker"] for r in read_manifest(SAMPLES)}
    for spk in speakers:
        fold = run / f"speaker-{spk}"
        train_speakers = {r["speaker"] for r in read_manifest(fold / "train.jsonl")}
        assert spk not in train_speakers and train_speakers == speakers - {spk}
        assert list(fold.glob("checkpoint-*"))
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert len(metrics["folds"]) == 4
    assert metrics["systems"]["model"]["pooled"]["n"] == 48 and metrics["rows"]["kept"] == 48
    assert (run / "eval" / "report.md").is_file()
    # the probe reads the encoder the folds materialised from model.speech.config
    probe = metrics["systems"]["probe"]
    assert probe["encoder"] == str(run / "speaker-spk1" / "base" / "speech")
    assert sorted(probe["layer_choice"]) == sorted(f"speaker-{s}" for s in speakers)
    assert all(c["layer"] in (0, 1, 2) for c in probe["layer_choice"].values())

    # A second run finds every fold trained and only evaluates.
    mtimes = {p: p.stat().st_mtime for p in run.glob("speaker-*/checkpoint-*/trainer_state.json")}
    assert main(["benchmark", str(recipe)]) == 0
    assert mtimes == {p: p.stat().st_mtime for p in run.glob("speaker-*/checkpoint-*/trainer_state.json")}

    # GRPO on the same fold models (not trained again), evaluated apart, compared side by side.
    refined = tmp_path / "grpo"
    tree["grpo"] = {"benchmark": True, "output_dir": str(refined), "rewards": {"label": 1.0, "format": 1.0},
                    "max_steps": 1, "clips_per_step": 2, "num_generations": 2, "max_completion_tokens": 4}
    tree["eval"]["baselines"] = ["majority"]
    recipe.write_text(yaml.safe_dump(tree))
    assert main(["benchmark", str(recipe)]) == 0
    assert mtimes == {p: p.stat().st_mtime for p in run.glob("speaker-*/checkpoint-*/trainer_state.json")}
    for spk in speakers:
        state = json.loads(next((refined / f"speaker-{spk}").glob("checkpoint-*/trainer_state.json")).read_text())
        assert state["grpo_from"].startswith(str(run / f"speaker-{spk}" / "checkpoint-"))
    grpo_metrics = json.loads((refined / "eval" / "metrics.json").read_text())
    assert grpo_metrics["systems"]["model"]["pooled"]["n"] == 48
    assert sorted(p.name for p in (refined / "eval" / "plots").glob("rewards_*.png")) == sorted(
        f"rewards_speaker-{s}.png" for s in speakers)
    capsys.readouterr()
    assert main(["compare", f"sft={run}", f"grpo={refined}"]) == 0
    table = capsys.readouterr().out
    assert "clip-specific grounding" in table and "| sft | model |" in table and "| grpo | model |" in table


def _one_step_folds(tmp_path, speakers: tuple[str, ...]):
    """(run folder, recipe path) of a one-step, emotion-only loso benchmark of these speakers' clips."""
    rows = [r for r in read_manifest(SAMPLES) if r["speaker"] in speakers]
    manifest = tmp_path / "clips.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = tmp_path / "bench"
    tree = tiny_recipe_tree(run, manifest, train={"max_steps": 1})
    tree["data"].update(train_split=[], eval_split=[], labels=[], tasks={"emotion": 1.0}, batch_size=2)
    tree["eval"] = {"protocol": "loso", "baselines": ["majority"]}
    recipe = tmp_path / "bench.yaml"
    recipe.write_text(yaml.safe_dump(tree))
    return run, recipe


@pytest.mark.slow
def test_benchmark_on_two_processes_trains_every_fold(tmp_path):
    """accelerate's end_training destroys the process group: a fold's cleanup must not,
    or the second fold's first collective fails. Two folds (two speakers)."""
    run, recipe = _one_step_folds(tmp_path, ("spk1", "spk2"))
    for launch in range(2):  # the second launch finds every fold trained and only evaluates
        if launch:  # what a save killed in the first launch would leave: the main process alone cleans it
            (run / "speaker-spk2" / ".checkpoint-000001.tmp-killed").mkdir()
        err = launch_two_processes(["-m", "reasoning.cli", "benchmark", str(recipe)], timeout=600)
        assert len(list(run.glob("speaker-*/checkpoint-*"))) == 2
        metrics = json.loads((run / "eval" / "metrics.json").read_text())
        assert len(metrics["folds"]) == 2
        assert err.count("fold speaker-spk1: ") == 1  # one process evaluated
    assert not list(run.glob("speaker-*/.checkpoint-*"))


@pytest.mark.slow
def test_benchmark_trains_folds_side_by_side_with_jobs(tmp_path, capsys, caplog):
    """`--jobs 2`: the folds train two at a time, each in its own process with its share of
    the CPU threads (on a CPU that beats one process with every thread); this process then
    evaluates every fold, as one run. A fold that fails names itself and keeps the others."""
    run, recipe = _one_step_folds(tmp_path, ("spk1", "spk2", "spk3"))
    (run / "speaker-spk3").mkdir(parents=True)
    (run / "speaker-spk3" / "train.jsonl").mkdir()  # where the fold writes its manifest: it fails
    assert main(["benchmark", str(recipe), "--jobs", "2"]) == 2
    assert "fold speaker-spk3 failed" in capsys.readouterr().err
    assert len(list(run.glob("speaker-spk[12]/checkpoint-*"))) == 2  # the other folds are kept
    (run / "speaker-spk3" / "train.jsonl").rmdir()
    mtimes = {p: p.stat().st_mtime for p in run.glob("speaker-*/checkpoint-*/trainer_state.json")}
    assert main(["benchmark", str(recipe), "--jobs", "2"]) == 0
    assert mtimes.items() <= {p: p.stat().st_mtime for p in run.glob("speaker-*/checkpoint-*/trainer_state.json")}.items()
    for spk in ("spk1", "spk2", "spk3"):
        state = json.loads(next((run / f"speaker-{spk}").glob("checkpoint-*/trainer_state.json")).read_text())
        assert state["finished"]
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert len(metrics["folds"]) == 3
    assert "| model" in capsys.readouterr().out

    # GRPO refines the fold models side by side too, and only this process evaluates them.
    refined = tmp_path / "grpo"
    tree = yaml.safe_load(recipe.read_text())
    tree["grpo"] = {"benchmark": True, "output_dir": str(refined), "rewards": {"label": 1.0, "format": 1.0},
                    "max_steps": 1, "clips_per_step": 2, "num_generations": 2, "max_completion_tokens": 4}
    recipe.write_text(yaml.safe_dump(tree))
    caplog.set_level(logging.INFO, "reasoning")
    assert main(["benchmark", str(recipe), "--jobs", "2"]) == 0
    assert "refining 3 folds, 2 at a time" in caplog.text
    for spk in ("spk1", "spk2", "spk3"):
        state = json.loads(next((refined / f"speaker-{spk}").glob("checkpoint-*/trainer_state.json")).read_text())
        assert state["grpo_from"].startswith(str(run / f"speaker-{spk}" / "checkpoint-"))
    assert len(json.loads((refined / "eval" / "metrics.json").read_text())["folds"]) == 3


def test_fold_processes_are_set_up_as_the_command_is(capfd):
    """A fold of --jobs runs in a spawned process: without the command's set-up, its training
    log (losses every log_every steps) was lost, and warnings the command silences were printed."""
    import logging
    import warnings

    from reasoning.evaluation.benchmark import fold_pool

    with fold_pool(1) as pool:
        pool.submit(logging.getLogger("reasoning.training.train").info, "step 20: loss 1.0").result()
        pool.submit(warnings.warn, "`is_gradient_checkpointing` is deprecated", FutureWarning).result()
    err = capfd.readouterr().err
    assert "step 20: loss 1.0" in err
    assert "is_gradient_checkpointing" not in err
