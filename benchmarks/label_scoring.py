"""Training step of an emotion batch whose loss scores every label, old against new scoring, side by side.

    python benchmarks/label_scoring.py [--steps 4] [--repeats 3] [--checkpointing]

The quickstart recipe's real models (Whisper tiny.en, openSMILE, SmolLM2-135M-Instruct with
LoRA; ``emoreason models fetch``), heads.emotion_loss ``both`` and va_in_emotion, batch 8
of the bundled clips, EmoDB's 7 labels, and prompts of about 85 tokens (the audio tokens
raised to reach it: the bundled clips have no measured cues). One training step: forward,
backward, optimizer step; encoders uncached.

Label scoring, two ways on the same model and batch:

* ``two-pass`` (the code before the packed pass, kept here only): the prompt pass fills the
  KV cache, which is repeated L times (``cache.batch_repeat_interleave``) for a second pass
  over the B * L candidates; with ``--checkpointing`` (no cache in training) every
  "prompt + label" sequence, each prompt repeated L times, in one pass;
* ``packed`` (``DualEncoderLLM._score``): one pass per clip over the prompt and all L
  candidates, a 4D mask keeping each candidate to the prompt and its own tokens.

Each side is timed ``--repeats`` times, alternated, and the medians are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import SAMPLES  # noqa: E402

from reasoning.manifest import read_manifest  # noqa: E402
from reasoning.model.builders import build_model  # noqa: E402
from reasoning.tasks.collate import AudioCache, Collator  # noqa: E402
from reasoning.tasks.prompts import PromptBuilder  # noqa: E402
from reasoning.training.config import load_recipe  # noqa: E402

EMODB_LABELS = ["anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"]
# the bundled clips' emotions under EmoDB's names
RENAME = {"angry": "anger", "happy": "happiness", "sad": "sadness", "neutral": "neutral"}
PROMPT_TOKENS = 85


def two_pass_score(self, batch: dict, prompt_embeds: torch.Tensor, pooled: bool = False):
    """``DualEncoderLLM._score`` before the packed pass (commit 900f846), for the comparison only."""
    mask = batch["attention_mask"]
    cand, cand_mask = batch["label_ids"], batch["label_mask"]
    B, L = prompt_embeds.shape[0], cand.shape[0]
    ids = cand.repeat(B, 1)
    cmask = cand_mask.repeat(B, 1)
    feed = ids[:, :-1]
    full_mask = torch.cat([mask.repeat_interleave(L, 0), cmask[:, :-1]], 1)
    if self.training and self.llm.get_base_model().is_activation_checkpointing:
        emb = torch.cat([prompt_embeds.repeat_interleave(L, 0), self.llm.get_input_embeddings()(feed)], 1)
        out = self._run(emb, full_mask, output_hidden_states=pooled, logits_to_keep=ids.shape[1])
        logits = out.logits.float()
        first, rest = torch.log_softmax(logits[:, 0], -1), torch.log_softmax(logits[:, 1:], -1)
        every = L
    else:
        out = self._run(prompt_embeds, mask, use_cache=True, output_hidden_states=pooled, logits_to_keep=1)
        first = torch.log_softmax(out.logits[:, -1].float(), -1).repeat_interleave(L, 0)
        rest = first.new_zeros(first.shape[0], 0, first.shape[1])
        if feed.shape[1]:
            cache = out.cache
            cache.batch_repeat_interleave(L)
            start = mask.long().sum(-1).repeat_interleave(L)[:, None]
            positions = start + torch.arange(feed.shape[1], device=ids.device)[None, :]
            cont = self.llm(input_ids=feed, attention_mask=full_mask, position_ids=positions,
                            cache=cache, use_cache=True)
            rest = torch.log_softmax(cont.logits.float(), -1)
        every = 1
    lp = torch.cat([first.gather(-1, ids[:, :1]), rest.gather(-1, ids[:, 1:, None]).squeeze(-1)], 1)
    seq = (lp * cmask).sum(-1).view(B, L)
    state = None
    if pooled:
        h = out.hidden_states[self.va_layer][::every, : batch["audio_mask"].shape[1]]
        state = self.va_head.pool(h, batch["audio_mask"])
    return seq, state


def setup(checkpointing: bool):
    """(model, batch, optimizer) of the benchmark."""
    recipe = load_recipe(ROOT / "recipes" / "quickstart.yaml", [f"data.labels={json.dumps(EMODB_LABELS)}",
                                                                  f"model.llm.gradient_checkpointing={checkpointing}"])
    torch.manual_seed(0)
    model, tokenizer = build_model(recipe, caches=False)
    rows = [dict(r, emotion=RENAME[r["emotion"]]) for r in read_manifest(SAMPLES)[:8]]
    builder = PromptBuilder(tokenizer, EMODB_LABELS, model.num_audio_tokens, recipe.prompt.system)
    extra = PROMPT_TOKENS - len(builder.prompt("emotion")[0])
    if extra > 0:  # more audio tokens: the prompt of PROMPT_TOKENS tokens
        model.projectors["speech"].num_tokens += extra
        builder = PromptBuilder(tokenizer, EMODB_LABELS, model.num_audio_tokens, recipe.prompt.system)
    batch = Collator(builder, AudioCache())(rows, "emotion")
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    return model, batch, opt


def step_time(model, batch, opt, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        model(batch)["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="training steps per timing")
    parser.add_argument("--repeats", type=int, default=3, help="alternations of the two sides")
    parser.add_argument("--checkpointing", action="store_true", help="activation checkpointing in the LLM")
    args = parser.parse_args()
    model, batch, opt = setup(args.checkpointing)
    packed = model._score
    sides = {"two-pass": types.MethodType(two_pass_score, model), "packed": packed}
    with torch.no_grad():  # the same scores both ways, before any step changes the weights
        scores = {name: fn(batch, model.embed_prompt(batch))[0] for name, fn in sides.items()}
    gap = float((scores["two-pass"] - scores["packed"]).abs().max())
    times: dict[str, list[float]] = {name: [] for name in sides}
    for name, fn in sides.items():  # warm-up: CPU kernels are chosen per shape
        model._score = fn
        step_time(model, batch, opt, 1)
    for _ in range(args.repeats):
        for name, fn in sides.items():
            model._score = fn
            times[name].append(step_time(model, batch, opt, args.steps))
    med = {name: statistics.median(t) for name, t in times.items()}
    B, P = batch["attention_mask"].shape
    L, C = batch["label_ids"].shape
    print(f"SmolLM2-135M, batch {B}, prompt {P} tokens, {L} labels of up to {C} tokens; "
          f"checkpointing {args.checkpointing}; torch threads {torch.get_num_threads()}; "
          f"{args.steps} steps x {args.repeats} repeats; largest score gap {gap:.1e}")
    for name in sides:
        print(f"{name:10s} {med[name]:8.3f} s/step  ({', '.join(f'{t:.3f}' for t in times[name])})")
    print(f"{'packed / two-pass':18s} {med['packed'] / med['two-pass']:.3f}")
    print(json.dumps({"s_per_step": med, "score_gap": gap}))


if __name__ == "__main__":
    main()
