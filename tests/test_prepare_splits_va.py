"""Splits, the leakage check, class balancing, protocols and derived VA."""

from collections import Counter

import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

from reasoning.errors import UserError
from reasoning.prepare import (DerivedVAConfig, LeakageError, apply_protocol, balanced_subset,
                               check_speaker_disjoint, check_splits, class_weights, derive_va,
                               example_weights)
from reasoning.prepare.splits import assign_loso, assign_random, assign_speaker_random
from reasoning.prepare.va import clip_features

SR = 16000


def corpus(n_speakers=10, per_speaker=(5, 20)):
    rng = np.random.default_rng(0)
    rows = []
    for s in range(n_speakers):
        for u in range(int(rng.integers(*per_speaker))):
            rows.append({"id": f"s{s}_{u}", "speaker": f"s{s}",
                         "emotion": ["neutral", "happy", "sad", "angry"][int(rng.integers(0, 4)) % (1 + s % 4)]})
    return rows


def test_speaker_random_is_disjoint_seeded_and_near_the_fractions():
    rows = corpus(20)
    assign_speaker_random(rows, seed=7)
    check_splits(rows)                   # no speaker on two sides
    first = [r["split"] for r in rows]
    assign_speaker_random(rows, seed=7)
    assert [r["split"] for r in rows] == first
    assign_speaker_random(rows, seed=8)
    assert [r["split"] for r in rows] != first
    share = Counter(first)
    assert set(share) == {"train", "dev", "test"}
    assert 0.65 < share["train"] / len(rows) < 0.9


def test_three_speakers_give_one_each_to_dev_and_test():
    rows = corpus(3)
    assign_speaker_random(rows, seed=0)
    per = {s: {r["split"] for r in rows if r["speaker"] == s} for s in ("s0", "s1", "s2")}
    assert sorted(x for v in per.values() for x in v) == ["dev", "test", "train"]


def test_loso_gives_one_fold_per_speaker():
    from reasoning.evaluation.folds import PROTOCOLS, iter_folds

    rows = corpus(4)
    assign_loso(rows)
    assert sorted({r["split"] for r in rows}) == ["speaker-s0", "speaker-s1", "speaker-s2", "speaker-s3"]
    for name, train, _, test in iter_folds(rows, PROTOCOLS["loso"]):
        assert {r["speaker"] for r in test} == {name.removeprefix("speaker-")}
        assert {r["split"] for r in test} == {name}
        check_speaker_disjoint(train, test)
        assert len(train) + len(test) == len(rows)


def test_leakage_check_catches_a_planted_leak():
    rows = corpus(6)
    assign_speaker_random(rows, seed=1)
    leaked = next(r for r in rows if r["split"] == "test")
    victim = next(r for r in rows if r["split"] == "train")
    victim["speaker"] = leaked["speaker"]
    with pytest.raises(LeakageError) as err:
        check_splits(rows)
    message = str(err.value)
    assert repr(leaked["speaker"]) in message and victim["id"] in message
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    with pytest.raises(LeakageError, match=f"speaker '{leaked['speaker']}'"):
        check_speaker_disjoint(train, test)


def test_random_split_is_utterance_level():
    rows = corpus(5)
    assign_random(rows, seed=0)
    assert Counter(r["split"] for r in rows)["train"] == round(0.8 * len(rows))


def test_balanced_subset_and_weights_match_sklearn():
    rows = [{"id": str(i), "emotion": lab} for i, lab in enumerate("aaaaaaabbbc" + "c" * 4)]
    rows.append({"id": "x", "emotion": None})
    subset = balanced_subset(rows, seed=0)
    assert Counter(r["emotion"] for r in subset) == {"a": 3, "b": 3, "c": 3}
    assert subset == sorted(subset, key=lambda r: int(r["id"]))          # original order
    assert balanced_subset(rows, seed=0) == subset
    assert balanced_subset(rows, seed=1) != subset
    weights = class_weights(rows)
    labels = [r["emotion"] for r in rows if r["emotion"]]
    reference = compute_class_weight("balanced", classes=np.array(["a", "b", "c"]), y=labels)
    assert np.allclose([weights[k] for k in "abc"], reference)
    per_row = example_weights(rows)
    assert per_row[-1] == 0.0
    totals = Counter()
    for r, w in zip(rows, per_row):
        totals[r["emotion"]] += w
    assert np.allclose([totals[k] for k in "abc"], totals["a"])   # every class weighs the same


