"""``emoreason explain PATH... --checkpoint DIR``: the emotion of each clip, every label's
probability, valence and arousal (and dominance, for a VAD head), and a generated rationale.

Probabilities come from scoring each label under the model (never from parsing text);
the rationale is generated separately and may, for a weak model, name another label.

The recipe's ``prompt`` section decides what the prompts hold besides the audio, here as in
training: ``transcript: gold`` the clip's manifest transcript, ``asr`` the model's own
transcript (a first, greedy ASR pass with the same model); ``two_step`` the VA head's
prediction ("Valence +0.3, arousal -0.2.") before the label is scored, and with
``oracle=True`` also the label scores under the gold valence and arousal.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from reasoning.audio import SAMPLE_RATE, duration, load_audio
from reasoning.training.checkpoint import add_device_argument, load_for_inference, resolve_device
from reasoning.tasks.collate import AudioCache, Collator, to_device
from reasoning.tasks.prompts import PromptBuilder
from reasoning.errors import AudioError, UserError
from reasoning.manifest import DIMENSIONS

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".mp3", ".m4a", ".mp4", ".opus", ".aiff", ".aif"}


class Explainer:
    """A loaded checkpoint that predicts, in batches, for manifest-like rows."""

    def __init__(self, checkpoint: str | Path, batch_size: int = 16, max_new_tokens: int = 48,
                 top_k: int = 3, device: str | None = None):
        self.device = resolve_device(device)
        self.model, self.tokenizer, self.recipe, self.checkpoint = load_for_inference(checkpoint, self.device)
        self.labels = list(self.recipe.data.labels)
        self.prompt = self.recipe.prompt
        self.builder = PromptBuilder.for_recipe(self.tokenizer, self.recipe, self.model.num_audio_tokens)
        # Clips are read once each; no need to keep them. Never augmented: no epoch is passed.
        self.collate = Collator(self.builder, AudioCache(max_mb=0), self.prompt.transcript,
                                self.prompt.two_step, self.prompt.rationale_order,
                                max_seconds=self.recipe.model.speech.max_seconds,
                                dimensions=tuple(self.recipe.heads.dimensions), evidence=self.prompt.evidence)
        self.dimensions = list(self.recipe.heads.dimensions)
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.top_k = top_k

    def transcripts(self, rows: list[dict], batch: dict, audio: torch.Tensor) -> list[str] | None:
        """The transcript each prompt carries (``prompt.transcript``): None for ``none``, the
        rows' own for ``gold``, the model's greedy transcription for ``asr``."""
        mode = self.prompt.transcript
        if mode == "gold":
            missing = [r["id"] for r in rows if not (r.get("transcript") or "").strip()]
            if missing:
                raise UserError(f"prompt.transcript is `gold` in the recipe of {self.checkpoint}, but clip "
                                f"{missing[0]} has no transcript: give manifest rows with transcripts, or "
                                "use a model trained with prompt.transcript: asr or none.")
            return [r["transcript"].strip() for r in rows]
        if mode == "asr":
            m, b = self.model, self.builder
            a_in = {**batch, **self._prompts("asr", [{} for _ in rows])}
            new = m.generate(a_in, eos_token_id=b.turn_end_ids, pad_token_id=b.pad_id,
                             max_new_tokens=self.prompt.asr_max_tokens, prompt_embeds=m.embed_prompt(a_in, audio))
            return [self.tokenizer.decode(t, skip_special_tokens=True).strip() for t in new]
        return None

    def _label_probs(self, batch: dict, contexts: list[dict], audio: torch.Tensor, with_va: bool = False):
        """Label probabilities, and with ``with_va`` (probabilities, VA) from the same pass."""
        e_in = {**batch, **self._prompts("emotion", contexts)}
        out = self.model.score_labels(e_in, self.model.embed_prompt(e_in, audio), with_va=with_va)
        return (out[0].exp().cpu().numpy(), out[1].cpu().numpy()) if with_va else out.exp().cpu().numpy()

    def _prompts(self, task: str, contexts: list[dict]) -> dict:
        return to_device(self.collate.prompt_batch(task, contexts), self.device)

    @torch.no_grad()
    def predict_batch(self, rows: list[dict], rationale: bool = True, oracle: bool = False) -> list[dict]:
        m, b = self.model, self.builder
        emo = to_device(self.collate(rows, "emotion", contexts=[{} for _ in rows]), self.device)
        audio = m.encode_audio(emo["waves"], emo["wave_lengths"])  # encoded once for all prompts
        transcripts = self.transcripts(rows, emo, audio)
        # One context for the emotion, va and rationale prompts: they carry the same cues.
        ctx = [{"transcript": transcripts[i] if transcripts is not None else None,
                "cues": self.collate.cues(row, "emotion")} for i, row in enumerate(rows)]
        if self.prompt.two_step:  # the label is scored after the predicted valence and arousal
            va_in = {**emo, **self._prompts("va", ctx)}
            va = m.predict_va(va_in, m.embed_prompt(va_in, audio)).cpu().numpy()
            ctx = [{**c, "va": (float(v[0]), float(v[1]))} for c, v in zip(ctx, va)]
            probs = self._label_probs(emo, ctx, audio)
        else:  # the VA head reads the audio positions of the label prompt's pass
            probs, va = self._label_probs(emo, ctx, audio, with_va=True)
        oracle_probs = None
        if oracle and self.prompt.two_step:
            gold = [{**c, "va": (float(r["valence"]), float(r["arousal"]))}
                    if r.get("valence") is not None and r.get("arousal") is not None else c
                    for c, r in zip(ctx, rows)]
            missing = sum(g is c for g, c in zip(gold, ctx))
            if missing:
                log.warning("oracle VA: %d of %d clips have no gold valence and arousal; they keep the "
                            "predicted values", missing, len(rows))
            oracle_probs = self._label_probs(emo, gold, audio)
        texts = [None] * len(rows)
        if rationale:
            r_in = {**emo, **self._prompts("rationale", ctx)}
            new = m.generate(r_in, eos_token_id=b.turn_end_ids, pad_token_id=b.pad_id,
                             max_new_tokens=self.max_new_tokens, prompt_embeds=m.embed_prompt(r_in, audio))
            texts = [self.tokenizer.decode(t, skip_special_tokens=True).strip() for t in new]
        out = []
        for i, row in enumerate(rows):
            order = np.argsort(-probs[i])
            extra = {}
            if transcripts is not None:
                extra["transcript"] = transcripts[i]
            if oracle_probs is not None:
                extra["oracle_va"] = {"emotion": self.labels[int(np.argmax(oracle_probs[i]))],
                                      "probabilities": {label: round(float(p), 4)
                                                        for label, p in zip(self.labels, oracle_probs[i])}}
            out.append({
                "id": row["id"],
                "clip": row["audio"],
                "duration": round(float(emo["wave_lengths"][i]) / SAMPLE_RATE, 3),
                "emotion": self.labels[order[0]],
                "probabilities": {label: round(float(p), 4) for label, p in zip(self.labels, probs[i])},
                "top_k": [[self.labels[j], round(float(probs[i, j]), 4)] for j in order[: self.top_k]],
                **{dim: round(float(va[i, k]), 4) for k, dim in enumerate(self.dimensions)},
                "rationale": texts[i],
                **extra,
            })
        return out

    def predict(self, rows: list[dict], rationale: bool = True, progress: bool = True,
                oracle: bool = False) -> list[dict]:
        """Predictions for ``rows`` in batches; ``oracle``: also score the labels under the
        gold valence and arousal (two-step models only), under each prediction's ``oracle_va``.

        Batches hold clips of similar duration, so the encoders pad little; predictions
        come back in the order of ``rows``."""
        order = sorted(range(len(rows)), key=lambda i: duration(rows[i]))
        out: list[dict | None] = [None] * len(rows)
        for i in tqdm(range(0, len(rows), self.batch_size), desc="explain", disable=not progress):
            chunk = order[i:i + self.batch_size]
            for j, pred in zip(chunk, self.predict_batch([rows[j] for j in chunk], rationale, oracle)):
                out[j] = pred
        return out

    def prompt_meta(self, va: str | None = None) -> dict:
        """What the prompts held, for reports: transcript mode, VA in the prompt, rationale order,
        measured cues."""
        p = self.prompt
        return {"transcript": p.transcript, "evidence": p.evidence,
                "va_in_prompt": (va or "predicted") if p.two_step else "none",
                "rationale_order": p.rationale_order}


_SO_LABEL = re.compile(r"(?:^|[\s,;.])so:\s*([a-z][a-z0-9 _'-]{0,40}?)\s*[.!]?\s*$")


def stated_emotion(text: str | None, labels: list[str]) -> str | None:
    """The label a rationale states, in its leading ``label:`` or its closing ``so: label``
    (``prompt.rationale_order``); None when it states none of ``labels``. Used to check
    rationales against predictions, never to predict."""
    text = (text or "").strip().lower()
    head = text.split(":", 1)[0].strip()
    if head in labels:
        return head
    tail = _SO_LABEL.search(text)
    return tail.group(1) if tail and tail.group(1) in labels else None


def label_first(text: str, labels: list[str]) -> str:
    """A ``"cues, so: label"`` rationale as ``"label: cues."``, the form the verifier reads."""
    if text.split(":", 1)[0].strip().lower() in labels:
        return text
    tail = _SO_LABEL.search(text.strip().lower())
    if not tail or tail.group(1) not in labels:
        return text
    body = text.strip()[: tail.start()].strip().rstrip(",;").strip()
    return f"{tail.group(1)}: {body}." if body else f"{tail.group(1)}:"


def prediction_dict(labels: list[str], preds: list[dict], prompt: dict | None = None) -> dict:
    """Explainer outputs in the form ``emoreason eval`` consumes (see reasoning.evaluation.evaluate).

    ``prompt`` (:meth:`Explainer.prompt_meta`) says what the prompts held. With model
    transcripts (``transcript: asr``) they come back as ``transcripts`` (scored by WER);
    oracle-VA scores as a second prediction dict under ``oracle_va``.
    """
    rationales = None
    if any(p["rationale"] is not None for p in preds):
        rationales = [{"text": p["rationale"], "writer": "model", "verdict": None,
                       "emotion": stated_emotion(p["rationale"], labels)} for p in preds]
    out = {
        "label_set": labels,
        "labels": [p["emotion"] for p in preds],
        "scores": np.array([[p["probabilities"][label] for label in labels] for p in preds]),
        **{dim: [p[dim] for p in preds] for dim in DIMENSIONS if preds and dim in preds[0]},
        "rationales": rationales,
    }
    if prompt is not None:
        out["prompt"] = prompt
        if prompt.get("transcript") == "asr":
            out["transcripts"] = [p.get("transcript") or "" for p in preds]
    if preds and all("oracle_va" in p for p in preds):
        out["oracle_va"] = {
            "label_set": labels,
            "labels": [p["oracle_va"]["emotion"] for p in preds],
            "scores": np.array([[p["oracle_va"]["probabilities"][label] for label in labels] for p in preds]),
            **{dim: out[dim] for dim in DIMENSIONS if dim in out}, "rationales": None,
            **({"prompt": {**prompt, "va_in_prompt": "gold"}} if prompt is not None else {}),
        }
    return out


def other_clips(rows: list[dict]) -> list[int | None]:
    """For each row, another clip of the same speaker whose evidence its rationale is also
    checked against (clip-specific grounding): the next one by id, cyclically, with measured
    evidence and another gold label, else with the same label; None when the speaker has no
    other clip with evidence. Deterministic: it depends on the rows' ids only."""
    from reasoning.evidence.measure import has_evidence

    by_speaker: dict = {}
    for i in sorted(range(len(rows)), key=lambda i: str(rows[i]["id"])):
        if has_evidence(rows[i]):
            by_speaker.setdefault((rows[i].get("dataset"), rows[i].get("speaker")), []).append(i)
    out: list[int | None] = []
    for i, row in enumerate(rows):
        clips = by_speaker.get((row.get("dataset"), row.get("speaker")), [])
        after = sorted((j for j in clips if j != i), key=lambda j: (str(rows[j]["id"]) <= str(row["id"]),
                                                                    str(rows[j]["id"])))
        other = [j for j in after if rows[j].get("emotion") != row.get("emotion")] + after
        out.append(other[0] if other and row.get("speaker") is not None else None)
    return out


