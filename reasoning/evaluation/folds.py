"""How a protocol's rows split into folds, and how fold scores are aggregated.

The protocols themselves live in :mod:`reasoning.prepare.protocols` (one registry for
preparation and evaluation); the evaluation ones name a label set and a fold scheme
(``iemocap4-loso`` is accepted for ``iemocap4``):

=================  ==============  ============================================  ==========
protocol           label column    labels                                        folds
=================  ==============  ============================================  ==========
``iemocap4``       ``emotion``     neutral, happy (hap + exc), angry, sad        sessions
``meld7``          ``emotion``     neutral, joy, surprise, anger, sadness,       official
                                   disgust, fear
``meld-sentiment`` ``sentiment``   neutral, positive, negative                   official
``loso``           ``emotion``     every label in the manifest                   speakers
``msp-podcast``    ``emotion``     anger, sadness, happiness, surprise, fear,    test sets
                                   disgust, contempt, neutral
=================  ==============  ============================================  ==========

* **sessions** (IEMOCAP leave-one-session-out): the ``split`` field is ``session1`` ..
  ``session5``; fold ``sessionK`` tests on session K and trains on the other four.
* **speakers** (leave-one-speaker-out, any corpus): one fold per speaker.
* **official** (MELD): train on ``split == "train"``, select on ``dev``, report ``test``.
* **test sets** (MSP-Podcast, the IS25 challenge protocol): train on ``split == "train"``;
  fold ``dev`` tests on the Development set, and each test set (``test1``, ``test2``, and
  those of later releases) is a fold of its own, selected on ``dev``. The folds are
  reported separately, never pooled: Test2 comes from other podcasts than the rest. Rows
  labelled ``other`` (``--keep-other``) or ``no_agreement`` are trained on, never scored.

Official and test-set folds share one training set, so one trained model serves them all
(:attr:`Protocol.one_training_set`).

Session and speaker folds are speaker-independent, and :func:`iter_folds` checks it: a test
speaker found in a training or dev row raises :class:`SpeakerLeakError` naming the speaker.
MELD's official split is not speaker-independent by design (the six main characters of
Friends speak in every split), so the check does not apply there; the overlap is logged.

Dev rows for session/speaker folds: none by default, so a model trains for its recipe's
fixed budget and nothing is selected on test speakers. ``dev_speakers=N`` holds out N
training speakers (the ones following the test speakers in sorted order) as a
speaker-disjoint dev set.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from typing import Any, Iterator, NamedTuple, Sequence

from reasoning.errors import ManifestError, UserError
from reasoning.prepare.card import split_order
from reasoning.prepare.protocols import PROTOCOLS, Protocol, get_protocol  # noqa: F401 - one registry, re-exported for evaluation
from reasoning.prepare.splits import LeakageError as SpeakerLeakError  # noqa: F401 - raised here, by that name
from reasoning.prepare.splits import check_speaker_disjoint

log = logging.getLogger(__name__)


class Fold(NamedTuple):
    """One fold; unpacks as ``(name, train_rows, dev_rows, test_rows)``."""

    name: str
    train: list[dict]
    dev: list[dict]
    test: list[dict]


def select_rows(rows: Sequence[dict], protocol: Protocol) -> tuple[list[dict], list[str], dict]:
    """Keep the rows the protocol scores; return ``(rows, label_set, excluded)``.

    Rows whose label column is null, or (for a fixed label set) holds another label, are
    excluded, not an error: IEMOCAP keeps ``fru``, ``sur``, ... under their own names for
    other protocols. ``excluded`` counts them by reason, e.g. ``{"label:fru": 12,
    "no label": 3}``. For ``loso`` the label set is the sorted labels present.
    """
    key = protocol.label_key
    excluded: Counter = Counter()
    kept = []
    for row in rows:
        label = row.get(key)
        if label is None or label == "":
            excluded["no label"] += 1
        elif protocol.labels and label not in protocol.labels:
            excluded[f"label:{label}"] += 1
        else:
            kept.append(row)
    if not kept:
        hint = (f" MELD sentiment needs a '{key}' column in the manifest."
                if key == "sentiment" else "")
        raise UserError(f"protocol {protocol.name}: no row has a '{key}' label in "
                        f"{list(protocol.labels) if protocol.labels else 'the manifest'} "
                        f"({len(rows)} rows read, excluded: {dict(excluded)}).{hint}")
    labels = list(protocol.labels) if protocol.labels else sorted({r[key] for r in kept})
    if excluded:
        log.info("protocol %s: %d rows kept, excluded %s", protocol.name, len(kept), dict(excluded))
    return kept, labels, dict(excluded)


def _speaker(row: dict, protocol: Protocol) -> str:
    spk = row.get("speaker")
    if spk is None or spk == "":
        raise ManifestError(f"row {row.get('id')!r}: no 'speaker'; protocol {protocol.name} "
                            "splits by speaker. Give every row a speaker id.")
    return str(spk)


def check_speaker_independent(fold: Fold) -> None:
    """Raise :class:`SpeakerLeakError` if a test speaker has a training or dev row."""
    for part, rows in (("training", fold.train), ("dev", fold.dev)):
        check_speaker_disjoint(rows, fold.test, names=(f"fold {fold.name} {part}", f"fold {fold.name} test"))


def _session_folds(rows: list[dict], protocol: Protocol) -> list[tuple[str, list, list]]:
    groups: dict[str, list[dict]] = {}
    for row in rows:
        split = str(row.get("split") or "")
        if not (split.startswith("session") and split[len("session"):].isdigit()):
            raise ManifestError(f"row {row.get('id')!r}: split={row.get('split')!r}; protocol "
                                f"{protocol.name} needs 'session1'..'session5' (prepare "
                                "IEMOCAP with `emoreason prepare iemocap`).")
        groups.setdefault(split, []).append(row)
    names = sorted(groups, key=lambda s: int(s[len("session"):]))
    if len(names) < 2:
        raise UserError(f"protocol {protocol.name}: only {names} found; leave-one-session-out "
                        "needs at least two sessions.")
    return [(n, [r for m in names if m != n for r in groups[m]], groups[n]) for n in names]


def _speaker_folds(rows: list[dict], protocol: Protocol) -> list[tuple[str, list, list]]:
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(_speaker(row, protocol), []).append(row)
    if len(groups) < 2:
        raise UserError(f"protocol {protocol.name}: {len(groups)} speaker(s) found; "
                        "leave-one-speaker-out needs at least two.")
    names = sorted(groups)
    return [(f"speaker-{n}", [r for m in names if m != n for r in groups[m]], groups[n])
            for n in names]


TEST_SET = re.compile(r"^test\d*$")


def _test_set_folds(rows: list[dict], protocol: Protocol) -> list[Fold]:
    """``dev`` (tested on the Development set), then one fold per test set, in natural order;
    every fold trains on ``train`` and the test-set folds select on ``dev``."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(str(row.get("split")), []).append(row)
    train, dev = groups.pop("train", []), groups.pop("dev", [])
    tests = sorted((s for s in groups if TEST_SET.match(s)), key=split_order)
    other = {s: len(groups[s]) for s in groups if s not in tests}
    if other:
        log.warning("protocol %s: %d rows with a split other than train, dev and test<n> are "
                    "not used: %s", protocol.name, sum(other.values()), other)
    if not train or not (dev or tests):
        raise UserError(f"protocol {protocol.name}: it needs split='train' rows and a dev or "
                        f"test<n> set; found {sorted(map(str, {r.get('split') for r in rows}))}. "
                        "Prepare the corpus with `emoreason prepare msp-podcast` (official "
                        "split: train, dev, test1, test2, ...).")
    return ([Fold("dev", train, [], dev)] if dev else []) + [Fold(t, train, dev, groups[t]) for t in tests]


