"""Task examples, the seeded task schedule, and batch collation.

Task alternation lives here, not in the training loop: :class:`TaskSchedule` turns the
manifest rows usable by each task into an ordered list of single-task batches per epoch,
as a pure function of ``(seed, epoch)``. A resumed run therefore rebuilds the same plan
and skips the batches it has done. :func:`schedule_loader` serves a plan through a
``torch.utils.data.DataLoader`` (workers, prefetch) whose batch sampler replays it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from reasoning.audio import SAMPLE_RATE, load_audio
from reasoning.model.cache import LRUCache
from reasoning.manifest import DIMENSIONS
from reasoning.prepare.splits import balanced_subset, example_weights
from reasoning.rationales.template import describe_cues

log = logging.getLogger(__name__)

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

    def __init__(self, tokenizer, labels: list[str], num_audio_tokens: int, system: str | None = None):
        if tokenizer.chat_template is None:
            raise ValueError("the tokenizer has no chat template; use an instruct model's tokenizer")
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.num_audio_tokens = num_audio_tokens
        # Templates such as SmolLM2's and Qwen2.5's add a default system message of ~20 tokens
        # when none is given: a third of a short prompt, run through the LLM at every step.
        self.system = [] if system is None else [{"role": "system", "content": system}]
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.turn_end_ids = self._turn_end_ids()
        self._prompts: dict[str, tuple[list[int], list[bool]]] = {}

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
            instruction = INSTRUCTIONS[task].format(labels=", ".join(self.labels))
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
        then cut to ``max_seconds``: cut first, a stretched clip could outgrow the limit."""
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


GROUP_BATCHES = 50  # batches per length-sorted chunk (see TaskSchedule)


