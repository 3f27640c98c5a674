"""Batch collation: manifest rows of one task -> the tensors the model takes.

The clips are read (and kept in memory, :class:`AudioCache`), augmented when training and cut,
the prompts of :mod:`reasoning.tasks.prompts` tokenised and left-padded, and the targets padded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from reasoning.audio import SAMPLE_RATE, load_audio
from reasoning.model.cache import LRUCache
from reasoning.rationales.template import describe_cues
from reasoning.tasks.prompts import (TRANSCRIPT_TASKS, VA_DIMENSIONS, VA_PROMPT_TASKS, PromptBuilder, order_rationale,
                                     task_target)

log = logging.getLogger(__name__)


def cut_clip(wave: np.ndarray, max_seconds: float | None, name: str) -> np.ndarray:
    """The first ``max_seconds`` of ``wave`` (all of it when None), with a warning when cut."""
    if max_seconds is None or len(wave) <= max_seconds * SAMPLE_RATE:
        return wave
    log.warning("%s: %.1f s is longer than model.speech.max_seconds; using the first %.1f s",
                name, len(wave) / SAMPLE_RATE, max_seconds)
    return wave[: int(max_seconds * SAMPLE_RATE)]


class AudioCache:
    """Decoded clips, kept in memory up to ``max_mb`` (``data.audio_cache_mb``) and read
    from disk again once dropped as the least recently used; ``max_mb`` 0 keeps none."""

    def __init__(self, max_mb: float = 512.0):
        self.clips = LRUCache(int(max_mb * 2**20))

    def __call__(self, row: dict) -> np.ndarray:
        key = (row["audio"], row.get("start"), row.get("end"))
        wave = self.clips.get(key)
        if wave is None:
            wave = load_audio(row["audio"], row.get("start"), row.get("end"))
            self.clips.put(key, wave)
        return wave


@dataclass
class Collator:
    """Builds a model batch from manifest rows for one task (see :class:`DualEncoderLLM`).

    ``transcript``, ``evidence`` and ``two_step`` say what the prompts carry besides the audio
    (the recipe's ``prompt`` section); from the rows themselves (gold values, measured cues)
    unless the caller passes ``contexts``. Prompts that differ per clip are left-padded, so every prompt ends
    at the same position and the target or label follows it directly.

    ``augment(wave, key)`` (training only) changes a clip's waveform; it runs only for
    batches built with a training ``epoch`` and never when ``cached`` is True (encoder
    outputs read from a cache were computed from the clean clip).

    ``dimensions`` (the recipe's ``heads.dimensions``) are the columns of ``batch["va"]``,
    (B, D), NaN where a row has no value.

    ``descriptors`` (the openSMILE encoder's, with DataLoader workers): computed for each
    clip where the batch is collated, as ``batch["descriptors"]`` (frames, 25) arrays.
    """

    builder: PromptBuilder
    audio: AudioCache
    transcript: str = "none"
    two_step: bool = False
    rationale_order: str = "label_then_rationale"
    augment: Callable[[np.ndarray, str], np.ndarray] | None = None
    cached: bool = False
    max_seconds: float | None = None
    dimensions: tuple[str, ...] = VA_DIMENSIONS
    evidence: str = "none"
    descriptors: Callable[[np.ndarray], np.ndarray] | None = None

    def cues(self, row: dict, task: str) -> str | None:
        """The measured cues in words that ``task``'s prompt for ``row`` carries (``prompt.evidence``)."""
        if self.evidence == "none" or task not in TRANSCRIPT_TASKS:
            return None
        return describe_cues(row.get("evidence"))

    def context(self, row: dict, task: str) -> dict:
        """The gold prompt context of ``row`` for ``task``: ``{transcript, va, cues}`` (None: absent)."""
        ctx = {"transcript": None, "va": None, "cues": self.cues(row, task)}
        if self.transcript != "none" and task in TRANSCRIPT_TASKS:
            ctx["transcript"] = (row.get("transcript") or "").strip() or None
        if self.two_step and task in VA_PROMPT_TASKS and row.get("valence") is not None \
                and row.get("arousal") is not None:
            ctx["va"] = (float(row["valence"]), float(row["arousal"]))
        return ctx

    def prompt_batch(self, task: str, contexts: list[dict]) -> dict:
        """The prompts of ``task`` for clips with ``contexts`` (one ``{transcript, va, cues}``
        each), left-padded: input_ids, attention_mask, audio_mask (n, P)."""
        prompts = [self.builder.prompt(task, c.get("transcript"), c.get("va"), c.get("cues")) for c in contexts]
        width = max(len(ids) for ids, _ in prompts)
        n = len(prompts)
        out = {"input_ids": torch.full((n, width), self.builder.pad_id, dtype=torch.long),
               "attention_mask": torch.zeros(n, width, dtype=torch.long),
               "audio_mask": torch.zeros(n, width, dtype=torch.bool)}
        for i, (ids, audio) in enumerate(prompts):
            out["input_ids"][i, width - len(ids):] = torch.tensor(ids)
            out["attention_mask"][i, width - len(ids):] = 1
            out["audio_mask"][i, width - len(ids):] = torch.tensor(audio)
        return out

    def wave(self, row: dict, epoch: int | None = None) -> np.ndarray:
        """The clip of ``row``, augmented when this is a training batch (``epoch`` given),
        then cut to ``max_seconds``: in the other order a clip stretched by tempo or speed
        would outgrow the limit."""
        wave = self.audio(row)
        if epoch is not None and self.augment is not None and not self.cached:
            wave = self.augment(wave, f"{epoch}:{row['id']}")
        return cut_clip(wave, self.max_seconds, row["audio"])

    def collate_items(self, items: list[tuple[str, int, dict]]) -> dict:
        """The training batch of ``(task, epoch, row)`` items of one task and epoch, as
        :class:`RowDataset` gives them to the DataLoader's ``collate_fn``."""
        task, epoch = items[0][0], items[0][1]
        return self([row for _, _, row in items], task, epoch=epoch)

    def __call__(self, rows: list[dict], task: str, contexts: list[dict] | None = None,
                 epoch: int | None = None) -> dict:
        b = self.builder
        waves = [torch.from_numpy(np.ascontiguousarray(self.wave(r, epoch), dtype=np.float32)) for r in rows]
        if contexts is None:
            contexts = [self.context(r, task) for r in rows]
        n = len(rows)
        lengths = torch.tensor([len(w) for w in waves])
        batch = {
            "task": task,
            "ids": [r["id"] for r in rows],
            "clips": [{"audio": r["audio"], "start": r.get("start"), "end": r.get("end")} for r in rows],
            "waves": torch.nn.utils.rnn.pad_sequence(waves, batch_first=True),
            "wave_lengths": lengths,
            # padded samples per real sample: what length grouping keeps small
            "padding": float(n * lengths.max() - lengths.sum()) / float(lengths.sum()),
            "gender": torch.tensor([{"f": 0, "m": 1}.get(r.get("gender"), -1) for r in rows]),
            **self.prompt_batch(task, contexts),
        }
        if self.descriptors is not None:
            batch["descriptors"] = [self.descriptors(w.numpy()) for w in waves]
        texts = [task_target(task, r, b.labels, self.dimensions) or "" for r in rows]
        if task == "rationale":
            texts = [order_rationale(t, r.get("emotion") or "", self.rationale_order) if t else t
                     for t, r in zip(texts, rows)]
        targets = [b.target(t) if task != "va" else [] for t in texts]
        width = max(len(t) for t in targets)
        batch["target_ids"] = torch.full((n, width), b.pad_id, dtype=torch.long)
        batch["target_mask"] = torch.zeros(n, width, dtype=torch.long)
        for i, t in enumerate(targets):
            batch["target_ids"][i, : len(t)] = torch.tensor(t, dtype=torch.long)
            batch["target_mask"][i, : len(t)] = 1
        if task in ("va", "emotion"):  # NaN: no target (emotion rows need none)
            batch["va"] = torch.tensor([[_number(r.get(d)) for d in self.dimensions] for r in rows],
                                       dtype=torch.float32)
        if task == "emotion" and b.labels:
            batch["label_ids"], batch["label_mask"] = b.label_tensors()
            batch["votes"] = torch.tensor([vote_distribution(r, b.labels) for r in rows])
            # -1: a clip with no label of the set (prediction); training rows always have one
            batch["label_index"] = torch.tensor([b.labels.index(r["emotion"]) if r.get("emotion") in b.labels
                                                 else -1 for r in rows])
        return batch


def to_device(batch: dict, device) -> dict:
    """``batch`` with its tensors on ``device`` (the rest as it is); a copy from pinned
    memory (the training DataLoader's, on a GPU) does not wait for the device."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def vote_distribution(row: dict, labels: list[str]) -> list[float]:
    """The annotators' votes over ``labels`` as probabilities (votes for labels outside the
    set are dropped); a one-hot of the gold label when no vote falls in the set."""
    votes = row.get("emotion_votes") or {}
    counts = np.array([float(votes.get(label, 0)) for label in labels])
    if counts.sum() <= 0:
        counts = np.array([float(label == row.get("emotion")) for label in labels])
    return (counts / max(counts.sum(), 1e-9)).tolist()
