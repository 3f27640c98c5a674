"""Metrics against scikit-learn / numpy / scipy reference computations on fixed inputs."""

import json
import math

import jiwer
import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix,
                             f1_score, mean_absolute_error, precision_score, recall_score,
                             top_k_accuracy_score)

from reasoning.evaluation.metrics import (asr_metrics, ccc, classification_metrics, emotion_metrics,
                               k_best_accuracy, rationale_metrics, regression_metrics,
                               speaker_metrics, va_metrics)

LABELS = ["neutral", "happy", "angry", "sad"]


@pytest.fixture
def random_labels():
    rng = np.random.default_rng(0)
    y_true = list(rng.choice(LABELS, size=200, p=[0.4, 0.3, 0.2, 0.1]))
    # a classifier that is right about 60 % of the time
    y_pred = [t if rng.random() < 0.6 else str(rng.choice(LABELS)) for t in y_true]
    return y_true, y_pred


def test_classification_metrics_match_sklearn(random_labels):
    y_true, y_pred = random_labels
    m = classification_metrics(y_true, y_pred, LABELS)
    assert m["n"] == 200
    assert m["wa"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert m["ua"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert m["weighted_f1"] == pytest.approx(f1_score(y_true, y_pred, average="weighted"))
    assert m["confusion"] == confusion_matrix(y_true, y_pred, labels=LABELS).tolist()
    prec = precision_score(y_true, y_pred, labels=LABELS, average=None)
    rec = recall_score(y_true, y_pred, labels=LABELS, average=None)
    for i, c in enumerate(LABELS):
        assert m["per_class"][c]["precision"] == pytest.approx(prec[i])
        assert m["per_class"][c]["recall"] == pytest.approx(rec[i])
        assert m["per_class"][c]["support"] == y_true.count(c)
    json.dumps(m, allow_nan=False)  # plain JSON, no NaN


def test_absent_class_is_left_out_of_ua_and_macro_f1():
    # "sad" never occurs (like disgust for EmoDB speaker 08) but is predicted once.
    y_true = ["neutral", "neutral", "happy", "happy", "angry", "angry"]
    y_pred = ["neutral", "sad", "happy", "neutral", "angry", "angry"]
    m = classification_metrics(y_true, y_pred, LABELS)
    with pytest.warns(UserWarning):  # sklearn warns about the absent class it drops
        assert m["ua"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert m["ua"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    present = ["neutral", "happy", "angry"]
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, labels=present,
                                                   average="macro"))
    assert m["classes_present"] == present
    sad = m["per_class"]["sad"]
    assert sad == {"precision": 0.0, "recall": None, "f1": None, "support": 0, "predicted": 1}
    assert m["confusion"][3] == [0, 0, 0, 0]
    json.dumps(m, allow_nan=False)


def test_labels_outside_the_label_set_are_an_error():
    with pytest.raises(ValueError, match="surprise"):
        classification_metrics(["happy", "surprise"], ["happy", "happy"], LABELS)


def test_k_best_on_constructed_scores():
    y_true = ["neutral", "happy", "angry", "sad"]
    scores = np.array([
        [0.7, 0.1, 0.1, 0.1],   # true ranked 1st
        [0.5, 0.3, 0.2, 0.0],   # true ranked 2nd
        [0.4, 0.3, 0.2, 0.1],   # true ranked 3rd
        [0.4, 0.3, 0.2, 0.1],   # true ranked 4th
    ])
    assert k_best_accuracy(y_true, scores, LABELS) == {"top1": 0.25, "top2": 0.5, "top3": 0.75}
    # ties go by label order: a flat row ranks neutral, happy, angry, sad
    flat = np.full((4, 4), 0.25)
    assert k_best_accuracy(y_true, flat, LABELS) == {"top1": 0.25, "top2": 0.5, "top3": 0.75}
    # fewer labels than k
    assert k_best_accuracy(["a"], np.array([[0.2, 0.8]]), ["a", "b"]) == \
        {"top1": 0.0, "top2": 1.0, "top3": None}


def test_k_best_matches_sklearn_on_random_scores(random_labels):
    y_true, _ = random_labels
    scores = np.random.default_rng(1).normal(size=(len(y_true), 4))
    ordered = sorted(LABELS)  # sklearn wants the score columns in sorted label order
    got = k_best_accuracy(y_true, scores, ordered)
    for k in (1, 2, 3):
        assert got[f"top{k}"] == pytest.approx(
            top_k_accuracy_score(y_true, scores, k=k, labels=ordered))
    with pytest.raises(ValueError, match="shape"):
        k_best_accuracy(y_true, scores[:, :3], LABELS)


def test_speaker_metrics_known_answer():
    # Four speakers with UAR 1.0, 0.75, 0.5 and 0.25 (each has all four classes once,
    # except s5, who has only two classes and gets one right: UAR 0.5, not 0.25).
    y_true, y_pred, spk, gen = [], [], [], []
    for s, g, n_right in (("s1", "f", 4), ("s2", "m", 3), ("s3", "f", 2), ("s4", "m", 1)):
        for i, c in enumerate(LABELS):
            y_true.append(c)
            y_pred.append(c if i < n_right else LABELS[(i + 1) % 4])
            spk.append(s)
            gen.append(g)
    y_true += ["happy", "happy", "sad"]
    y_pred += ["happy", "happy", "happy"]
    spk += ["s5"] * 3
    gen += [None, "m", "m"]  # the speaker's gender is its most common non-null value
    m = speaker_metrics(y_true, y_pred, spk, LABELS, gen)
    uars = {s: v["uar"] for s, v in m["per_speaker"].items()}
    assert uars == pytest.approx({"s1": 1.0, "s2": 0.75, "s3": 0.5, "s4": 0.25, "s5": 0.5})
    assert m["per_speaker"]["s5"]["classes"] == 2
    assert m["speakers"] == 5
    assert m["share_uar_ge_0.75"] == pytest.approx(2 / 5)
    assert m["share_uar_ge_0.5"] == pytest.approx(4 / 5)
    assert m["by_gender"]["f"] == pytest.approx(
        {"speakers": 2, "share_uar_ge_0.75": 0.5, "share_uar_ge_0.5": 1.0, "mean_uar": 0.75})
    assert m["by_gender"]["m"]["speakers"] == 3
    assert m["by_gender"]["m"]["share_uar_ge_0.75"] == pytest.approx(1 / 3)
    assert m["by_gender"]["m"]["share_uar_ge_0.5"] == pytest.approx(2 / 3)


def test_emotion_metrics_bundles_everything(random_labels):
    y_true, y_pred = random_labels
    scores = np.random.default_rng(2).random((200, 4))
    spk = [f"s{i % 5}" for i in range(200)]
    m = emotion_metrics(y_true, y_pred, LABELS, scores=scores, speakers=spk,
                        genders=["f"] * 200)
    assert set(m["k_best"]) == {"top1", "top2", "top3"}
    assert m["speakers"]["speakers"] == 5
    json.dumps(m, allow_nan=False)


def test_ccc_against_its_formula():
    rng = np.random.default_rng(3)
    y = rng.uniform(-1, 1, 100)
    x = 0.6 * y + 0.2 + rng.normal(0, 0.2, 100)
    cov = np.cov(x, y, bias=True)
    expected = 2 * cov[0, 1] / (cov[0, 0] + cov[1, 1] + (x.mean() - y.mean()) ** 2)
    assert ccc(x, y) == pytest.approx(expected)
    assert ccc(y, y) == pytest.approx(1.0)
    yc = y - y.mean()
    assert ccc(-yc, yc) == pytest.approx(-1.0)
    assert ccc(y + 0.5, y) < 1.0  # a shift is penalised, unlike Pearson's r
    assert ccc([0.1, 0.1], [0.1, 0.1]) is None


def test_regression_metrics_match_references():
    rng = np.random.default_rng(4)
    y = rng.uniform(-1, 1, 50)
    x = y + rng.normal(0, 0.3, 50)
    m = regression_metrics(x, y)
    assert m["pearson_r"] == pytest.approx(pearsonr(x, y)[0])
    assert m["mae"] == pytest.approx(mean_absolute_error(y, x))
    assert m["rmse"] == pytest.approx(math.sqrt(np.mean((x - y) ** 2)))
    assert m["n"] == 50
    assert regression_metrics([0.2, 0.2], [0.1, 0.5])["pearson_r"] is None


def test_va_metrics_separate_sources_and_skip_missing():
    targets = {"valence": [0.5, -0.5, 0.0, 0.2, None], "arousal": [0.1, 0.2, 0.3, 0.4, 0.5]}
    preds = {"valence": [0.4, -0.4, 0.1, 0.9, 0.3], "arousal": [0.0, 0.2, 0.4, 0.4, None]}
    sources = ["annotated", "annotated", "annotated", "derived", "derived"]
    m = va_metrics(targets, preds, sources)
    assert set(m) == {"annotated", "derived"}
    assert m["annotated"]["valence"] == regression_metrics([0.4, -0.4, 0.1], [0.5, -0.5, 0.0])
    assert m["derived"]["valence"]["n"] == 1  # the pair with no target is skipped
    assert m["derived"]["arousal"]["n"] == 1  # the pair with no prediction is skipped
    assert m["derived"]["valence"]["mae"] == pytest.approx(0.7)
    json.dumps(m, allow_nan=False)


def test_asr_metrics_use_whisper_english_normalizer():
    refs = ["The cat sat on the mat.", "Hello, World!", "It's 20 dollars", None]
    hyps = ["the cat sat on a mat", "hello world", "it is twenty dollars", "ignored"]
    m = asr_metrics(refs, hyps)
    assert m["n"] == 3 and m["skipped"] == 1
    # after normalisation only "the" -> "a" differs: 1 error over 6 + 2 + 3 words
    assert m["wer"] == pytest.approx(1 / 11)
    assert m["cer"] == pytest.approx(jiwer.cer(
        ["the cat sat on the mat", "hello world", "it is $20"],
        ["the cat sat on a mat", "hello world", "it is $20"]))
    raw = jiwer.wer([r for r in refs if r], hyps[:3])
    assert raw > m["wer"]  # without the normaliser case and punctuation count as errors
    assert asr_metrics(["abc"], [None])["wer"] == 1.0


def test_rationale_metrics_on_constructed_records():
    records = [
        {"text": "High pitch and loud.", "writer": "template", "emotion": "angry",
         "verdict": "pass", "claims": [{"cue": "pitch", "supported": True},
                                       {"cue": "loudness", "supported": True}]},
        # the dict form explain wrote before the verdict schema was one
        {"text": "Slow and low.", "writer": "llm", "emotion": "sad",
         "verdict": {"passed": False,
                     "claims": [{"cue": "rate", "supported": False},
                                {"cue": "pitch", "supported": True},
                                {"cue": "pitch", "supported": True}]}},
        {"text": "?", "writer": "llm", "verdict": "pass"},
        None,
    ]
    m = rationale_metrics(records, ["angry", "happy", "neutral", "sad"])
    assert m["n"] == 4 and m["n_with_rationale"] == 3
    assert m["n_verified"] == 3 and m["pass_rate"] == pytest.approx(2 / 3)
    assert m["n_stated"] == 2 and m["emotion_match_rate"] == 0.5
    assert m["n_with_claims"] == 2 and m["cues_per_rationale"] == 2.0  # distinct cues
    assert m["supported_claim_rate"] == pytest.approx(4 / 5)
    with pytest.raises(ValueError, match="predicted labels"):
        rationale_metrics(records, ["angry"])