class TaskSchedule:
    """Which task and which examples each step of an epoch uses.

    * ``round_robin``: tasks take turns, in recipe order, until each has used its examples.
    * ``weighted``: each step draws a task with probability ∝ (weight × examples)^(1/T);
      as many steps as there are batches in all tasks together.
    * ``phased``: epoch e trains only the tasks and parts of ``phases[e % len(phases)]``;
      the last epoch is joint (every task, every part).

    ``balance`` (emotion task only, given the ``labels`` of the examples): ``undersample``
    every label to the rarest one's count, or ``weighted`` draws with replacement by inverse
    label frequency; both are drawn anew each epoch.

    With ``durations`` (seconds per example), batches are grouped by length: the shuffled
    examples are cut into chunks of ``GROUP_BATCHES`` batches, each chunk is sorted by
    duration and split into batches, and the batches are shuffled. Clips of a batch then
    have similar lengths, so little is padded, while the order stays random.

    Batches are global: ``batch_size × world_size`` examples, of which rank r takes every
    ``world_size``-th, so every process runs the same task at the same step.
    """

    def __init__(self, examples: dict[str, list[int]], weights: dict[str, float], batch_size: int,
                 schedule: str = "round_robin", temperature: float = 1.0, phases: list | None = None,
                 epochs: int = 1, seed: int = 0, world_size: int = 1,
                 labels: dict[int, str] | None = None, balance: str = "none",
                 durations: list[float] | None = None):
        self.examples = {t: list(v) for t, v in examples.items() if v}
        self.weights = weights
        self.batch_size = batch_size
        self.schedule = schedule
        self.temperature = temperature
        self.phases = phases or []
        self.epochs = epochs
        self.seed = seed
        self.world_size = world_size
        self.labels = labels or {}
        self.balance = balance
        self.durations = durations

    def phase(self, epoch: int) -> dict:
        """The tasks and parts of ``epoch`` (all of them outside ``phased``)."""
        if self.schedule != "phased" or epoch == self.epochs - 1:
            return {"tasks": list(self.examples), "train": None}
        return self.phases[epoch % len(self.phases)]

    def _task_batches(self, task: str, rng: np.random.Generator) -> list[list[int]]:
        idx = self.examples[task]
        if task == "emotion" and self.balance != "none":
            rows = [{"i": i, "emotion": self.labels[i]} for i in idx]
            if self.balance == "undersample":
                idx = [r["i"] for r in balanced_subset(rows, seed=int(rng.integers(2**31)))]
            else:
                w = np.array(example_weights(rows))
                idx = rng.choice(idx, size=len(idx), replace=True, p=w / w.sum()).tolist()
        idx = rng.permutation(idx).tolist()
        size = self.batch_size * self.world_size
        if self.world_size > 1 and len(idx) % self.world_size:  # equal shares on every rank
            idx += idx[: self.world_size - len(idx) % self.world_size]
        if self.durations is None:
            return [idx[i:i + size] for i in range(0, len(idx), size)]
        batches = []
        for start in range(0, len(idx), size * GROUP_BATCHES):
            chunk = sorted(idx[start:start + size * GROUP_BATCHES], key=self.durations.__getitem__)
            batches += [chunk[i:i + size] for i in range(0, len(chunk), size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def plan(self, epoch: int) -> list[tuple[str, list[int]]]:
        """The ordered (task, global example indices) batches of ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch])
        tasks = [t for t in self.phase(epoch)["tasks"] if t in self.examples]
        queues = {t: self._task_batches(t, rng) for t in tasks}
        out: list[tuple[str, list[int]]] = []
        if self.schedule == "weighted":
            p = np.array([(self.weights.get(t, 1.0) * len(self.examples[t])) ** (1 / self.temperature)
                          for t in tasks])
            pos = dict.fromkeys(tasks, 0)
            for _ in range(sum(len(q) for q in queues.values())):
                t = tasks[rng.choice(len(tasks), p=p / p.sum())]
                if pos[t] == len(queues[t]):  # this task's examples are used up: reshuffle them
                    queues[t], pos[t] = self._task_batches(t, rng), 0
                out.append((t, queues[t][pos[t]]))
                pos[t] += 1
        else:
            while any(queues.values()):
                for t in tasks:
                    if queues[t]:
                        out.append((t, queues[t].pop(0)))
        return out

    @staticmethod
    def shard(indices: list[int], rank: int, world_size: int) -> list[int]:
        return indices[rank::world_size]


class ScheduleBatchSampler(torch.utils.data.Sampler):
    """A DataLoader batch sampler that replays one epoch of a :class:`TaskSchedule` plan.

    It yields, for each planned batch from ``start`` on, this process's share of it
    (``TaskSchedule.shard``) as ``[(task, epoch, row index), ...]``. The plan is a pure
    function of (seed, epoch), so a resumed run, whose ``start`` is the batch it stopped
    at, reads the very batches that the uninterrupted run read.
    """

    def __init__(self, plan: list[tuple[str, list[int]]], epoch: int, start: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.plan, self.epoch, self.start = plan, epoch, start
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return max(len(self.plan) - self.start, 0)

    def __iter__(self):
        for task, indices in self.plan[self.start:]:
            yield [(task, self.epoch, i) for i in TaskSchedule.shard(indices, self.rank, self.world_size)]


class RowDataset(torch.utils.data.Dataset):
    """Manifest rows looked up by the keys :class:`ScheduleBatchSampler` yields: item
    ``(task, epoch, i)`` is ``(task, epoch, rows[i])``, so that the collate step knows
    which task and epoch (for augmentation) its rows are for."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: tuple[str, int, int]) -> tuple[str, int, dict]:
        task, epoch, i = key
        return task, epoch, self.rows[i]


def schedule_loader(rows: list[dict], plan: list[tuple[str, list[int]]], collate: Collator, epoch: int,
                    start: int = 0, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                    prefetch_factor: int = 2, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader over this process's batches of ``plan`` (epoch ``epoch``) from batch
    ``start``: ``num_workers`` processes decode, augment and collate ``prefetch_factor``
    batches each ahead of the training step (0: in this process, when asked).

    The loader draws its workers' seeds from a generator of its own, never from the global
    torch random state: that state drives dropout, and a resumed run would draw it at a
    different step. Nothing in collation is random besides augmentation, which is seeded by
    (epoch, utterance id), so the batches do not depend on the workers either.
    """
    workers = dict(num_workers=num_workers, prefetch_factor=prefetch_factor) if num_workers > 0 else {}
    return torch.utils.data.DataLoader(
        RowDataset(rows), batch_sampler=ScheduleBatchSampler(plan, epoch, start, rank, world_size),
        collate_fn=collate.collate_items, pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(epoch), **workers)
