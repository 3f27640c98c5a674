"""What --resume restores besides the weights: each process's random state (CPU and GPU)
and the fp16 GradScaler. The end-to-end resumes are in test_train.py."""

import logging

import torch
from safetensors.torch import load_file

from reasoning.training.checkpoint import (RNG_FILE, SCALER_FILE, load_training_state, restore_rng_state, rng_state,
                                  save_checkpoint)


def _states(*seeds):
    out = []
    for seed in seeds:
        torch.manual_seed(seed)
        out.append(rng_state())
    return out


def test_each_process_resumes_with_its_own_random_state(trained, tmp_path, caplog):
    trainer, _ = trained
    states = _states(1, 2)
    ckpt = save_checkpoint(tmp_path, 1, trainer.unwrapped, trainer.recipe, {"epoch": 0, "batch": 0},
                           trainer.optimizer, trainer.scheduler, rng_states=states)
    assert set(load_file(ckpt / RNG_FILE)) == {"torch.0", "torch.1"}
    for rank in (0, 1):
        torch.manual_seed(99)
        with caplog.at_level(logging.WARNING, logger="reasoning.training.checkpoint"):
            load_training_state(ckpt, trainer.optimizer, trainer.scheduler, rank=rank, world=2)
        assert torch.equal(torch.get_rng_state(), states[rank]["torch"]), rank
    assert "random state" not in caplog.text
    # on another number of processes the draws cannot be the uninterrupted run's: it says so
    load_training_state(ckpt, trainer.optimizer, trainer.scheduler, rank=2, world=3)
    assert "holds the random state of 2 process(es), and the run resumes on 3" in caplog.text


def test_a_checkpoint_with_one_random_state_still_resumes(tmp_path, caplog):
    """Checkpoints written before each process's state was kept hold one `torch` state."""
    (old,) = _states(5)
    torch.manual_seed(0)
    restore_rng_state({"torch": old["torch"]})
    assert torch.equal(torch.get_rng_state(), old["torch"])
    with caplog.at_level(logging.WARNING, logger="reasoning.training.checkpoint"):
        restore_rng_state({"torch": old["torch"]}, rank=1, world=2)
    assert "holds the random state of 1 process(es), and the run resumes on 2" in caplog.text


def test_the_gpu_random_state_is_saved_and_restored_once_cuda_is_in_use(monkeypatch):
    """Dropout on a GPU draws from the GPU's generator, not the CPU's (stood in for here:
    the real one is exercised on a GPU machine)."""
    gpu = {"state": torch.tensor([1, 2, 3], dtype=torch.uint8)}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda: gpu["state"].clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda t: gpu.update(state=t.clone()))
    saved = rng_state()
    assert torch.equal(saved["cuda"], torch.tensor([1, 2, 3], dtype=torch.uint8))
    gpu["state"] = torch.tensor([9], dtype=torch.uint8)
    restore_rng_state({f"{k}.1": v for k, v in saved.items()} | {"torch.0": saved["torch"],
                                                                   "cuda.0": torch.tensor([0], dtype=torch.uint8)},
                      rank=1, world=2)
    assert torch.equal(gpu["state"], torch.tensor([1, 2, 3], dtype=torch.uint8))


def test_the_grad_scaler_resumes_with_its_loss_scale(trained, tmp_path, caplog):
    trainer, _ = trained
    scaler = torch.amp.GradScaler("cpu", init_scale=512.0, growth_interval=7)
    ckpt = save_checkpoint(tmp_path / "fp16", 1, trainer.unwrapped, trainer.recipe, {"epoch": 0, "batch": 0},
                           trainer.optimizer, trainer.scheduler, scaler=scaler)
    assert torch.load(ckpt / SCALER_FILE, weights_only=True)["scale"] == 512.0
    fresh = torch.amp.GradScaler("cpu")
    load_training_state(ckpt, trainer.optimizer, trainer.scheduler, scaler=fresh)
    assert fresh.state_dict() == scaler.state_dict()

    bf16 = save_checkpoint(tmp_path / "bf16", 1, trainer.unwrapped, trainer.recipe, {"epoch": 0, "batch": 0},
                           trainer.optimizer, trainer.scheduler)
    assert not (bf16 / SCALER_FILE).exists()
    with caplog.at_level(logging.WARNING, logger="reasoning.training.checkpoint"):
        load_training_state(bf16, trainer.optimizer, trainer.scheduler, scaler=torch.amp.GradScaler("cpu"))
    assert "no GradScaler state" in caplog.text