def test_protocol_filter_and_keep_other():
    rows = [{"id": "1", "emotion": "happy"}, {"id": "2", "emotion": "xxx"},
            {"id": "3", "emotion": "frustrated"}, {"id": "4", "emotion": None}]
    kept, excluded = apply_protocol(rows, ["happy", "sad"])
    assert [r["id"] for r in kept] == ["1"]
    assert [(r["id"], why) for r, why in excluded][0] == (
        "2", "label 'xxx' is not in the protocol's label set")
    kept, excluded = apply_protocol(rows, ["happy", "sad"], keep_other=True)
    assert [(r["emotion"], r.get("emotion_orig")) for r in kept] == [
        ("happy", None), ("other", "xxx"), ("other", "frustrated")]
    assert [r["id"] for r, _ in excluded] == ["4"]
    assert rows[1]["emotion"] == "xxx"                 # the input rows are not changed


def speech_like(amplitude, brightness, seconds=1.0, seed=0):
    """A harmonic, syllable-modulated signal of RMS ``amplitude / 3``; ``brightness`` tilts
    its energy towards the upper harmonics."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 150 + 20 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    wave = sum((brightness ** k) * np.sin(k * phase) for k in range(1, 20))
    wave = wave * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t) ** 2) + 0.01 * rng.standard_normal(t.size)
    return (amplitude / 3 * wave / np.sqrt(np.mean(wave**2))).astype(np.float32)


def test_derived_arousal_follows_loudness_and_effort():
    loud, quiet = speech_like(0.9, 0.6), speech_like(0.05, 0.6)
    assert clip_features(loud, SR)["energy_db"] > clip_features(quiet, SR)["energy_db"] + 20
    feats = [clip_features(w, SR) for w in (loud, speech_like(0.3, 0.6), quiet)]
    va = derive_va(feats, ["neutral"] * 3)
    arousal = [a for _, a in va]
    assert arousal[0] > arousal[1] > arousal[2]
    # Same RMS, more high-frequency energy (vocal effort): more aroused.
    bright, dark = speech_like(0.3, 0.9), speech_like(0.3, 0.3)
    (_, a_bright), (_, a_dark) = derive_va([clip_features(bright, SR), clip_features(dark, SR)],
                                           ["neutral", "neutral"])
    assert a_bright > a_dark


def test_derived_valence_uses_the_prior_and_stays_in_range():
    waves = [speech_like(a, b, seed=i) for i, (a, b) in
             enumerate([(0.9, 0.9), (0.05, 0.2), (0.4, 0.5), (0.2, 0.7)])]
    feats = [clip_features(w, SR) for w in waves]
    same_audio = [feats[2]] * 4
    va = derive_va(same_audio + feats, ["happy", "sad", "angry", "neutral"] + ["joy"] * 4)
    valence = [v for v, _ in va]
    assert valence[0] > valence[3] > valence[1]            # happy > neutral > sad
    assert valence[2] < valence[3]                         # angry is negative
    assert all(-1 <= v <= 1 and -1 <= a <= 1 for v, a in va)
    # Extreme settings still clip to [-1, 1]; the prior weight 0 removes the label's effect.
    cfg = DerivedVAConfig(valence_gain=50, arousal_gain=50, valence_prior_weight=0.0,
                          arousal_prior_weight=0.0)
    va = derive_va(feats + feats, ["happy"] * 4 + ["sad"] * 4, cfg)
    assert all(-1 <= x <= 1 for pair in va for x in pair)
    assert va[:4] == va[4:]
    with pytest.raises(ValueError):
        DerivedVAConfig(valence_prior_weight=1.5)


def test_silence_and_a_single_clip_do_not_break_the_formula():
    feats = clip_features(np.zeros(SR, dtype=np.float32), SR)
    assert np.isfinite(list(feats.values())).all()
    assert derive_va([feats], ["sad"]) == [(round(0.7 * -0.6, 4), round(0.3 * -0.5, 4))]


@pytest.mark.parametrize("assign", [assign_speaker_random, assign_loso])
def test_speaker_splits_name_the_rows_without_a_speaker(assign):
    rows = corpus(3)
    for row in rows[:7]:
        row["speaker"] = None
    first = ", ".join(r["id"] for r in rows[:5])
    with pytest.raises(UserError, match=rf"7 of {len(rows)} rows have no speaker \(first: "
                                        rf"{first}, \.\.\.\).*--speaker-col.*--split random "
                                        r"\(NOT speaker-disjoint"):
        assign(rows)
