"""Task prompts and targets: what the model is asked for each task, and the text it answers.

Every prompt is chat-formatted with one ``<audio>`` placeholder, which becomes the positions
the model fills with the projected audio embeddings; a row's target text for each task
(``asr``, ``emotion``, ``va``, ``rationale``) comes from its manifest fields.
"""

from __future__ import annotations

import torch

from reasoning.manifest import DIMENSIONS

AUDIO_PLACEHOLDER = "<audio>"
INSTRUCTIONS = {
    "asr": "Transcribe the speech.",
    "emotion": "Which emotion does the speaker express? Answer with one of: {labels}.",
    "va": "Rate the valence and arousal of the speaker.",
    "rationale": "Which emotion does the speaker express, and what in the voice and the words shows it?",
}
# Tasks whose prompts may carry the transcript (`prompt.transcript`) and the measured cues
# (`prompt.evidence`): never asr, whose target the transcript is.
TRANSCRIPT_TASKS = ("emotion", "va", "rationale")
# Tasks whose prompts carry valence and arousal in two-step mode (`prompt.two_step`): those that
# name the label; never va, which predicts them.
VA_PROMPT_TASKS = ("emotion", "rationale")
# The VA head's dimensions unless the recipe's `heads.dimensions` adds dominance.
VA_DIMENSIONS = DIMENSIONS[:2]


def va_text(valence: float, arousal: float) -> str:
    """How valence and arousal are written into a two-step prompt: ``Valence +0.3, arousal -0.2.``"""
    return f"Valence {valence:+.1f}, arousal {arousal:+.1f}."


def order_rationale(text: str, label: str, order: str) -> str:
    """A rationale target in ``order``: ``label_then_rationale`` keeps the manifest's
    ``"angry: a loud voice."``; ``rationale_then_label`` gives ``"a loud voice, so: angry"``."""
    if order == "label_then_rationale":
        return text
    head, sep, body = text.partition(":")
    if not sep or head.strip().lower() != label.lower():
        body = text
    body = body.strip().rstrip(".").strip()
    return f"{body}, so: {label}" if body else f"so: {label}"


def task_target(task: str, row: dict, labels: list[str],
                dimensions: tuple[str, ...] | list[str] = VA_DIMENSIONS) -> str | None:
    """The target text of ``row`` for ``task``, or None when the row cannot serve it (a
    ``va`` row needs a value for each of the VA head's ``dimensions``)."""
    if task == "asr":
        return (row.get("transcript") or "").strip() or None
    if task == "emotion":
        return row["emotion"] if row.get("emotion") in labels else None
    if task == "va":
        return "" if all(row.get(d) is not None for d in dimensions) else None
    if task == "rationale":
        rationale = row.get("rationale") or {}
        text = (rationale.get("text") or "").strip()
        return text if text and (not labels or row.get("emotion") in labels) else None
    raise ValueError(task)


class PromptBuilder:
    """Chat-formatted prompts with one audio placeholder, tokenised once per task.

    The placeholder becomes ``num_audio_tokens`` positions, which the model fills with
    the projected audio embeddings.
    """

    def __init__(self, tokenizer, labels: list[str], num_audio_tokens: int, system: str | None = None,
                 instructions: dict[str, str] | None = None):
        if tokenizer.chat_template is None:
            raise ValueError("the tokenizer has no chat template; use an instruct model's tokenizer")
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.num_audio_tokens = num_audio_tokens
        # Templates such as SmolLM2's and Qwen2.5's add a default system message of ~20 tokens
        # when none is given: a third of a short prompt, run through the LLM at every step.
        self.system = [] if system is None else [{"role": "system", "content": system}]
        self.instructions = {**INSTRUCTIONS, **(instructions or {})}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.turn_end_ids = self._turn_end_ids()
        self._prompts: dict[str, tuple[list[int], list[bool]]] = {}

    @classmethod
    def for_recipe(cls, tokenizer, recipe, num_audio_tokens: int) -> "PromptBuilder":
        """The prompts of ``recipe`` (its labels and ``prompt`` section) for this tokenizer."""
        p = recipe.prompt
        return cls(tokenizer, recipe.data.labels, num_audio_tokens, p.system, p.instructions)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _turn_end_ids(self) -> list[int]:
        """The tokens that close an assistant turn in this chat template (e.g. <|im_end|>)."""
        mark = "\u2403END\u2403"
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": "x"}, {"role": "assistant", "content": mark}], tokenize=False)
        tail = text[text.index(mark) + len(mark):].strip()
        ids = self._encode(tail) if tail else []
        return ids or [self.tokenizer.eos_token_id]

    def prompt(self, task: str, transcript: str | None = None,
               va: tuple[float, float] | None = None, cues: str | None = None) -> tuple[list[int], list[bool]]:
        """Token ids of the prompt for ``task`` and which positions are audio.

        ``transcript`` and then ``cues`` (the measured cues in words) are written before the
        audio, so that the audio positions (which the VA head pools) attend to them; ``va``
        (two-step mode) after the audio, before the instruction. Without any of them, the
        prompt is the same for every clip.
        """
        key = (task, transcript, va, cues)
        if key not in self._prompts:
            instruction = self.instructions[task].format(labels=", ".join(self.labels))
            content = f"{AUDIO_PLACEHOLDER}\n{instruction}"
            if va is not None:
                content = f"{AUDIO_PLACEHOLDER}\n{va_text(*va)}\n{instruction}"
            if cues is not None:
                content = f"{cues}\n{content}"
            if transcript is not None:
                content = f'Transcript: "{transcript.replace(AUDIO_PLACEHOLDER, " ")}"\n{content}'
            text = self.tokenizer.apply_chat_template(
                [*self.system, {"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)
            before, after = text.split(AUDIO_PLACEHOLDER)
            head, tail = self._encode(before), self._encode(after)
            ids = head + [self.pad_id] * self.num_audio_tokens + tail
            audio = [False] * len(head) + [True] * self.num_audio_tokens + [False] * len(tail)
            if transcript is not None or va is not None or cues is not None:
                return ids, audio  # per clip: not worth keeping
            self._prompts[key] = (ids, audio)
        return self._prompts[key]

    def target(self, text: str) -> list[int]:
        return self._encode(text) + self.turn_end_ids

    def label_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(L, C) candidate ids (label + end of turn), right-padded, and their mask."""
        seqs = [self.target(label) for label in self.labels]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(seqs), width, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        return ids, mask
