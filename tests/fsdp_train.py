"""Run by test_distributed.py as
``ACCELERATE_USE_CPU=true accelerate launch --config_file recipes/accelerate/fsdp.yaml
--num_processes 2 --fsdp_sync_module_states false tests/fsdp_train.py RECIPE OUT``:
trains the recipe twice in the same two CPU processes, first as accelerate launches it,
then under FSDP, and writes what each run was to OUT/runs.json (checkpoints go to
OUT/ddp and OUT/fsdp).

Why two runs, and why the shim below. accelerate (1.15) never enables FSDP on CPU: with
``--cpu`` the distributed type is MULTI_CPU (state.py, ``PartialState._prepare_backend``)
and ``AcceleratorState`` switches to FSDP only in its branch for accelerator devices
(state.py: ``self.distributed_type = DistributedType.FSDP``), so the first run is plain
DDP over gloo even with the FSDP config. PyTorch's FSDP itself runs on CPU with gloo, so
for the second run this driver applies for CPU what accelerate does for GPUs: distributed
type FSDP with the config's plugin, and the plain ``cpu`` device (accelerate's ``cpu:0``
fails FSDP's check that ``device_id`` equals its compute device). It also gathers the
full state dict without ``offload_to_cpu``: with a CPU compute device FSDP's
``FlatParamHandle.to_cpu`` frees the storage it has just "moved" and the process
segfaults. Everything else is the unchanged training loop and accelerate's own FSDP
wrapping, gradient clipping and state-dict gathering.
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed.fsdp as torch_fsdp
import yaml
from accelerate.state import AcceleratorState, GradientState, PartialState
from accelerate.utils import DistributedType

from reasoning.training.config import load_recipe
from reasoning.training.train import TrainRecipe

_init = AcceleratorState.__init__
_FullStateDictConfig = torch_fsdp.FullStateDictConfig


def _init_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    _init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.fsdp_plugin = fsdp_plugin
        for state in (self._shared_state, PartialState._shared_state):
            state["distributed_type"] = DistributedType.FSDP
            state["device"] = torch.device("cpu")


def _full_state_dict_config_on_cpu(offload_to_cpu: bool = False, rank0_only: bool = False):
    return _FullStateDictConfig(offload_to_cpu=False, rank0_only=rank0_only)


def train(tree: dict, out: Path) -> tuple[TrainRecipe, dict]:
    tree["train"]["output_dir"] = str(out)
    trainer = TrainRecipe(load_recipe(tree=tree))
    trainer.setup()
    units = [m for m in trainer.model.modules() if isinstance(m, torch_fsdp.FullyShardedDataParallel)]
    handles = [u._handle for u in units if u._handle is not None]
    history = trainer.train()
    return trainer, {
        "distributed_type": trainer.accelerator.distributed_type.value, "world_size": trainer.world,
        "wrapper": type(trainer.model).__name__,
        "units": sorted(type(u.module).__name__ for u in units),
        # outside forward each process holds only its shard of every unit's flat parameter
        "local_fraction": (sum(h.flat_param.numel() for h in handles)
                           / max(sum(h.flat_param._unpadded_unsharded_size.numel() for h in handles), 1)),
        "losses": [h["loss"] for h in history]}


def main() -> None:
    tree, out = yaml.safe_load(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
    runs = {}
    trainer, runs["launched"] = train(tree, out / "ddp")
    AcceleratorState._reset_state()  # keep the process group, build a new accelerator
    GradientState._reset_state()
    AcceleratorState.__init__ = _init_fsdp_on_cpu
    torch_fsdp.FullStateDictConfig = _full_state_dict_config_on_cpu
    trainer, runs["fsdp"] = train(tree, out / "fsdp")
    if trainer.rank == 0:
        (out / "runs.json").write_text(json.dumps(runs, indent=1))
    trainer.cleanup()


if __name__ == "__main__":
    main()
