"""Training: ``accelerate launch -m reasoning.training.train --config recipes/X.yaml [key=value ...]``
or ``emoreason train --config recipes/X.yaml``.

One task per batch, in the order the seeded :class:`~reasoning.tasks.schedule.TaskSchedule` plans,
read through a DataLoader that replays that plan (:func:`~reasoning.tasks.schedule.schedule_loader`;
``data.num_workers`` prepare the next batches while the model trains). The loop reads
``batch["task"]`` only to log the loss per task.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate.utils import DistributedType, gather_object
from tqdm.auto import tqdm

from reasoning.audio import duration
from reasoning.model.builders import build_model, materialize
from reasoning.training.checkpoint import (checkpoint_dirs, load_trainable, load_training_state, recover_checkpoints,
                                 resolve_checkpoint, rng_state, save_checkpoint)
from reasoning.training.config import RECIPE_NAME, Recipe, describe_fields, load_recipe, save_recipe
from reasoning.training.augment import build_augmenter
from reasoning.tasks.collate import AudioCache, Collator, to_device
from reasoning.tasks.prompts import TRANSCRIPT_TASKS, VA_PROMPT_TASKS, PromptBuilder, task_target
from reasoning.tasks.schedule import TaskSchedule, schedule_loader
from reasoning.training.distributed import gather_rows, layer_classes
from reasoning.errors import RecipeError, UserError
from reasoning.evidence.measure import has_evidence
from reasoning.files import remove_dir
from reasoning.manifest import read_manifest

log = logging.getLogger(__name__)

HISTORY_FILE = "losses.jsonl"
TRACKERS_DIR = "trackers"  # train.log_with's files (TensorBoard events, ...)


def rows_in_splits(rows: list[dict], splits: list[str]) -> list[dict]:
    """The rows of ``splits`` (all rows when empty): ``data.train_split``, ``data.eval_split``."""
    return [r for r in rows if not splits or r.get("split") in splits]


def check_launch(recipe: Recipe, kind: DistributedType, resume, deepspeed_config: dict | None = None) -> None:
    """Refuse, before any model is built, what this loop cannot do under the launcher's
    distributed ``kind`` (and, under DeepSpeed, its ``deepspeed_config``)."""
    t = recipe.train
    sharded = kind in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    if kind == DistributedType.DEEPSPEED and t.grad_accum != 1:
        raise RecipeError(f"train.grad_accum is {t.grad_accum}, but DeepSpeed accumulates by itself (its "
                          "gradient_accumulation_steps) and steps at every backward: run with train.grad_accum=1.")
    clipping = (deepspeed_config or {}).get("gradient_clipping", "auto")
    if kind == DistributedType.DEEPSPEED and clipping != "auto" and float(clipping) != t.max_grad_norm:
        raise RecipeError(f"DeepSpeed clips gradients at {clipping} (the launch config's gradient_clipping), "
                          f"not at train.max_grad_norm ({t.max_grad_norm}), which does nothing under DeepSpeed: "
                          f"run with train.max_grad_norm={clipping}, or change the launch config.")
    if sharded and resume:
        raise RecipeError(f"resuming under {kind.value} is not supported: a checkpoint holds one process's "
                          "optimizer shard only. Resume with DDP (recipes/accelerate/ddp.yaml), or start anew.")
    if kind == DistributedType.FSDP and t.projector_lr is not None:
        raise RecipeError("train.projector_lr is not supported under FSDP yet (its two parameter groups "
                          "were not checked against DDP there): leave it unset, or train with DDP.")


class TrainRecipe:
    """``setup()`` builds the parts in dependency order, ``train()`` loops,
    ``save_checkpoint()`` writes one, ``cleanup()`` ends the process group."""

    def __init__(self, recipe: Recipe, resume: str | bool = False, force: bool = False):
        self.recipe = recipe
        self.resume = resume
        self.force = force  # a run folder that holds a run is emptied, not refused
        self.history: list[dict] = []
        self.bar = None  # the progress bar, while train() runs

    # -- setup ------------------------------------------------------------------------
    def setup(self) -> None:
        self._setup_accelerator()
        self._setup_output()
        self._setup_model()
        self._setup_data()
        self._setup_optimizer()
        self._setup_resume()

    def _setup_accelerator(self) -> None:
        from accelerate import Accelerator, DistributedDataParallelKwargs

        t = self.recipe.train
        # Tasks use different parts (the VA head only in `va` batches), so DDP must allow
        # parameters without gradients in a step.
        self.accelerator = Accelerator(
            mixed_precision=t.mixed_precision, log_with=t.log_with or None,
            project_dir=Path(t.output_dir) / TRACKERS_DIR,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        self.rank = self.accelerator.process_index
        self.world = self.accelerator.num_processes
        plugin = self.accelerator.state.deepspeed_plugin  # None unless DeepSpeed launched this
        check_launch(self.recipe, self.accelerator.distributed_type, self.resume,
                     plugin.deepspeed_config if plugin is not None else None)
        torch.manual_seed(t.seed)

    def _setup_output(self) -> None:
        self.output_dir = Path(self.recipe.train.output_dir)
        if self.accelerator.is_main_process:  # before anything looks for the latest checkpoint
            recover_checkpoints(self.output_dir)
        self.accelerator.wait_for_everyone()
        found = checkpoint_dirs(self.output_dir)
        if found and not self.resume and not self.force:
            raise UserError(f"{self.output_dir}: already holds a run ({len(found)} checkpoint(s), the latest "
                            f"{found[-1].name}). Continue it with --resume, start it over with --force, or "
                            "set train.output_dir to a new folder.")
        if found and self.force and not self.resume and self.accelerator.is_main_process:
            log.warning("--force: deleting the run in %s (%d checkpoint(s))", self.output_dir, len(found))
            for path in [*found, self.output_dir / TRACKERS_DIR]:
                if path.exists():
                    remove_dir(path)
        if self.accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            if not self.resume:  # a fresh run (any log here came from a run that never saved) logs afresh
                (self.output_dir / HISTORY_FILE).unlink(missing_ok=True)
            materialize(self.recipe, self.output_dir, seed=self.recipe.train.seed)
            if self.recipe.model.paralinguistic.layer == "auto":  # the resolved recipe names the layer
                from reasoning.model.saliency import resolve_auto_layer

                d = self.recipe.data
                resolve_auto_layer(self.recipe, rows_in_splits(read_manifest(d.train_manifest), d.train_split),
                                   self.output_dir, self.accelerator.device)
            save_recipe(self.recipe, self.output_dir / RECIPE_NAME)
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:  # the paths the main process wrote
            self.recipe = load_recipe(self.output_dir / RECIPE_NAME)
        if self.recipe.train.log_with:  # the scalar settings of the run, as the trackers' hyperparameters
            config = {f"{section}.{k}": v for section in ("train", "data", "lora")
                      for k, v in asdict(getattr(self.recipe, section)).items()
                      if isinstance(v, (int, float, str, bool))}
            self.accelerator.init_trackers(self.output_dir.name, config=config)

    def _setup_model(self) -> None:
        torch.manual_seed(self.recipe.train.seed)
        self.model, self.tokenizer = build_model(self.recipe)
        self.model._no_split_modules = layer_classes(self.model)  # FSDP's wrap units (accelerate reads this)
        if self.world > 1:
            self.model.gather = gather_rows
        self.model.train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.part_names = {self.model.part_of(n): [] for n, _ in self.model.named_parameters()}
        for n, p in self.model.named_parameters():
            if p.requires_grad:
                self.part_names[self.model.part_of(n)].append(p)
        # The weights are the same on every process (train.seed); the dropout masks each draws
        # for its own clips are its own (as accelerate's set_seed(device_specific=True)).
        torch.manual_seed(self.recipe.train.seed + self.rank)

    def _setup_data(self) -> None:
        d, r = self.recipe.data, self.recipe
        rows = rows_in_splits(read_manifest(d.train_manifest), d.train_split)
        if not rows:
            raise UserError(f"{d.train_manifest}: no rows in split(s) {d.train_split}. "
                            "Check data.train_split against the manifest's `split` values.")
        self.rows = rows
        self.builder = PromptBuilder.for_recipe(self.tokenizer, r, self.model.num_audio_tokens)
        self.collate = Collator(self.builder, AudioCache(d.audio_cache_mb), r.prompt.transcript,
                                r.prompt.two_step, r.prompt.rationale_order,
                                augment=build_augmenter(r.augment, r.train.seed),
                                # a cached encoder output belongs to the clip as recorded
                                cached=bool(self.model.caches), max_seconds=r.model.speech.max_seconds,
                                dimensions=tuple(r.heads.dimensions), evidence=r.prompt.evidence)
        if r.model.paralinguistic.kind == "opensmile" and d.num_workers > 0:
            # openSMILE runs on the CPU: in the workers, not between the training steps
            self.collate.descriptors = self.model.paralinguistic_encoder.descriptors
        if self.collate.augment is not None and self.model.caches:
            log.warning("augmentation is off: model.encoder_cache holds the %s encoder outputs of the "
                        "unaugmented clips", " and ".join(self.model.caches))
        examples = {t: [i for i, row in enumerate(rows)
                        if task_target(t, row, d.labels, r.heads.dimensions) is not None]
                    for t in d.tasks}
        limit = r.model.speech.max_seconds
        if "asr" in examples and limit is not None:  # a cut clip's transcript says more than it
            long = [i for i in examples["asr"] if duration(rows[i]) > limit]
            if long:
                log.warning("task asr: %d clip(s) longer than model.speech.max_seconds (%g s) are left "
                            "out, e.g. %s: they are cut, and their transcripts are not", len(long), limit,
                            rows[long[0]]["id"])
                left_out = set(long)
                examples["asr"] = [i for i in examples["asr"] if i not in left_out]
        self._check_prompt_inputs(rows, examples)
        for task, idx in examples.items():
            if not idx:
                log.warning("task %s: no row of %s can serve it; it is skipped", task, d.train_manifest)
        self.schedule = TaskSchedule(
            examples, d.tasks, d.batch_size, d.schedule, d.temperature, d.phases, r.train.epochs,
            r.train.seed, self.world, labels={i: row.get("emotion") for i, row in enumerate(rows)},
            balance=d.balance, durations=[duration(row) for row in rows] if d.group_by_length else None)
        if not self.schedule.examples:
            raise UserError(f"{d.train_manifest}: no row serves any task in data.tasks.")
        self.plans = [self.schedule.plan(e) for e in range(r.train.epochs)]
        log.info("examples per task: %s", {t: len(v) for t, v in examples.items()})

    def _check_prompt_inputs(self, rows: list[dict], examples: dict[str, list[int]]) -> None:
        """``prompt.transcript`` needs a transcript, and ``prompt.evidence`` measured evidence,
        on every row it puts in a prompt; ``prompt.two_step`` trains the label tasks on rows
        with gold valence and arousal only."""
        p, manifest = self.recipe.prompt, self.recipe.data.train_manifest
        if p.evidence != "none":
            used = sorted({i for t, idx in examples.items() if t in TRANSCRIPT_TASKS for i in idx})
            missing = [rows[i]["id"] for i in used if not has_evidence(rows[i])]
            if missing:
                raise RecipeError(
                    f"prompt.evidence is `{p.evidence}`, but {len(missing)} of {len(used)} training rows of "
                    f"{manifest} have no measured evidence (e.g. {missing[0]}): run `emoreason evidence "
                    f"--manifest {manifest}`, or set prompt.evidence: none.")
        if p.transcript != "none":
            used = sorted({i for t, idx in examples.items() if t != "asr" for i in idx})
            missing = [rows[i]["id"] for i in used if not (rows[i].get("transcript") or "").strip()]
            if missing:
                raise RecipeError(
                    f"prompt.transcript is `{p.transcript}`, but {len(missing)} of {len(used)} training rows of "
                    f"{manifest} have no transcript (e.g. {missing[0]}): add transcripts to the manifest, "
                    "or set prompt.transcript: none.")
        if p.two_step:
            for task in VA_PROMPT_TASKS:
                if task in examples:
                    kept = [i for i in examples[task]
                            if rows[i].get("valence") is not None and rows[i].get("arousal") is not None]
                    if len(kept) < len(examples[task]):
                        log.warning("prompt.two_step: %d %s examples without gold valence and arousal are "
                                    "not trained on", len(examples[task]) - len(kept), task)
                    examples[task] = kept

    def _setup_optimizer(self) -> None:
        from transformers import get_scheduler

        t = self.recipe.train
        steps = sum(math.ceil(len(p) / t.grad_accum) for p in self.plans)
        self.total_steps = min(steps, t.max_steps) if t.max_steps > 0 else steps
        # The LoRA adapter nudges a pretrained LLM; projectors and heads start from random
        # weights and may need a larger step (train.projector_lr).
        groups = [{"params": self.params, "lr": t.lr}]
        if t.projector_lr is not None:
            llm = {id(p) for p in self.part_names.get("llm", [])}
            groups = [{"params": [p for p in self.params if id(p) in llm], "lr": t.lr},
                      {"params": [p for p in self.params if id(p) not in llm], "lr": t.projector_lr}]
        self.optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=t.lr, weight_decay=t.weight_decay)
        self.scheduler = get_scheduler(t.lr_schedule if t.lr_schedule != "constant" else "constant_with_warmup",
                                       self.optimizer, num_warmup_steps=t.warmup_steps,
                                       num_training_steps=self.total_steps)
        if self.accelerator.distributed_type == DistributedType.DEEPSPEED:
            # No DataLoader goes through accelerate, so DeepSpeed must be told the batch size.
            ds = self.accelerator.state.deepspeed_plugin.deepspeed_config
            ds["train_micro_batch_size_per_gpu"] = self.recipe.data.batch_size
        self.model, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
        self.state = {"epoch": 0, "batch": 0, "step": 0}

    def _setup_resume(self) -> None:
        if not self.resume:
            return
        ckpt = resolve_checkpoint(self.output_dir if self.resume is True else self.resume)
        load_trainable(self.unwrapped, ckpt)
        self.state = load_training_state(ckpt, self.optimizer, self.scheduler, self.rank, self.world,
                                         self.accelerator.scaler)
        history = self.output_dir / HISTORY_FILE
        if history.is_file():  # keep the losses logged up to the checkpoint, drop the rest
            kept = [json.loads(x) for x in history.read_text().splitlines() if x.strip()]
            self.history = [h for h in kept if h["step"] <= self.state["step"]]
            if self.accelerator.is_main_process:
                history.write_text("".join(json.dumps(h) + "\n" for h in self.history))
        log.info("resumed from %s at step %d (epoch %d, batch %d)", ckpt, self.state["step"],
                 self.state["epoch"], self.state["batch"])

    @property
    def unwrapped(self):
        return self.accelerator.unwrap_model(self.model)

    # -- training ---------------------------------------------------------------------
    def _batch(self, task: str, indices: list[int], epoch: int | None = None) -> dict:
        """The batch of this process; ``epoch`` marks a training batch (augmented, when on)."""
        mine = TaskSchedule.shard(indices, self.rank, self.world)
        batch = self.collate([self.rows[i] for i in mine], task, epoch=epoch)
        return to_device(batch, self.accelerator.device)

    def loader(self, epoch: int, start: int = 0) -> torch.utils.data.DataLoader:
        """This process's batches of ``epoch`` from planned batch ``start`` on (on the CPU)."""
        d = self.recipe.data
        return schedule_loader(self.rows, self.plans[epoch], self.collate, epoch, start, self.rank, self.world,
                               d.num_workers, d.prefetch_factor,
                               pin_memory=self.accelerator.device.type == "cuda")

    def _received(self, batch: dict) -> dict:
        """A batch from the loader, on the device; openSMILE descriptors computed in the
        workers go to the encoder, which then finds them instead of computing them."""
        if "descriptors" in batch:
            encoder = self.unwrapped.paralinguistic_encoder
            for wave, n, lld in zip(batch["waves"], batch["wave_lengths"].tolist(), batch.pop("descriptors")):
                encoder.remember(wave[:n].numpy(), lld)
        return to_device(batch, self.accelerator.device)

    def _mask_frozen_parts(self, parts: list[str] | None) -> None:
        """`phased` schedule: parts outside this phase get no gradient, so AdamW leaves them
        (and their moments) untouched."""
        if parts is None:
            return
        for part, params in self.part_names.items():
            if part not in parts:
                for p in params:
                    p.grad = None

    def train(self) -> list[dict]:
        """Run every remaining epoch (or up to ``train.max_steps``), then save a checkpoint.
        Returns the loss history: one record per batch."""
        t = self.recipe.train
        self.bar = tqdm(total=self.total_steps, initial=self.state["step"], dynamic_ncols=True,
                        disable=not self.accelerator.is_main_process, desc="train")
        for epoch in range(self.state["epoch"], t.epochs):
            if not self.train_epoch(epoch):
                break
        self.bar.close()
        self.bar = None
        self.state["finished"] = True
        self.save_checkpoint()
        return self.history

    def train_epoch(self, epoch: int) -> bool:
        """One epoch of the plan, from where the state says; False once max_steps is reached."""
        t, acc = self.recipe.train, self.accelerator
        plan, parts = self.plans[epoch], self.schedule.phase(epoch)["train"]
        start = self.state["batch"] if epoch == self.state["epoch"] else 0
        running: dict[str, list[float]] = {}
        batches = iter(self.loader(epoch, start))
        for i in range(start, len(plan), t.grad_accum):
            if self.state["step"] >= self.total_steps:
                return False
            group = plan[i:i + t.grad_accum]
            for j in range(len(group)):
                batch = self._received(next(batches))
                task = batch["task"]
                sync = nullcontext() if j == len(group) - 1 else acc.no_sync(self.model)
                with sync:
                    with acc.autocast():
                        losses = self.model(batch)
                    acc.backward(losses["loss"] / len(group))
                record = {k: acc.reduce(v.detach(), "mean").item() for k, v in losses.items()}
                record["padding"] = batch["padding"]
                running.setdefault(task, []).append(record["loss"])
                running.setdefault("padding", []).append(batch["padding"])
                self.history.append({"step": self.state["step"] + 1, "epoch": epoch, "task": task, **record})
            self._mask_frozen_parts(parts)
            if t.max_grad_norm > 0:  # all parameters: FSDP then clips by the norm over every shard
                acc.clip_grad_norm_(self.model.parameters(), t.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.state.update(epoch=epoch, batch=i + len(group), step=self.state["step"] + 1)
            if self.bar is not None:
                self.bar.update(1)
            self._append_history(len(group))
            if t.log_every and self.state["step"] % t.log_every == 0:
                self._flush_log(running)
            if t.save_every and self.state["step"] % t.save_every == 0 and self.state["step"] < self.total_steps:
                self.save_checkpoint()
        self._flush_log(running)
        self.state.update(epoch=epoch + 1, batch=0)
        return True

    def _append_history(self, n_new: int) -> None:
        if self.accelerator.is_main_process:
            with (self.output_dir / HISTORY_FILE).open("a") as f:
                for h in self.history[-n_new:]:
                    f.write(json.dumps(h) + "\n")

    def _flush_log(self, running: dict) -> None:
        if running and self.accelerator.is_main_process:
            parts = " | ".join(f"{task} {sum(v) / len(v):.4f}" for task, v in running.items()
                               if task != "padding")
            parts += f" | padded/real samples {sum(running['padding']) / len(running['padding']):.3f}"
            log.info("step %d/%d | lr %.2e | %s", self.state["step"], self.total_steps,
                     self.scheduler.get_last_lr()[0], parts)
            if self.recipe.train.log_with:
                self.accelerator.log({**{f"loss/{task}": sum(v) / len(v) for task, v in running.items()
                                         if task != "padding"},
                                      "lr": self.scheduler.get_last_lr()[0],
                                      "padding": sum(running["padding"]) / len(running["padding"])},
                                     step=self.state["step"])
        running.clear()

    def save_checkpoint(self) -> Path | None:
        acc = self.accelerator
        acc.wait_for_everyone()
        rng = gather_object([rng_state()])  # each process's own random state, in rank order
        # FSDP and DeepSpeed shard the weights: every process takes part in gathering them.
        full = acc.get_state_dict(self.model) \
            if acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED) else None
        path = None
        if acc.is_main_process:
            path = save_checkpoint(self.output_dir, self.state["step"], self.unwrapped, self.recipe,
                                   dict(self.state, labels=self.recipe.data.labels),
                                   self.optimizer, self.scheduler, self.recipe.train.keep_last,
                                   state_dict=full, rng_states=rng, scaler=acc.scaler)
        acc.wait_for_everyone()
        return path

    def cleanup(self, end_process_group: bool = True) -> None:
        """End the run; ``end_process_group=False`` keeps the processes' group for another
        run in the same launch (the benchmark's next fold)."""
        if end_process_group:
            self.accelerator.end_training()
        else:
            for tracker in self.accelerator.trackers:
                tracker.finish()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="a recipe YAML (see recipes/)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the latest checkpoint of train.output_dir")
    parser.add_argument("--resume-from", metavar="CHECKPOINT",
                        help="continue from this checkpoint folder instead of the latest")
    parser.add_argument("--force", action="store_true",
                        help="start over in a train.output_dir that holds a run (its checkpoints, "
                             "loss log and tracker files are deleted)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted recipe overrides, e.g. train.lr=1e-4 data.batch_size=4")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "recipe keys (default, help):\n" + "\n".join(describe_fields())


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.config, args.overrides)
    trainer = TrainRecipe(recipe, resume=args.resume_from or args.resume, force=args.force)
    trainer.setup()
    trainer.train()
    trainer.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    from reasoning.cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
