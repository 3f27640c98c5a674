"""Fault injection: a save killed at each moment, damaged and corrupt checkpoints.

Each test reproduced a bug of issue 15 before it was fixed. The kills run the save in a
forked child, which inherits the already built model (a fresh interpreter would spend most
of the test importing torch), stops it at one chosen moment and SIGKILLs it there.
"""

import logging
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from conftest import tiny_recipe_tree

from reasoning.training import checkpoint as ckpt_mod
from reasoning.training.checkpoint import list_checkpoints, load_for_inference, save_checkpoint
from reasoning.training.config import RECIPE_NAME, load_recipe
from reasoning.errors import UserError
from reasoning.training.train import TrainRecipe


@pytest.fixture(scope="module")
def source(trained, tmp_path_factory) -> Path:
    """A run folder with whole checkpoints at steps 2 and 4 (the trained tiny model's weights)."""
    trainer, _ = trained
    run = tmp_path_factory.mktemp("faults") / "run"
    for step in (2, 4):
        save_checkpoint(run, step, trainer.unwrapped, trainer.recipe,
                        dict(trainer.state, step=step, finished=step == 4, labels=trainer.recipe.data.labels),
                        trainer.optimizer, trainer.scheduler)
    return run


def copy_run(source: Path, tmp_path: Path, *steps: int) -> Path:
    run = tmp_path / "run"
    for step in steps:
        shutil.copytree(source / f"checkpoint-{step:06d}", run / f"checkpoint-{step:06d}")
    return run


def resume(run: Path, trained, resume: str | bool = True, **train) -> TrainRecipe:
    """What ``emoreason train --resume`` (or ``--resume-from CHECKPOINT``) sets up on ``run``."""
    manifest = trained[0].recipe.data.train_manifest
    tree = tiny_recipe_tree(run, manifest, train={"max_steps": 4, **train})
    trainer = TrainRecipe(load_recipe(tree=tree), resume=resume)
    trainer.setup()
    return trainer


@pytest.fixture(scope="module")
def resumer(source, trained, tmp_path_factory) -> TrainRecipe:
    """A trainer resumed from a copy of ``source``, to resume again from damaged copies."""
    return resume(copy_run(source, tmp_path_factory.mktemp("resumer"), 2, 4), trained)


