"""Run by test_train.py under `accelerate launch --multi_gpu --num_processes 2` on CPU:
trains the recipe and saves each rank's trainable parameters for comparison."""

import json
import sys
from pathlib import Path

from safetensors.torch import save_file

from reasoning.config import load_recipe
from reasoning.train import TrainRecipe


def trainable(model):
    return {n: p.detach().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def main() -> None:
    recipe_path, out = sys.argv[1], Path(sys.argv[2])
    trainer = TrainRecipe(load_recipe(recipe_path))
    trainer.setup()
    rank = trainer.rank
    save_file(trainable(trainer.unwrapped), out / f"init{rank}.safetensors")
    first = trainer.plans[0][0][1]
    trainer.train()
    save_file(trainable(trainer.unwrapped), out / f"rank{rank}.safetensors")
    if rank == 0:
        shares = [len(trainer.schedule.shard(first, r, trainer.world)) for r in range(trainer.world)]
        (out / "world.json").write_text(json.dumps({"world_size": trainer.world, "rows_per_rank": shares}))
    trainer.cleanup()


if __name__ == "__main__":
    main()
