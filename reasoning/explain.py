"""``emoreason explain PATH... --checkpoint DIR``: the emotion of each clip, every label's
probability, valence and arousal, and a generated rationale.

Probabilities come from scoring each label under the model (never from parsing text);
the rationale is generated separately and may, for a weak model, name another label.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from reasoning.audio import SAMPLE_RATE
from reasoning.checkpoint import load_for_inference
from reasoning.data import AudioCache, Collator, PromptBuilder
from reasoning.errors import UserError

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".mp3", ".m4a", ".mp4", ".opus", ".aiff", ".aif"}


class Explainer:
    """A loaded checkpoint that predicts, in batches, for manifest-like rows."""

    def __init__(self, checkpoint: str | Path, batch_size: int = 16, max_new_tokens: int = 48,
                 top_k: int = 3):
        self.model, self.tokenizer, self.recipe, self.checkpoint = load_for_inference(checkpoint)
        self.labels = list(self.recipe.data.labels)
        self.builder = PromptBuilder(self.tokenizer, self.labels, self.model.num_audio_tokens)
        # Clips are read once each; no need to keep them.
        self.collate = Collator(self.builder, AudioCache(self.recipe.model.speech.max_seconds, keep=False))
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.top_k = top_k

    @torch.no_grad()
    def predict_batch(self, rows: list[dict], rationale: bool = True) -> list[dict]:
        m, b = self.model, self.builder
        emo = self.collate(rows, "emotion")
        audio = m.encode_audio(emo["waves"], emo["wave_lengths"])  # encoded once for all prompts
        probs = m.score_labels(emo, m.embed_prompt(emo, audio)).exp().numpy()
        va_in = {**emo, **self.collate.prompt_batch("va", len(rows))}
        va = m.predict_va(va_in, m.embed_prompt(va_in, audio)).numpy()
        texts = [None] * len(rows)
        if rationale:
            r_in = {**emo, **self.collate.prompt_batch("rationale", len(rows))}
            new = m.generate(r_in, eos_token_id=b.turn_end_ids, pad_token_id=b.pad_id,
                             max_new_tokens=self.max_new_tokens, prompt_embeds=m.embed_prompt(r_in, audio))
            texts = [self.tokenizer.decode(t, skip_special_tokens=True).strip() for t in new]
        out = []
        for i, row in enumerate(rows):
            order = np.argsort(-probs[i])
            out.append({
                "id": row["id"],
                "clip": row["audio"],
                "duration": round(float(emo["wave_lengths"][i]) / SAMPLE_RATE, 3),
                "emotion": self.labels[order[0]],
                "probabilities": {label: round(float(p), 4) for label, p in zip(self.labels, probs[i])},
                "top_k": [[self.labels[j], round(float(probs[i, j]), 4)] for j in order[: self.top_k]],
                "valence": round(float(va[i, 0]), 4),
                "arousal": round(float(va[i, 1]), 4),
                "rationale": texts[i],
            })
        return out

    def predict(self, rows: list[dict], rationale: bool = True, progress: bool = True) -> list[dict]:
        out = []
        for i in tqdm(range(0, len(rows), self.batch_size), desc="explain", disable=not progress):
            out += self.predict_batch(rows[i:i + self.batch_size], rationale)
        return out


def stated_emotion(text: str | None, labels: list[str]) -> str | None:
    """The label a rationale states in its leading ``label:`` (None when it states none of
    ``labels``). Used to check rationales against predictions, never to predict."""
    head = (text or "").split(":", 1)[0].strip().lower()
    return head if head in labels else None


def prediction_dict(labels: list[str], preds: list[dict]) -> dict:
    """Explainer outputs in the form ``emoreason eval`` consumes (see reasoning.evaluate)."""
    rationales = None
    if any(p["rationale"] is not None for p in preds):
        rationales = [{"text": p["rationale"], "writer": "model", "verdict": None,
                       "emotion": stated_emotion(p["rationale"], labels)} for p in preds]
    return {
        "label_set": labels,
        "labels": [p["emotion"] for p in preds],
        "scores": np.array([[p["probabilities"][label] for label in labels] for p in preds]),
        "valence": [p["valence"] for p in preds],
        "arousal": [p["arousal"] for p in preds],
        "rationales": rationales,
    }


def verify_rationales(pred: dict, rows: list[dict]) -> dict:
    """Check each generated rationale against its row's measured evidence, gold label and
    transcript (rows without evidence or label stay unverified)."""
    from reasoning.rationales.verify import verify

    for rec, row in zip(pred["rationales"] or [], rows):
        ev = row.get("evidence")
        if rec["text"] and isinstance(ev, dict) and not ev.get("error") and row.get("emotion"):
            v = verify(rec["text"], ev, row["emotion"], row.get("transcript"))
            rec["verdict"] = {"passed": v.passed, "claims": v.claims, "emotion": rec["emotion"]}
    return pred


def predict_rows(checkpoint: str | Path, rows: list[dict], rationale: bool = True,
                 batch_size: int = 16) -> dict:
    """Predictions for manifest rows, in the form ``emoreason eval`` consumes, with the
    generated rationales checked by the verifier."""
    explainer = Explainer(checkpoint, batch_size)
    return verify_rationales(prediction_dict(explainer.labels, explainer.predict(rows, rationale)), rows)


def find_clips(paths: list[str]) -> list[Path]:
    """Audio files among ``paths``; folders are searched recursively."""
    clips = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_EXTENSIONS)
            if not found:
                raise UserError(f"{p}: no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}) in this folder.")
            clips += found
        elif p.is_file():
            clips.append(p)
        else:
            raise UserError(f"{p}: no such file or folder.")
    return clips


def format_summary(pred: dict) -> str:
    top = ", ".join(f"{label} {p:.2f}" for label, p in pred["top_k"])
    lines = [f"{pred['clip']} ({pred['duration']:.2f} s)",
             f"  emotion    {pred['emotion']}  (top: {top})",
             f"  valence    {pred['valence']:+.2f}   arousal {pred['arousal']:+.2f}"]
    if pred["rationale"] is not None:
        lines.append(f"  rationale  {pred['rationale']}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", help="audio files or folders of them")
    parser.add_argument("--checkpoint", required=True, help="a checkpoint folder, or a run folder (its latest)")
    parser.add_argument("--json", action="store_true", help="print JSON (one object per clip, in a list)")
    parser.add_argument("--batch-size", type=int, default=16, help="clips per forward pass")
    parser.add_argument("--top-k", type=int, default=3, help="labels listed per clip")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="length limit of the rationale")
    parser.add_argument("--no-rationale", action="store_true", help="skip rationale generation")


def run(args: argparse.Namespace) -> int:
    clips = find_clips(args.paths)
    explainer = Explainer(args.checkpoint, args.batch_size, args.max_new_tokens, args.top_k)
    rows = [{"id": c.stem, "audio": str(c)} for c in clips]
    preds = explainer.predict(rows, rationale=not args.no_rationale, progress=not args.json)
    if args.json:
        print(json.dumps(preds, indent=2, ensure_ascii=False))
    else:
        print("\n\n".join(format_summary(p) for p in preds))
    return 0
