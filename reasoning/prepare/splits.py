"""Splits that keep speakers apart, the check that proves it, and class balancing.

The ``split`` column holds either ``train``/``dev``/``test`` or a fold name (``session1``,
``speaker-03``). For fold names, :func:`folds` gives the leave-one-fold-out pairs: fold
``k`` is the test set and every other fold trains.
"""

from __future__ import annotations

import logging
import random
from collections import Counter, defaultdict

from reasoning.errors import UserError

log = logging.getLogger(__name__)

SPLIT_STRATEGIES = ("official", "loso", "speaker-random", "random")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
SPLIT_NAMES = ("train", "dev", "test")


class LeakageError(UserError):
    """A speaker on both sides of a split."""


def require_speakers(rows: list[dict], strategy: str) -> None:
    """Raise :class:`UserError` naming the rows without a speaker.

    A speaker-disjoint split cannot place a clip whose speaker is unknown: it could be any
    speaker's, test speakers' included. Falling back to an utterance-level split would leak
    speakers without a word, so the user chooses: fill the speakers in, or ask for
    ``--split random``.
    """
    missing = [r for r in rows if not r.get("speaker")]
    if not missing:
        return
    first = ", ".join(f"{r['id']} ({r['_where']})" if r.get("_where") else r["id"]
                      for r in missing[:5]) + (", ..." if len(missing) > 5 else "")
    raise UserError(f"the {strategy} split keeps speakers apart, so it needs a speaker on "
                    f"every row; {len(missing)} of {len(rows)} rows have no speaker (first: "
                    f"{first}). Fill in their speaker (a table's speaker column, named with "
                    "--speaker-col), or pass --split random (NOT speaker-disjoint: a speaker's "
                    "clips may be in train and in test).")


def assign_loso(rows: list[dict]) -> None:
    """Leave-one-speaker-out: ``split = "speaker-<speaker>"`` (one fold per speaker), in place."""
    require_speakers(rows, "loso")
    for row in rows:
        row["split"] = f"speaker-{row['speaker']}"


def assign_speaker_random(rows: list[dict], seed: int = 0,
                          fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> None:
    """Speaker-disjoint train/dev/test, seeded, in place.

    Speakers are shuffled, then each goes to the split furthest below its target share
    of utterances; with three or more speakers, dev and test each get at least one.
    """
    require_speakers(rows, "speaker-random")
    by_speaker = Counter(r["speaker"] for r in rows)
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise UserError(f"split fractions {fractions} must be non-negative and sum to 1.")
    speakers = sorted(by_speaker)
    random.Random(seed).shuffle(speakers)
    total = sum(by_speaker.values())
    have = dict.fromkeys(SPLIT_NAMES, 0)
    assignment = {}
    if len(speakers) >= 3:
        # Seed test and dev with one speaker each so neither is empty.
        for name, speaker in zip(("test", "dev"), speakers[:2]):
            if fractions[SPLIT_NAMES.index(name)] > 0:
                assignment[speaker] = name
                have[name] += by_speaker[speaker]
    open_splits = [s for s, share in zip(SPLIT_NAMES, fractions) if share > 0]
    for speaker in speakers:
        if speaker in assignment:
            continue
        name = max(open_splits, key=lambda s: fractions[SPLIT_NAMES.index(s)] * total - have[s])
        assignment[speaker] = name
        have[name] += by_speaker[speaker]
    for row in rows:
        row["split"] = assignment[row["speaker"]]


def assign_random(rows: list[dict], seed: int = 0,
                  fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> None:
    """Utterance-level random train/dev/test (NOT speaker-disjoint), seeded, in place."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_train = round(fractions[0] * len(rows))
    n_dev = round(fractions[1] * len(rows))
    for rank, i in enumerate(order):
        rows[i]["split"] = ("train" if rank < n_train else
                            "dev" if rank < n_train + n_dev else "test")


def check_speaker_disjoint(first: list[dict], second: list[dict],
                           names: tuple[str, str] = ("train", "test")) -> None:
    """Raise :class:`LeakageError` naming a speaker found in both row lists.

    Rows without a speaker cannot be checked; they are counted in a warning.
    """
    seen = defaultdict(list)
    for row in first:
        if row.get("speaker"):
            seen[row["speaker"]].append(row["id"])
    unknown = sum(1 for r in (*first, *second) if not r.get("speaker"))
    if unknown:
        log.warning("%d rows have no speaker: the leakage check cannot cover them.", unknown)
    for row in second:
        speaker = row.get("speaker")
        if speaker in seen:
            other = [r["id"] for r in second if r.get("speaker") == speaker]
            raise LeakageError(
                f"speaker {speaker!r} is on both sides of the split: {len(seen[speaker])} rows "
                f"in {names[0]} (e.g. {seen[speaker][0]}) and {len(other)} in {names[1]} "
                f"(e.g. {other[0]}). Use a speaker-disjoint split (--split loso or "
                "speaker-random), or fix the speaker ids.")


def check_splits(rows: list[dict]) -> None:
    """Check every pair of ``split`` values for a shared speaker (train/dev/test or folds)."""
    by_split = defaultdict(list)
    for row in rows:
        by_split[row["split"]].append(row)
    names = sorted(by_split)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            check_speaker_disjoint(by_split[a], by_split[b], names=(a, b))


def balanced_subset(rows: list[dict], seed: int = 0, label_key: str = "emotion",
                    per_class: int | None = None) -> list[dict]:
    """Class-balanced undersampling: ``per_class`` rows (default: the rarest class's count)
    of every label, drawn with ``seed``; rows keep their original order. Unlabelled rows
    are left out."""
    groups = defaultdict(list)
    for i, row in enumerate(rows):
        if row.get(label_key) is not None:
            groups[row[label_key]].append(i)
    if not groups:
        return []
    n = min(len(g) for g in groups.values()) if per_class is None else per_class
    rng = random.Random(seed)
    chosen = []
    for label in sorted(groups):
        members = groups[label]
        chosen.extend(members if len(members) <= n else rng.sample(members, n))
    return [rows[i] for i in sorted(chosen)]


def class_weights(rows: list[dict], label_key: str = "emotion") -> dict[str, float]:
    """``n_rows / (n_classes * n_label)`` per label (scikit-learn's "balanced" weights):
    a weighted loss or sampler then sees every class with the same total weight."""
    counts = Counter(r[label_key] for r in rows if r.get(label_key) is not None)
    total = sum(counts.values())
    return {label: total / (len(counts) * n) for label, n in sorted(counts.items())}


def example_weights(rows: list[dict], label_key: str = "emotion") -> list[float]:
    """One weight per row for a weighted random sampler (0 for unlabelled rows)."""
    weights = class_weights(rows, label_key)
    return [weights.get(r.get(label_key), 0.0) for r in rows]
