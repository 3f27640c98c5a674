"""``emoreason grpo --config RECIPE [--checkpoint RUN]``: reinforcement refinement of a
supervised checkpoint with GRPO (arXiv 2402.03300), as TRL's ``GRPOTrainer`` computes it.

For each step, ``grpo.clips_per_step`` training clips each get ``grpo.num_generations``
completions sampled from the rationale prompt (audio spliced in, as in training). Each
completion is scored by the recipe's weighted rewards (:mod:`reasoning.training.rewards`); the
advantage of a completion is its reward minus its group's mean, over the group's std; the
LoRA adapter, and nothing else, then takes a step on TRL's clipped objective with a KL term
to the starting policy (the supervised adapter, kept as a frozen copy).

Why not TRL's ``GRPOTrainer`` itself: its prompts are token ids all the way. It generates
with ``model.generate(input_ids=prompt_ids, ...)`` (or vLLM, on text), and scores with
``_get_per_token_logps_and_entropies``, which calls ``model(input_ids=..., attention_mask=...,
labels=..., fused_lm_head=True)`` plus a fixed list of vision fields (``pixel_values``,
``image_grid_thw``, ...). Neither path takes ``inputs_embeds``, so the audio embeddings our
encoders splice into the prompt (:meth:`DualEncoderLLM.embed_prompt`) cannot reach the LLM;
its extension points (reward functions, ``rollout_func``, the processing class) all produce
text or ids. So this module samples and scores itself and computes TRL's objective from the
options of TRL's own :class:`trl.GRPOConfig`; ``tests/test_grpo.py`` checks that
:func:`grpo_loss` and :func:`completion_logps` give TRL's ``GRPOTrainer._compute_loss``
(value and gradient) on a text-only model.

The model is the checkpoint's own (model, prompt and data sections of its recipe: a
benchmark fold refines on that fold's training rows); ``--config`` gives the ``grpo``
section. The result is a checkpoint like any other (``emoreason explain``/``eval`` read it).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from pathlib import Path

import torch
from tqdm.auto import tqdm

from reasoning.training.checkpoint import (add_device_argument, checkpoint_dirs, load_for_inference, read_recipe,
                                  resolve_checkpoint, resolve_device, save_checkpoint)
from reasoning.training.config import RECIPE_NAME, GrpoConfig, Recipe, describe_fields, load_recipe, save_recipe
from reasoning.model.dual_encoder import real_positions
from reasoning.tasks.collate import AudioCache, Collator, to_device
from reasoning.tasks.prompts import PromptBuilder
from reasoning.errors import RecipeError, UserError
from reasoning.manifest import read_manifest
from reasoning.evidence.measure import has_evidence
from reasoning.training.rewards import REWARDS, Completion

log = logging.getLogger(__name__)

HISTORY_FILE = "losses.jsonl"  # as the supervised run's: one record per step
PLOT_FILE = "rewards.png"


# -- the objective, as TRL's GRPOTrainer computes it --------------------------------------
def trl_config(g, output_dir: str | Path, use_cpu: bool):
    """TRL's :class:`trl.GRPOConfig` with the recipe's ``grpo`` section ``g``: the options the
    objective reads (beta, epsilon, loss_type, ...) come from TRL's own defaults and checks."""
    from trl import GRPOConfig

    return GRPOConfig(output_dir=str(output_dir), beta=g.beta, epsilon=g.epsilon, epsilon_high=g.epsilon_high,
                      loss_type=g.loss_type, scale_rewards=g.scale_rewards, temperature=g.temperature,
                      num_generations=g.num_generations, max_completion_length=g.max_completion_tokens,
                      num_iterations=g.iterations, learning_rate=g.lr, max_grad_norm=g.max_grad_norm,
                      per_device_train_batch_size=g.clips_per_step * g.num_generations, seed=g.seed,
                      report_to="none", use_cpu=use_cpu, activation_checkpointing=False)