def _hold_out_dev(name: str, train: list[dict], test: list[dict], n: int,
                  protocol: Protocol) -> tuple[list[dict], list[dict]]:
    """Move the ``n`` training speakers that follow the test speakers (sorted, cyclic)
    into a dev set; deterministic, so every run of a fold uses the same dev speakers."""
    if n <= 0:
        return train, []
    speakers = sorted({_speaker(r, protocol) for r in train})
    if n >= len(speakers):
        raise UserError(f"fold {name}: dev_speakers={n} leaves no training speaker "
                        f"({len(speakers)} available).")
    last_test = max(_speaker(r, protocol) for r in test)
    after = [s for s in speakers if s > last_test] + [s for s in speakers if s < last_test]
    dev_set = set(after[:n])
    return ([r for r in train if _speaker(r, protocol) not in dev_set],
            [r for r in train if _speaker(r, protocol) in dev_set])


def iter_folds(rows: Sequence[dict], protocol: Protocol, dev_speakers: int = 0,
               only: str | None = None) -> Iterator[Fold]:
    """Yield the protocol's folds as ``Fold(name, train_rows, dev_rows, test_rows)``.

    ``rows`` should already be filtered by :func:`select_rows`. ``only`` yields just the
    fold of that name (a :class:`UserError` lists the names when there is none).
    Speaker-independent protocols are checked fold by fold (:class:`SpeakerLeakError`).
    """
    rows = list(rows)
    if protocol.folds == "official":
        by_split: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
        other: Counter = Counter()
        for row in rows:
            split = row.get("split")
            if split in by_split:
                by_split[split].append(row)
            else:
                other[str(split)] += 1
        if other:
            log.warning("protocol %s: %d rows with a split other than train/dev/test are not "
                        "used: %s", protocol.name, sum(other.values()), dict(other))
        for part in ("train", "test"):
            if not by_split[part]:
                raise UserError(f"protocol {protocol.name}: no row has split={part!r}; the "
                                "official protocol needs train and test rows (and dev for "
                                "model selection).")
        shared = ({r.get("speaker") for r in by_split["train"]}
                  & {r.get("speaker") for r in by_split["test"]}) - {None}
        if shared:
            log.info("protocol %s: %d test speakers also speak in train (the official split is "
                     "not speaker-independent)", protocol.name, len(shared))
        folds = [Fold("test", by_split["train"], by_split["dev"], by_split["test"])]
    elif protocol.folds == "test-sets":
        folds = _test_set_folds(rows, protocol)
    else:
        make = _session_folds if protocol.folds == "sessions" else _speaker_folds
        folds = []
        for name, train, test in make(rows, protocol):
            train, dev = _hold_out_dev(name, train, test, dev_speakers, protocol)
            folds.append(Fold(name, train, dev, test))
    if only is not None:
        folds = [f for f in folds if f.name == only]
        if not folds:
            raise UserError(f"protocol {protocol.name}: no fold named {only!r}.")
    for fold in folds:
        if protocol.speaker_independent:
            check_speaker_independent(fold)
        yield fold