def file_names(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# -- kill -9 inside a save ----------------------------------------------------------------
def stop_at(moment: str, stopped: Path) -> None:
    """Make this (child) process stop for good at ``moment`` of a save, after touching ``stopped``."""
    def pause(*args, **kwargs):
        stopped.touch()
        time.sleep(60)

    if moment == "write":  # the adapter is written, the module weights are not
        ckpt_mod.save_file = pause
    elif moment == "swap":  # the old copy is renamed aside, the new one is not in place yet
        replace = os.replace

        def replace_then_pause(src, dst):
            if Path(src).name.startswith(".checkpoint-") and ".tmp-" in Path(src).name:
                pause()
            replace(src, dst)
        os.replace = replace_then_pause
    else:  # "delete": the first folder deleted loses one file, then the process dies
        rmtree = shutil.rmtree

        def rmtree_half(path, *args, **kwargs):
            if Path(path).exists():
                next(p for p in Path(path).rglob("*") if p.is_file()).unlink()
                pause()
            rmtree(path, *args, **kwargs)
        shutil.rmtree = rmtree_half


def save_killed_at(trainer: TrainRecipe, run: Path, step: int, moment: str, stopped: Path) -> None:
    """Save checkpoint ``step`` of ``trainer`` into ``run`` (keep_last 1) in a forked child,
    and SIGKILL the child once it stops at ``moment``."""
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        try:
            stop_at(moment, stopped)
            trainer.output_dir = run
            trainer.recipe.train.keep_last = 1
            trainer.state = dict(trainer.state, step=step)
            trainer.save_checkpoint()
        finally:
            os._exit(1)
    deadline = time.monotonic() + 60
    while not stopped.exists():
        if os.waitpid(pid, os.WNOHANG)[0]:
            pytest.fail(f"the save ended before it reached the moment `{moment}`")
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            pytest.fail(f"the save did not reach the moment `{moment}` within a minute")
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


KILLS = {  # (step saved, moment of the kill, step a resume then starts from)
    "writing a new step": (6, "write", 4),
    "writing over the latest step": (4, "write", 4),
    "between the renames of a re-save": (4, "swap", 4),
    "deleting the replaced copy": (4, "delete", 4),
    "pruning the older step": (6, "delete", 6),
}


@pytest.mark.parametrize("kill", KILLS, ids=list(KILLS))
def test_a_save_killed_at_any_moment_leaves_a_whole_checkpoint(kill, source, trained, tmp_path, caplog):
    """keep_last: 1 and one checkpoint on disk: the case where a killed save used to leave no
    whole checkpoint (a half-deleted ``checkpoint-000040``)."""
    step, moment, resumed_at = KILLS[kill]
    run = copy_run(source, tmp_path, 4)
    whole = file_names(run / "checkpoint-000004")
    save_killed_at(trained[0], run, step, moment, tmp_path / "stopped")

    for ckpt in run.glob("checkpoint-*"):
        assert file_names(ckpt) == whole, f"{ckpt.name} is a part of a checkpoint under a checkpoint's name"
    leftovers = sorted(p.name for p in run.iterdir() if p.name.startswith("."))
    assert leftovers, "the kill left the save's temporary folders"
    with caplog.at_level(logging.INFO):
        resumed = resume(run, trained, keep_last=1)
    assert resumed.state["step"] == resumed_at
    assert list_checkpoints(run) == [run / f"checkpoint-{resumed_at:06d}"]
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == [], "the resume cleaned up"
    for name in leftovers:
        assert name in caplog.text, f"no log line says what became of {name}"


# -- damaged checkpoints --------------------------------------------------------------------
@pytest.mark.parametrize("reader", ["resume", "explain"])
@pytest.mark.parametrize("damage", ["cut short", "half deleted"])
def test_a_damaged_latest_checkpoint_is_skipped_with_a_warning(damage, reader, source, trained, tmp_path, caplog):
    run = copy_run(source, tmp_path, 2, 4)
    latest = run / "checkpoint-000004"
    if damage == "cut short":
        modules = latest / ckpt_mod.MODULES_FILE
        modules.write_bytes(modules.read_bytes()[:100])
    else:
        shutil.rmtree(latest / ckpt_mod.ADAPTER_DIR)
        (latest / ckpt_mod.OPTIMIZER_FILE).unlink()
    with caplog.at_level(logging.WARNING):
        if reader == "resume":
            assert resume(run, trained).state["step"] == 2
        else:
            assert load_for_inference(run)[3] == run / "checkpoint-000002"
    assert "checkpoint-000004" in caplog.text, "the warning names the checkpoint it skips"


def test_pruning_keeps_the_checkpoint_just_saved(source, trained, tmp_path):
    """Resumed from step 2 of a run whose step-4 checkpoint is broken, keep_last: 1 used to
    delete the new step-3 checkpoint (by folder name step 4 was the newest) and leave none whole."""
    run = copy_run(source, tmp_path, 2, 4)
    (run / "checkpoint-000004" / ckpt_mod.MODULES_FILE).unlink()
    trainer = resume(run, trained, resume=str(run / "checkpoint-000002"), keep_last=1)
    trainer.state["step"] = 3
    trainer.save_checkpoint()
    assert list_checkpoints(run) == [run / "checkpoint-000003"]


def test_a_checkpoint_from_before_the_marker_still_loads_with_a_warning(source, trained, tmp_path, caplog):
    run = copy_run(source, tmp_path, 4)
    (run / "checkpoint-000004" / ckpt_mod.COMPLETE_FILE).unlink()
    with caplog.at_level(logging.WARNING):
        assert resume(run, trained).state["step"] == 4
    assert f"without {ckpt_mod.COMPLETE_FILE}" in caplog.text


# -- corrupt checkpoint files ---------------------------------------------------------------
def spoil(ckpt: Path, name: str, damage: str) -> None:
    path = ckpt / name
    if damage.endswith("unmarked"):  # as an older emoreason wrote it
        (ckpt / ckpt_mod.COMPLETE_FILE).unlink(missing_ok=True)
    if damage.startswith("missing"):
        path.unlink()
    elif damage.startswith("truncated"):
        path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    else:  # garbled: the same size, so only reading it can tell
        path.write_bytes(b"\xff" * 16 + path.read_bytes()[16:])


FILES = [ckpt_mod.ADAPTER_WEIGHTS, ckpt_mod.ADAPTER_CONFIG, ckpt_mod.MODULES_FILE, ckpt_mod.OPTIMIZER_FILE,
         ckpt_mod.SCHEDULER_FILE, ckpt_mod.RNG_FILE, ckpt_mod.STATE_FILE, RECIPE_NAME]
CASES = [(name, damage) for name in FILES
         for damage in ("missing", "truncated", "garbled", "missing, unmarked", "truncated, unmarked")]
CASES += [(ckpt_mod.COMPLETE_FILE, "truncated"), (ckpt_mod.COMPLETE_FILE, "garbled")]


@pytest.mark.parametrize("name,damage", CASES)
def test_a_corrupt_checkpoint_file_is_an_error_naming_it_and_the_fix(name, damage, source, resumer, tmp_path):
    ckpt = copy_run(source, tmp_path, 4) / "checkpoint-000004"
    spoil(ckpt, name, damage)
    with pytest.raises(UserError) as err:
        if name == RECIPE_NAME:  # a resume reads the recipe it is given; explain and eval read this one
            load_for_inference(ckpt)
        else:
            resumer.resume = str(ckpt)  # --resume-from CHECKPOINT
            resumer._setup_resume()
    message = str(err.value)
    assert name in message and "--resume-from" in message, message