def group_advantages(rewards: torch.Tensor, num_generations: int, scale: str = "group"):
    """Group-relative advantages of (N,) rewards, N = clips x ``num_generations`` in clip
    order: reward - its group's mean, divided by (std + 1e-4) of the group (``group``), of the
    whole batch (``batch``) or not (``none``), as TRL. Returns ``(advantages (N,), zero_std
    (N,) bool)``: a group whose rewards are all equal teaches nothing and gets advantage 0
    (never NaN; TRL's nanstd is the unbiased std, so one completion per group would be NaN)."""
    grouped = rewards.view(-1, num_generations)
    mean = grouped.mean(1).repeat_interleave(num_generations)
    std = grouped.std(1).repeat_interleave(num_generations) if scale != "batch" \
        else rewards.std().expand_as(rewards)
    advantages = rewards - mean
    if scale != "none":
        advantages = advantages / (std + 1e-4)
    zero_std = torch.isclose(std, torch.zeros_like(std))
    if zero_std.any():
        log.info("%d of %d groups have equal rewards: advantage 0, nothing to learn from them",
                 int(zero_std.view(-1, num_generations)[:, 0].sum()), grouped.shape[0])
    return torch.nan_to_num(advantages, nan=0.0), zero_std


def completion_logps(llm, prompt_embeds: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
                     completion_mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(N, T) log-probabilities of each completion token under ``llm``, after (N, P, H)
    prompt embeddings (left-padded: positions count real tokens only, as
    :meth:`DualEncoderLLM._run`), at the sampling ``temperature`` as TRL scores them."""
    embeds = torch.cat([prompt_embeds, llm.get_input_embeddings()(completion_ids)], 1)
    mask = torch.cat([prompt_mask, completion_mask], 1)
    positions = real_positions(mask)
    T = completion_ids.shape[1]
    logits = llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, logits_to_keep=T + 1).logits
    logits = logits[:, :-1].float() / temperature  # position t predicts completion token t
    return torch.log_softmax(logits, -1).gather(-1, completion_ids[..., None]).squeeze(-1)


def grpo_loss(logps: torch.Tensor, old_logps: torch.Tensor | None, ref_logps: torch.Tensor | None,
              advantages: torch.Tensor, mask: torch.Tensor, args) -> tuple[torch.Tensor, dict]:
    """TRL's GRPO objective (``GRPOTrainer._compute_loss``, loss types grpo, bnpo, dr_grpo) of
    (N, T) completion log-probabilities under the policy being trained, ``old_logps`` under the
    policy that sampled them (None: the same, detached) and ``ref_logps`` under the starting
    policy (needed when ``args.beta`` > 0), for (N,) advantages and the (N, T) completion
    mask; ``args`` is a :class:`trl.GRPOConfig`. Returns the loss and, detached, the mean KL
    to the reference and the share of tokens whose ratio was clipped."""
    old_logps = logps.detach() if old_logps is None else old_logps
    adv = advantages[:, None]
    mask = mask.to(logps.dtype)
    log_ratio = logps - old_logps
    if args.importance_sampling_level == "sequence":
        log_ratio = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0))[:, None]
    coef_1 = torch.exp(log_ratio)
    eps_low, eps_high = args.epsilon, args.epsilon_high if args.epsilon_high is not None else args.epsilon
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    if args.delta is not None:
        coef_1 = torch.clamp(coef_1, max=args.delta)
    per_token = -torch.min(coef_1 * adv, coef_2 * adv)
    kl = torch.zeros_like(logps)
    if args.beta != 0.0:
        kl = torch.exp(ref_logps - logps) - (ref_logps - logps) - 1  # k3 estimator, >= 0
        if args.use_bias_correction_kl:
            kl = kl * coef_1
        per_token = per_token + args.beta * kl
    if args.loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif args.loss_type == "bnpo":
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    else:  # dr_grpo
        loss = (per_token * mask).sum() / (per_token.shape[0] * args.max_completion_length)
    clipped = ((coef_1 < 1 - eps_low) & (adv < 0)) | ((coef_1 > 1 + eps_high) & (adv > 0))
    n = mask.sum().clamp(min=1.0)
    return loss, {"kl": float((kl.detach() * mask).sum() / n),
                  "clip_ratio": float((clipped.expand_as(mask) * mask).sum() / n)}


# -- bad input, refused before any model is built ------------------------------------------
def check_rows(rows: list[dict], weights: dict, manifest: str) -> None:
    """Every row needs a gold label (the rewards compare against it), and with ``grounding``
    weighted, measured evidence."""
    unlabelled = [r["id"] for r in rows if not r.get("emotion")]
    if unlabelled:
        raise UserError(f"{manifest}: {len(unlabelled)} of {len(rows)} training rows have no `emotion` "
                        f"(e.g. {unlabelled[0]}); GRPO's rewards compare with the gold label.")
    if weights.get("grounding", 0) > 0:
        missing = [r["id"] for r in rows if not has_evidence(r)]
        if missing:
            raise RecipeError(f"grpo.rewards weighs `grounding`, but {len(missing)} of {len(rows)} training rows "
                              f"of {manifest} have no measured evidence (e.g. {missing[0]}): run `emoreason "
                              f"evidence --manifest {manifest}`, or set grpo.rewards.grounding: 0.")


def adapter_parameters(model) -> dict[str, torch.nn.Parameter]:
    """The LoRA adapter's parameters (its lora_A/B and modules_to_save copies): what
    ``save_pretrained`` writes, and all that GRPO trains."""
    return {n: p for n, p in model.llm.named_parameters() if "lora_" in n or "modules_to_save" in n}


class GrpoRecipe:
    """``setup()`` reads the checkpoint and its rows and builds the parts, ``train()`` loops,
    ``save_checkpoint()`` writes the refined checkpoint."""

    def __init__(self, recipe: Recipe, checkpoint: str | Path | None = None, device: str | None = None,
                 reward_funcs: dict | None = None):
        self.g = recipe.grpo
        self.checkpoint = checkpoint or self.g.checkpoint or recipe.train.output_dir
        self.device = resolve_device(device)
        # name -> reward(completion, row), those with a weight (a `grounding: 0` needs no
        # evidence); tests may pass their own, as TRL's reward_funcs, each weighted 1 unless named.
        self.reward_funcs = reward_funcs or {n: REWARDS[n] for n, w in self.g.rewards.items() if w != 0}
        self.history: list[dict] = []

    def setup(self) -> None:
        self.ckpt = resolve_checkpoint(self.checkpoint)
        # The checkpoint's model, prompt and data, with this run's grpo section.
        self.recipe = read_recipe(self.ckpt)
        self.recipe.grpo = self.g
        self._setup_data()
        self._setup_output()
        self._setup_model()
        self._setup_optimizer()

    def _setup_data(self) -> None:
        from reasoning.training.train import rows_in_splits

        d = self.recipe.data
        self.rows = rows_in_splits(read_manifest(d.train_manifest), d.train_split)
        if not self.rows:
            raise UserError(f"{d.train_manifest}: no rows in split(s) {d.train_split}, which {self.ckpt} trained on.")
        check_rows(self.rows, self.g.rewards, d.train_manifest)

    def _setup_output(self) -> None:
        self.output_dir = Path(self.g.output_dir)
        found = checkpoint_dirs(self.output_dir)
        if found:
            raise UserError(f"{self.output_dir}: already holds a run ({found[-1].name}). Set grpo.output_dir to a "
                            "new folder (delete this one to start it over).")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / HISTORY_FILE).unlink(missing_ok=True)
        save_recipe(self.recipe, self.output_dir / RECIPE_NAME)

    def _setup_model(self) -> None:
        self.model, self.tokenizer, _, _ = load_for_inference(self.ckpt, self.device)
        # Eval mode throughout: no dropout, so a completion's log-probabilities are the same
        # when sampled, when scored and under the reference (ratio 1 at the first iteration).
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.params = adapter_parameters(self.model)
        if not self.params:
            raise UserError(f"{self.ckpt}: its LLM has no LoRA adapter (a merged export?); GRPO trains the adapter.")
        for p in self.params.values():
            p.requires_grad_(True)
        # The starting policy, for the KL term: a frozen copy of the supervised adapter.
        self.reference = {n: p.detach().clone() for n, p in self.params.items()} if self.g.beta else None
        log.info("GRPO trains the LoRA adapter only: %d tensors, %d parameters", len(self.params),
                 sum(p.numel() for p in self.params.values()))
        p = self.recipe.prompt
        self.builder = PromptBuilder.for_recipe(self.tokenizer, self.recipe, self.model.num_audio_tokens)
        self.collate = Collator(self.builder, AudioCache(), p.transcript, p.two_step, p.rationale_order,
                                max_seconds=self.recipe.model.speech.max_seconds,
                                dimensions=tuple(self.recipe.heads.dimensions), evidence=p.evidence)

    def _setup_optimizer(self) -> None:
        self.args = trl_config(self.g, self.output_dir / "trl", use_cpu=self.device.type == "cpu")
        self.optimizer = torch.optim.AdamW(list(self.params.values()), lr=self.g.lr, weight_decay=0.0)
        self.step = 0
        self.rng = random.Random(self.g.seed)
        self.order: list[int] = []
        torch.manual_seed(self.g.seed)

    # -- one step ------------------------------------------------------------------------
    def _next_rows(self) -> list[dict]:
        """The next ``clips_per_step`` rows of a seeded shuffle, reshuffled at each pass."""
        out = []
        while len(out) < self.g.clips_per_step:
            if not self.order:
                self.order = list(range(len(self.rows)))
                self.rng.shuffle(self.order)
            out.append(self.rows[self.order.pop()])
        return out

    @torch.no_grad()
    def _sample(self, rows: list[dict]) -> dict:
        """``num_generations`` completions per clip of ``rows``: the prompt (N, P, H) and
        mask, the completion ids and mask (N, T) up to its first end-of-turn token, texts."""
        G, b = self.g.num_generations, self.builder
        # The gold context (transcript, cues), as training prompts; two-step prompts get gold VA.
        batch = to_device(self.collate(rows, "rationale"), self.device)
        embeds = self.model.embed_prompt(batch).repeat_interleave(G, 0)
        mask = batch["attention_mask"].repeat_interleave(G, 0)
        ids = self.model.llm.generate(
            inputs_embeds=embeds, attention_mask=mask, do_sample=True, temperature=self.g.temperature,
            top_k=self.args.top_k, top_p=self.args.top_p, max_new_tokens=self.g.max_completion_tokens,
            eos_token_id=b.turn_end_ids, pad_token_id=b.pad_id)
        is_end = torch.isin(ids, torch.tensor(b.turn_end_ids, device=ids.device))
        ended = is_end.any(1)
        first = torch.where(ended, is_end.int().argmax(1), torch.full_like(ended, ids.shape[1], dtype=torch.long))
        cmask = (torch.arange(ids.shape[1], device=ids.device)[None, :] <= first[:, None]).long()
        texts = [self.tokenizer.decode(t[: int(n)], skip_special_tokens=True).strip()
                 for t, n in zip(ids, first)]
        return {"embeds": embeds, "mask": mask, "ids": ids, "cmask": cmask, "texts": texts, "truncated": ~ended}

    def _logps(self, s: dict) -> torch.Tensor:
        return completion_logps(self.model.llm, s["embeds"], s["mask"], s["ids"], s["cmask"], self.g.temperature)

    @torch.no_grad()
    def _reference_logps(self, s: dict) -> torch.Tensor:
        """Log-probabilities under the starting adapter, swapped in for one pass."""
        current = {n: p.detach().clone() for n, p in self.params.items()}
        for n, p in self.params.items():
            p.copy_(self.reference[n])
        try:
            return self._logps(s)
        finally:
            for n, p in self.params.items():
                p.copy_(current[n])

    def train_step(self) -> dict:
        """Sample, score, and take ``grpo.iterations`` optimizer steps; returns the step's record."""
        g, G = self.g, self.g.num_generations
        rows = self._next_rows()
        s = self._sample(rows)
        names = list(self.reward_funcs)
        per = torch.tensor([[self.reward_funcs[n](Completion(t, self.builder.labels, bool(cut)), rows[i // G])
                             for n in names] for i, (t, cut) in enumerate(zip(s["texts"], s["truncated"]))],
                           dtype=torch.float32)                                      # (N, R)
        weights = torch.tensor([float(g.rewards.get(n, 1.0)) for n in names])
        rewards = per @ weights                                                      # (N,)
        advantages, zero_std = group_advantages(rewards, G, g.scale_rewards)
        advantages = advantages.to(self.device)
        ref = self._reference_logps(s) if g.beta else None
        old = None
        if g.iterations > 1:  # the sampling policy, before this batch's first step moves it
            with torch.no_grad():
                old = self._logps(s)
        # The supervised emotion loss of the same clips, as the supervised run computed it.
        emotion = to_device(self.collate(rows, "emotion"), self.device) if g.sft_weight else None
        for _ in range(g.iterations):
            loss, stats = grpo_loss(self._logps(s), old, ref, advantages, s["cmask"], self.args)
            if emotion is not None:
                sft = self.model(emotion)["loss"]
                stats["sft_loss"] = float(sft.detach())
                loss = loss + g.sft_weight * sft
            loss.backward()
            if g.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(self.params.values(), g.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        # TRL's metric names, so its users read the log as they read TRL's
        record = {"step": self.step, "loss": float(loss.detach()), "reward": float(rewards.mean()),
                  "reward_std": float(rewards.view(-1, G).std(1).mean()),
                  **{k: v for i, n in enumerate(names)
                     for k, v in ((f"rewards/{n}/mean", float(per[:, i].mean())),
                                  (f"rewards/{n}/std", float(per[:, i].std())))},
                  **stats, "completions/mean_length": float(s["cmask"].sum(1).float().mean()),
                  "completions/clipped_ratio": float(s["truncated"].float().mean()),
                  "frac_reward_zero_std": float(zero_std.float().mean()),
                  "example": s["texts"][0]}
        return record

    def train(self) -> list[dict]:
        """``grpo.max_steps`` steps, one line of losses.jsonl each; then the checkpoint and the plot."""
        bar = tqdm(total=self.g.max_steps, dynamic_ncols=True, desc="grpo")
        while self.step < self.g.max_steps:
            record = self.train_step()
            self.history.append(record)
            with (self.output_dir / HISTORY_FILE).open("a") as f:
                f.write(json.dumps(record) + "\n")
            bar.update(1)
            bar.set_postfix(reward=f"{record['reward']:.3f}", kl=f"{record['kl']:.4f}")
            log.info("step %d/%d | reward %.3f ± %.3f | %s | kl %.4f%s | length %.1f | %r", self.step,
                     self.g.max_steps, record["reward"], record["reward_std"],
                     " ".join(f"{n} {record[f'rewards/{n}/mean']:.3f}" for n in self.reward_funcs),
                     record["kl"], f" | sft {record['sft_loss']:.3f}" if "sft_loss" in record else "",
                     record["completions/mean_length"], record["example"][:80])
        bar.close()
        self.save_checkpoint()
        plot_run(self.output_dir)
        return self.history

    def save_checkpoint(self) -> Path:
        return save_checkpoint(self.output_dir, self.step, self.model, self.recipe,
                               {"step": self.step, "finished": True, "labels": self.recipe.data.labels,
                                "grpo_from": str(self.ckpt)})


def plot_run(run_dir: str | Path, path: str | Path | None = None) -> Path:
    """The reward curves of a GRPO run folder (its losses.jsonl) as a PNG, by default its rewards.png."""
    from reasoning.evaluation.report import plot_reward_curves

    run_dir = Path(run_dir)
    history = [json.loads(x) for x in (run_dir / HISTORY_FILE).read_text().splitlines() if x.strip()]
    Path(path or run_dir / PLOT_FILE).parent.mkdir(parents=True, exist_ok=True)
    return plot_reward_curves(history, path or run_dir / PLOT_FILE, title=f"GRPO: {run_dir.name}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="a recipe YAML whose `grpo` section sets the stage")
    parser.add_argument("--checkpoint", help="the supervised checkpoint or run folder to start from "
                        "(default: grpo.checkpoint, else train.output_dir)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted recipe overrides, e.g. grpo.max_steps=20 grpo.rewards.votes=1.0")
    add_device_argument(parser)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "grpo keys (default, help):\n" + "\n".join(describe_fields(GrpoConfig, "grpo."))


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.config, args.overrides)
    trainer = GrpoRecipe(recipe, args.checkpoint, args.device)
    trainer.setup()
    trainer.train()
    return 0
