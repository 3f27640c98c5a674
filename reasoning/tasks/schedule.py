"""The seeded task schedule, and the DataLoader that replays it.

Task alternation lives here, not in the training loop: :class:`TaskSchedule` turns the
manifest rows usable by each task into an ordered list of single-task batches per epoch,
as a pure function of ``(seed, epoch)``. A resumed run therefore rebuilds the same plan
and skips the batches it has done. :func:`schedule_loader` serves a plan through a
``torch.utils.data.DataLoader`` (workers, prefetch) whose batch sampler replays it.
"""

from __future__ import annotations

import numpy as np
import torch

from reasoning.prepare.splits import balanced_subset, example_weights
from reasoning.tasks.collate import Collator


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
