import os
from pathlib import Path

import pytest

# A stray hub call must fail at once instead of waiting on the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
# EMOREASON_SHARED_DATA points elsewhere, e.g. from a second worktree.
SHARED_DATA = Path(os.environ.get("EMOREASON_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """The real corpora beside the checkout; the test skips cleanly when they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is not present (set EMOREASON_SHARED_DATA to the shared data folder)")
    return SHARED_DATA

SAMPLES = ROOT / "data" / "samples" / "manifest.jsonl"
TINY = ROOT / "data" / "tiny"


def launch_two_processes(args: list[str], timeout: float = 600) -> str:
    """Run ``args`` (a script and its arguments, or ``-m module ...``) under `accelerate
    launch` on two CPU processes; fails the test on a non-zero exit or a hang (then both
    ranks are killed, not only the launcher). Returns stderr."""
    import signal
    import subprocess
    import sys

    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        pytest.fail(f"the two processes did not finish within {timeout} s (a collective that one rank "
                    f"never reached?):\n{err[-3000:]}")
    assert proc.returncode == 0, err[-3000:]
    return err


def tiny_recipe_tree(out_dir: Path, manifest: Path = SAMPLES, **sections) -> dict:
    """The quickstart recipe as a dict, with absolute paths and small settings for tests.
    ``sections`` update whole sections' fields, e.g. ``train={"epochs": 2}``."""
    import yaml

    tree = yaml.safe_load((ROOT / "recipes" / "tiny.yaml").read_text())
    m = tree["model"]
    m["speech"]["config"] = str(TINY / "whisper.json")
    m["paralinguistic"]["config"] = str(TINY / "wavlm.json")
    m["llm"]["config"] = str(TINY / "llm.json")
    m["llm"]["tokenizer"] = str(TINY / "tokenizer")
    tree["data"].update(train_manifest=str(manifest), batch_size=4)
    tree["train"].update(output_dir=str(out_dir), epochs=1, save_every=0, log_every=0, warmup_steps=0)
    for section, values in sections.items():
        tree.setdefault(section, {}).update(values)
    return tree


@pytest.fixture
def small_manifest(tmp_path) -> Path:
    """Eight bundled clips (two per emotion, two speakers) with absolute audio paths."""
    import json

    rows = [json.loads(line) for line in SAMPLES.read_text().splitlines()]
    keep = [r for r in rows if r["speaker"] in ("spk1", "spk2") and r["id"].endswith(("_0", "_1"))][:16:2]
    for r in keep:
        r["audio"] = str(SAMPLES.parent / r["audio"])
        r["split"] = "train"
    path = tmp_path / "small.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in keep))
    return path


@pytest.fixture(scope="session")
def trained_once(tmp_path_factory):
    """A tiny model trained for four steps on eight bundled clips: (trainer, rows). Tests
    take :func:`trained`, a copy, so that none sees what another changed."""
    import json

    from reasoning.training.config import load_recipe
    from reasoning.training.train import TrainRecipe

    tmp = tmp_path_factory.mktemp("trained")
    rows = [json.loads(x) for x in SAMPLES.read_text().splitlines()][:8]
    for r in rows:
        r["audio"] = str(SAMPLES.parent / r["audio"])
    manifest = tmp / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    trainer = TrainRecipe(load_recipe(tree=tiny_recipe_tree(tmp / "run", manifest, train={"max_steps": 4})))
    trainer.setup()
    trainer.train()
    return trainer, rows


@pytest.fixture(scope="module")
def trained(trained_once, tmp_path_factory):
    """The trained run of :func:`trained_once` for one test module: its run folder copied,
    and the trainer's recipe, state and the rows deep-copied (the model's weights are
    shared: tests only read them)."""
    import copy
    import shutil

    trainer, rows = trained_once
    clone = copy.copy(trainer)
    clone.output_dir = tmp_path_factory.mktemp("trained_copy") / trainer.output_dir.name
    shutil.copytree(trainer.output_dir, clone.output_dir)
    clone.recipe, clone.state = copy.deepcopy(trainer.recipe), copy.deepcopy(trainer.state)
    return clone, copy.deepcopy(rows)
