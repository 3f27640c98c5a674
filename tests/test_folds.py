"""Protocols and folds: no test speaker ever trains; aggregation is mean ± sample std."""

import numpy as np
import pytest

from reasoning.errors import UserError
from reasoning.evaluation.folds import (PROTOCOLS, SpeakerLeakError, aggregate_folds, get_protocol,
                             iter_folds, select_rows)


def iemocap_rows():
    rows = []
    labels = ["neutral", "happy", "angry", "sad", "fru"]
    for s in range(1, 6):
        for g in "FM":
            for i in range(6):
                rows.append({"id": f"Ses0{s}{g}_impro01_{g}{i:03d}", "audio": "x.wav",
                             "speaker": f"Ses0{s}{g}", "gender": g.lower(),
                             "emotion": labels[i % 5], "split": f"session{s}"})
    return rows


def random_rows(seed):
    rng = np.random.default_rng(seed)
    return [{"id": f"u{i}", "audio": "x.wav", "speaker": f"spk{rng.integers(0, 7)}",
             "emotion": str(rng.choice(["a", "b", "c"]))} for i in range(120)]


def test_iemocap_leave_one_session_out():
    p = PROTOCOLS["iemocap4"]
    rows, labels, excluded = select_rows(iemocap_rows(), p)
    assert labels == ["neutral", "happy", "angry", "sad"]
    assert excluded == {"label:fru": 10}
    folds = list(iter_folds(rows, p))
    assert [f.name for f in folds] == [f"session{k}" for k in range(1, 6)]
    tested = []
    for name, train, dev, test in folds:
        assert {r["split"] for r in test} == {name}
        assert name not in {r["split"] for r in train}
        assert not ({r["speaker"] for r in test} & {r["speaker"] for r in train})
        assert dev == [] and len(train) + len(test) == len(rows)
        tested += [r["id"] for r in test]
    assert sorted(tested) == sorted(r["id"] for r in rows)  # each row tested exactly once


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("dev_speakers", [0, 2])
def test_loso_never_trains_on_a_test_speaker(seed, dev_speakers):
    rows = random_rows(seed)
    p = PROTOCOLS["loso"]
    kept, labels, _ = select_rows(rows, p)
    assert labels == sorted({r["emotion"] for r in rows})
    folds = list(iter_folds(kept, p, dev_speakers=dev_speakers))
    assert len(folds) == len({r["speaker"] for r in rows})
    for name, train, dev, test in folds:
        test_spk = {r["speaker"] for r in test}
        assert test_spk == {name.removeprefix("speaker-")}
        assert not test_spk & {r["speaker"] for r in train + dev}
        assert not {r["speaker"] for r in dev} & {r["speaker"] for r in train}
        assert len({r["speaker"] for r in dev}) == dev_speakers
        assert len(train) + len(dev) + len(test) == len(rows)


def test_a_leaking_speaker_is_named():
    rows = iemocap_rows()
    rows[0]["split"] = "session2"  # Ses01F now speaks in session 1 and session 2
    p = PROTOCOLS["iemocap4"]
    kept, _, _ = select_rows(rows, p)
    with pytest.raises(SpeakerLeakError, match="Ses01F"):
        list(iter_folds(kept, p))


def test_bad_split_and_missing_speaker_name_the_row():
    rows = iemocap_rows()
    rows[3]["split"] = "train"
    with pytest.raises(UserError, match=rows[3]["id"]):
        list(iter_folds(rows, PROTOCOLS["iemocap4"]))
    rows = random_rows(0)
    rows[7]["speaker"] = None
    with pytest.raises(UserError, match="'u7'.*speaker"):
        list(iter_folds(rows, PROTOCOLS["loso"]))


def test_meld_official_split_and_sentiment():
    rows = []
    for split, n in (("train", 8), ("dev", 3), ("test", 4)):
        for i in range(n):
            rows.append({"id": f"{split}{i}", "audio": "x.mp4", "speaker": "Chandler",
                         "emotion": ["joy", "anger"][i % 2],
                         "sentiment": ["positive", "negative"][i % 2], "split": split})
    rows.append({"id": "odd", "audio": "x", "speaker": "Ross", "emotion": "joy",
                 "sentiment": None, "split": "extra"})
    kept, labels, excluded = select_rows(rows, PROTOCOLS["meld-sentiment"])
    assert labels == ["neutral", "positive", "negative"] and excluded == {"no label": 1}
    (fold,) = iter_folds(kept, PROTOCOLS["meld-sentiment"])
    assert fold.name == "test"
    assert (len(fold.train), len(fold.dev), len(fold.test)) == (8, 3, 4)  # speakers shared
    kept7, labels7, _ = select_rows(rows, PROTOCOLS["meld7"])
    assert labels7[0] == "neutral" and len(labels7) == 7 and len(kept7) == 16
    with pytest.raises(UserError, match="sentiment"):
        select_rows([{"id": "a", "audio": "x", "emotion": "joy"}], PROTOCOLS["meld-sentiment"])


def test_only_one_fold_and_unknown_names():
    rows = random_rows(1)
    (fold,) = iter_folds(rows, PROTOCOLS["loso"], only="speaker-spk3")
    assert {r["speaker"] for r in fold.test} == {"spk3"}
    with pytest.raises(UserError, match="no fold named"):
        list(iter_folds(rows, PROTOCOLS["loso"], only="speaker-zz"))
    with pytest.raises(UserError, match="iemocap4-loso"):
        get_protocol("iemocap")


def test_aggregate_mean_and_sample_std():
    folds = {"a": {"ua": 0.5, "wa": 0.6, "k_best": {"top3": None}, "n": 10,
                   "confusion": [[1]], "speakers": {"share_uar_ge_0.75": 1.0}},
             "b": {"ua": 0.7, "wa": 0.6, "k_best": {"top3": 0.9}, "n": 20,
                   "confusion": [[2]], "speakers": {"share_uar_ge_0.75": 0.0, "speakers": 2}},
             "c": {"ua": 0.9, "wa": 0.9, "k_best": {"top3": 0.8}, "n": 30}}
    agg = aggregate_folds(folds)
    assert agg["ua"]["mean"] == pytest.approx(0.7)
    assert agg["ua"]["std"] == pytest.approx(np.std([0.5, 0.7, 0.9], ddof=1))
    assert agg["k_best.top3"] == pytest.approx({"mean": 0.85, "std": np.std([0.9, 0.8], ddof=1),
                                                "folds": 2})
    assert agg["speakers.share_uar_ge_0.75"]["mean"] == 0.5
    assert "n" not in agg and "confusion" not in agg and "speakers.speakers" not in agg
    assert aggregate_folds([{"ua": 0.4}])["ua"] == {"mean": 0.4, "std": None, "folds": 1}


def test_one_registry_for_preparation_and_evaluation():
    """The prepare name and the old evaluation name of IEMOCAP 4-class are one protocol."""
    from reasoning.prepare.protocols import get_protocol as prepare_protocol
    assert get_protocol("iemocap4-loso") is get_protocol("iemocap4") is prepare_protocol("iemocap4", "iemocap")
    assert get_protocol("iemocap4").folds == "sessions"
    with pytest.raises(UserError, match="for evaluation"):
        get_protocol("iemocap_full")   # a label set without folds: preparation only
    with pytest.raises(UserError, match="not a protocol for meld"):
        prepare_protocol("meld-sentiment", "meld")  # sentiment is not an emotion label set