def verify_rationales(pred: dict, rows: list[dict]) -> dict:
    """Check each generated rationale against its row's measured evidence, gold label and
    transcript (rows without evidence or label stay unverified), and, for clip-specific
    grounding, against the evidence of another clip of the same speaker (:func:`other_clips`;
    the same gold label and transcript, so only the measured cues differ): each record gets
    the verdict fields (:func:`reasoning.rationales.verify.verdict_fields`), ``passed_other_clip``
    (None without such a clip) and ``other_clip``."""
    from reasoning.evidence.measure import has_evidence
    from reasoning.rationales.verify import verdict_fields, verify

    others = other_clips(rows)
    for rec, row, other in zip(pred["rationales"] or [], rows, others):
        if rec["text"] and has_evidence(row) and row.get("emotion"):
            text = label_first(rec["text"], pred["label_set"])
            v = verify(text, row["evidence"], row["emotion"], row.get("transcript"))
            rec.update(verdict_fields(v), passed_other_clip=None, other_clip=None)
            if other is not None:
                o = verify(text, rows[other]["evidence"], row["emotion"], row.get("transcript"))
                rec.update(passed_other_clip=o.passed, other_clip=rows[other]["id"])
    return pred


def verified_predictions(explainer: Explainer, rows: list[dict], rationale: bool = True,
                         progress: bool = True) -> dict:
    """``explainer``'s predictions for manifest rows, in the form ``emoreason eval`` consumes,
    with the generated rationales checked by the verifier."""
    preds = explainer.predict(rows, rationale, progress=progress, oracle=explainer.prompt.two_step)
    return verify_rationales(prediction_dict(explainer.labels, preds, explainer.prompt_meta()), rows)


