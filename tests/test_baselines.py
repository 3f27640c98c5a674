"""Baselines: the shared prediction format, the eGeMAPS cache, and that each learned
baseline beats the majority class on a synthesized, separable set."""

import os

import numpy as np
import pytest
import soundfile as sf

from reasoning.evaluation.baselines import (EgemapsCache, egemaps_baseline, extract_egemaps,
                                 majority_baseline, tfidf_baseline)
from reasoning.errors import UserError
from reasoning.evaluation.metrics import classification_metrics

LABELS = ["angry", "sad"]


def write_tone(path, loud: bool, freq: float, seed: int, sr: int = 22050) -> str:
    """0.5 s of a harmonic tone with a little noise: loud (angry) or quiet (sad)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(0.5 * sr)) / sr
    wave = sum(np.sin(2 * np.pi * freq * k * t) / k for k in (1, 2, 3))
    wave = (0.5 if loud else 0.03) * wave / 1.8 + rng.normal(0, 0.002, t.size)
    sf.write(path, wave.astype(np.float32), sr)
    return str(path)


@pytest.fixture(scope="module")
def tone_rows(tmp_path_factory):
    """Four speakers (own base pitch) x 5 loud + 5 quiet clips; one is a 2-file segment."""
    root = tmp_path_factory.mktemp("tones")
    rows = []
    for s, base in enumerate((110.0, 140.0, 200.0, 240.0)):
        for i in range(10):
            loud = i % 2 == 0
            path = write_tone(root / f"s{s}_{i}.wav", loud, base * (1 + 0.03 * i), 10 * s + i)
            rows.append({"id": f"s{s}_{i}", "audio": path, "start": None, "end": None,
                         "speaker": f"s{s}", "gender": "fm"[s % 2],
                         "emotion": "angry" if loud else "sad"})
    return rows


def split(rows, test_speaker):
    return ([r for r in rows if r["speaker"] != test_speaker],
            [r for r in rows if r["speaker"] == test_speaker])


def check_format(pred, n):
    assert set(pred) >= {"labels", "scores", "label_set", "valence", "arousal", "rationales"}
    assert pred["label_set"] == LABELS and len(pred["labels"]) == n
    assert pred["scores"].shape == (n, len(LABELS))
    assert np.allclose(pred["scores"].sum(axis=1), 1.0)
    assert set(pred["labels"]) <= set(LABELS)
    # the predicted label is the best-scored one
    assert [LABELS[i] for i in pred["scores"].argmax(axis=1)] == pred["labels"]


def test_majority_predicts_the_most_frequent_training_label():
    train = [{"emotion": e} for e in ["sad", "sad", "angry", "neutral"]]
    pred = majority_baseline(train, [{}, {}, {}], ["angry", "sad", "neutral"])
    assert pred["labels"] == ["sad"] * 3
    assert pred["scores"][0].tolist() == [0.25, 0.5, 0.25]
    # ties go to the first label of the label set
    tie = majority_baseline([{"emotion": "sad"}, {"emotion": "angry"}], [{}], LABELS)
    assert tie["labels"] == ["angry"]


def test_egemaps_beats_majority_on_loud_vs_quiet(tone_rows, tmp_path):
    feats, failed = extract_egemaps(tone_rows, EgemapsCache(tmp_path / "cache.npz"))
    assert not failed and all(v.shape == (88,) for v in feats.values())
    for test_speaker in ("s0", "s3"):  # the lowest and the highest voice are held out
        train, test = split(tone_rows, test_speaker)
        truth = [r["emotion"] for r in test]
        ours = egemaps_baseline(train, test, LABELS, features=feats)
        base = majority_baseline(train, test, LABELS)
        check_format(ours, len(test))
        # 88 features from 30 clips and an unseen voice: nearly, not always, perfect
        assert classification_metrics(truth, ours["labels"], LABELS)["ua"] >= 0.8
        assert classification_metrics(truth, base["labels"], LABELS)["ua"] == 0.5


def test_egemaps_cache_reuses_and_refreshes(tone_rows, tmp_path, monkeypatch):
    rows = [dict(r) for r in tone_rows[:3]]
    path = tmp_path / "cache.npz"
    first, _ = extract_egemaps(rows, EgemapsCache(path))
    assert path.is_file()

    calls = []
    cache = EgemapsCache(path)
    real = cache._extractor

    def counting():
        calls.append(1)
        return real()

    monkeypatch.setattr(cache, "_extractor", counting)
    again, _ = extract_egemaps(rows, cache)
    assert calls == []  # all three from the cache
    assert all(np.array_equal(first[k], again[k]) for k in first)

    # a segment of the same file is another clip; an edited file is recomputed
    rows.append({**rows[0], "id": "seg", "start": 0.1, "end": 0.3})
    st = os.stat(rows[1]["audio"])
    os.utime(rows[1]["audio"], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third, _ = extract_egemaps(rows, cache)
    assert len(calls) == 2
    assert not np.array_equal(third["seg"], first[rows[0]["id"]])
    assert len(EgemapsCache(path).entries) == 4


def test_an_unreadable_clip_is_reported_and_the_rest_go_on(tone_rows, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    rows = tone_rows[:2] + [{"id": "broken", "audio": str(bad)},
                            {"id": "gone", "audio": str(tmp_path / "missing.wav")}]
    feats, failed = extract_egemaps(rows, EgemapsCache())
    assert set(feats) == {tone_rows[0]["id"], tone_rows[1]["id"]}
    assert set(failed) == {"broken", "gone"}
    assert "broken.wav" in failed["broken"] and "missing.wav" in failed["gone"]


ANGRY_WORDS = "furious hate shut up stop yelling damn outrageous never again leave".split()
SAD_WORDS = "miss lonely cry sorry lost gone tears alone tired grief".split()


def text_rows(seed, n=40):
    rng = np.random.default_rng(seed)
    filler = "the a so and then it you i".split()
    rows = []
    for i in range(n):
        emotion = LABELS[i % 2]
        words = list(rng.choice(ANGRY_WORDS if emotion == "angry" else SAD_WORDS, 3))
        words += list(rng.choice(filler, 4))
        rng.shuffle(words)
        rows.append({"id": f"t{seed}_{i}", "transcript": " ".join(words), "emotion": emotion})
    # the majority baseline sees a skewed training set
    return rows + [{"id": f"x{seed}", "transcript": "so then", "emotion": "sad"}]


def test_tfidf_beats_majority_on_word_lists():
    train, test = text_rows(0), text_rows(1)
    truth = [r["emotion"] for r in test]
    ours = tfidf_baseline(train, test, LABELS)
    check_format(ours, len(test))
    assert classification_metrics(truth, ours["labels"], LABELS)["ua"] >= 0.95
    base = majority_baseline(train, test, LABELS)
    assert classification_metrics(truth, base["labels"], LABELS)["ua"] == 0.5


def test_tfidf_needs_transcripts_and_labels_in_the_set():
    train = text_rows(0)
    train[0]["transcript"] = None
    with pytest.raises(UserError, match="1 rows have no transcript"):
        tfidf_baseline(train, text_rows(1), LABELS)
    with pytest.raises(UserError, match="outside"):
        tfidf_baseline(text_rows(0), text_rows(1), ["angry", "neutral"])


def test_a_class_absent_from_training_gets_zero_probability():
    labels = ["angry", "sad", "neutral"]
    pred = tfidf_baseline(text_rows(0), text_rows(1), labels)
    assert pred["scores"].shape == (41, 3) and np.all(pred["scores"][:, 2] == 0)
    one_class = [r for r in text_rows(0) if r["emotion"] == "sad"]
    pred = tfidf_baseline(one_class, text_rows(1)[:3], labels)
    assert pred["labels"] == ["sad"] * 3
