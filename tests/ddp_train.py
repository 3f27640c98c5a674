"""Run by test_train.py under `accelerate launch --multi_gpu --num_processes 2` on CPU:
trains the recipe (``resume`` as a third argument: continues its output_dir's latest
checkpoint) and saves each rank's trainable parameters for comparison."""

import json
import sys
from pathlib import Path

from safetensors.torch import save_file

from reasoning.training.config import load_recipe
from reasoning.training.train import TrainRecipe


def trainable(model):
    return {n: p.detach().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def main() -> None:
    recipe_path, out = sys.argv[1], Path(sys.argv[2])
    trainer = TrainRecipe(load_recipe(recipe_path), resume=sys.argv[3:] == ["resume"])
    trainer.setup()
    rank = trainer.rank
    save_file(trainable(trainer.unwrapped), out / f"init{rank}.safetensors")
    first = trainer.plans[0][0][1]
    # the clips this rank's DataLoader (its workers, when data.num_workers > 0) gives it in epoch 0
    (out / f"ids{rank}.json").write_text(json.dumps([b["ids"] for b in trainer.loader(0)]))
    trainer.train()
    save_file(trainable(trainer.unwrapped), out / f"rank{rank}.safetensors")
    if rank == 0:
        llm = trainer.unwrapped.llm
        shares = [len(trainer.schedule.shard(first, r, trainer.world)) for r in range(trainer.world)]
        (out / "world.json").write_text(json.dumps({
            "world_size": trainer.world, "rows_per_rank": shares,
            "plan_ids": [[trainer.rows[i]["id"] for i in idx] for _, idx in trainer.plans[0]],
            "wrapper": type(trainer.model).__name__,
            "weights_4bit": sum(type(p).__name__ == "Params4bit" for p in llm.parameters()),
            "checkpointing": llm.get_base_model().is_activation_checkpointing}))
    trainer.cleanup()


if __name__ == "__main__":
    main()