def predict_rows(checkpoint: str | Path, rows: list[dict], rationale: bool = True,
                 batch_size: int = 16, device: str | None = None) -> dict:
    """:func:`verified_predictions` of the model in ``checkpoint``."""
    return verified_predictions(Explainer(checkpoint, batch_size, device=device), rows, rationale)


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
             f"  valence    {pred['valence']:+.2f}   arousal {pred['arousal']:+.2f}"
             + (f"   dominance {pred['dominance']:+.2f}" if "dominance" in pred else "")]
    if pred.get("transcript") is not None:
        lines.append(f"  transcript {pred['transcript']}")
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
    add_device_argument(parser)


def readable_clips(clips: list[Path]) -> tuple[list[Path], list[str]]:
    """The clips whose audio can be read, and a message for each one that cannot."""
    good, bad = [], []
    for clip in clips:
        try:
            load_audio(clip)  # an empty clip is an AudioError too
            good.append(clip)
        except AudioError as err:
            bad.append(str(err))
    return good, bad


def measure_clips(explainer: Explainer, rows: list[dict]) -> list[dict]:
    """``rows`` with evidence, each clip measured on its own against the corpus the model was
    trained on (as ``emoreason demo`` does): a clip given to ``explain`` has no speaker
    baseline."""
    from reasoning.evidence import measure_alone
    from reasoning.export import training_evidence

    reference, source = training_evidence(explainer.checkpoint, explainer.recipe)
    if not reference:
        raise UserError(f"{explainer.checkpoint}: its prompts carry measured cues (prompt.evidence), which are "
                        f"z-scores against the training corpus, but there is none to read: {source}.")
    log.info("cues of each clip against the %d training clips of %s", len(reference), source)
    return [measure_alone(row, reference)[0] for row in rows]


def run(args: argparse.Namespace) -> int:
    """Explain every readable clip. Clips are checked before the model loads; one that cannot
    be read is reported on stderr and the others go on (exit status 1 then). Progress goes to
    stderr, so ``--json`` output on stdout stays clean."""
    resolve_device(args.device)  # a wrong --device fails before any clip is read
    clips, bad = readable_clips(find_clips(args.paths))
    for message in bad:
        print(f"emoreason explain: skipped: {message}", file=sys.stderr)
    if not clips:
        raise UserError(f"none of the {len(bad)} clip(s) could be read (see above).")
    explainer = Explainer(args.checkpoint, args.batch_size, args.max_new_tokens, args.top_k, args.device)
    rows = [{"id": c.stem, "audio": str(c)} for c in clips]
    if explainer.prompt.evidence != "none":  # the prompts carry the measured cues: measure the clips
        rows = measure_clips(explainer, rows)
    preds = explainer.predict(rows, rationale=not args.no_rationale, progress=True)
    if args.json:
        print(json.dumps(preds, indent=2, ensure_ascii=False))
    else:
        print("\n\n".join(format_summary(p) for p in preds))
    return 1 if bad else 0