# --------------------------------------------------------------------------- aggregate

# Keys whose values are tables or per-item details, not scalar scores to average.
_NOT_AVERAGED = {"confusion", "per_class", "per_speaker", "labels", "classes_present"}
# Counts: reported per fold, not scores.
_COUNTS = {"n", "speakers", "skipped"}


def flatten_scores(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested metrics dict as ``{"k_best.top2": 0.8, ...}``.

    Tables and per-item details (confusion, per_class, per_speaker), counts (``n``,
    ``n_*``, ``speakers``, ``skipped``) and None values are left out.
    """
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if key in _NOT_AVERAGED:
            continue
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_scores(value, path + "."))
        elif (isinstance(value, (int, float)) and not isinstance(value, bool)
              and key not in _COUNTS and not key.startswith("n_")):
            if math.isfinite(value):
                out[path] = float(value)
    return out


def aggregate_folds(per_fold: dict[str, dict[str, Any]] | Sequence[dict[str, Any]]) -> dict:
    """Mean ± std of each scalar metric across folds.

    Returns ``{"k_best.top1": {"mean": m, "std": s, "folds": n}, ...}``. ``std`` is the
    sample standard deviation (ddof=1), ``None`` for a single fold. A metric undefined in a
    fold (None) is averaged over the folds that have it, and ``folds`` says how many.
    """
    items = list(per_fold.values()) if isinstance(per_fold, dict) else list(per_fold)
    values: dict[str, list[float]] = {}
    for metrics in items:
        for key, value in flatten_scores(metrics).items():
            values.setdefault(key, []).append(value)
    out = {}
    for key in sorted(values):
        v = values[key]
        mean = sum(v) / len(v)
        std = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else None
        out[key] = {"mean": mean, "std": std, "folds": len(v)}
    return out
