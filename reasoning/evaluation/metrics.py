"""Metrics for every system the toolkit evaluates: emotion, VA, ASR and rationales.

Every function takes plain sequences (and numpy arrays for scores) and returns a plain,
JSON-able dict: floats, ints, strings, lists, ``None``. A value that is undefined on the
given inputs (a recall for a class with no utterance, a correlation of a constant) is
``None``, never NaN, so ``json.dumps`` writes ``null``.

Absent classes (documented rule, used everywhere below): a class of the label set with no
utterance in ``y_true`` (EmoDB speaker 08 has no disgust, so the leave-one-speaker-out fold
of speaker 08 has none) has no recall. Such a class is left out of UA, macro-F1 and a
speaker's UAR; it still appears in the confusion matrix and in ``per_class`` (recall
``None``, precision computed from its predictions, or ``None`` when it was never predicted).
Predicting an absent class is still an error: it lowers the recall of the true class. This
is scikit-learn's ``balanced_accuracy_score`` rule, applied to F1 as well.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from typing import Any, Iterable, Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from reasoning.rationales.verify import read_verdict

log = logging.getLogger(__name__)

SPEAKER_THRESHOLDS = (0.75, 0.5)
K_BEST = (1, 2, 3)
VA_DIMENSIONS = ("valence", "arousal")


def _num(x: float | None) -> float | None:
    """A float for JSON, or None for an undefined value (NaN, inf or None)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _check_labels(values: Sequence[str], label_set: Sequence[str], what: str) -> None:
    unknown = sorted(set(values) - set(label_set))
    if unknown:
        raise ValueError(f"{what} contains labels outside the label set {list(label_set)}: "
                         f"{unknown}. Filter the rows by the protocol's labels first.")


def _present(y_true: Sequence[str], label_set: Sequence[str]) -> list[str]:
    """Labels of ``label_set`` that occur in ``y_true``, in label-set order."""
    seen = set(y_true)
    return [c for c in label_set if c in seen]


def unweighted_recall(y_true: Sequence[str], y_pred: Sequence[str],
                      label_set: Sequence[str]) -> float | None:
    """Mean per-class recall over the classes present in ``y_true`` (UA / UAR)."""
    present = _present(y_true, label_set)
    if not present:
        return None
    yt, yp = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    return float(np.mean([np.mean(yp[yt == c] == c) for c in present]))


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str],
                           label_set: Sequence[str]) -> dict[str, Any]:
    """WA, UA, macro/weighted F1, per-class precision/recall/support and the confusion matrix.

    ``confusion[i][j]`` counts utterances of ``label_set[i]`` predicted as ``label_set[j]``.
    See the module docstring for classes absent from ``y_true``.
    """
    y_true, y_pred, label_set = list(y_true), list(y_pred), list(label_set)
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} labels but y_pred has {len(y_pred)}.")
    if not y_true:
        raise ValueError("no utterances to score: y_true is empty.")
    _check_labels(y_true, label_set, "y_true")
    _check_labels(y_pred, label_set, "y_pred")
    present = _present(y_true, label_set)
    cm = confusion_matrix(y_true, y_pred, labels=label_set)
    prec, rec, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=label_set, average=None, zero_division=np.nan)
    predicted = cm.sum(axis=0)
    per_class = {
        c: {"precision": _num(prec[i]) if predicted[i] else None,
            "recall": _num(rec[i]) if support[i] else None,
            "f1": _num(f1[i]) if support[i] else None,
            "support": int(support[i]),
            "predicted": int(predicted[i])}
        for i, c in enumerate(label_set)
    }
    return {
        "n": len(y_true),
        "wa": float(np.mean(np.asarray(y_true, dtype=object) == np.asarray(y_pred, dtype=object))),
        "ua": unweighted_recall(y_true, y_pred, label_set),
        "macro_f1": _num(f1_score(y_true, y_pred, labels=present, average="macro",
                                  zero_division=0.0)),
        "weighted_f1": _num(f1_score(y_true, y_pred, labels=label_set, average="weighted",
                                     zero_division=0.0)),
        "classes_present": present,
        "per_class": per_class,
        "labels": label_set,
        "confusion": cm.astype(int).tolist(),
    }


def k_best_accuracy(y_true: Sequence[str], scores: np.ndarray, label_set: Sequence[str],
                    ks: Iterable[int] = K_BEST) -> dict[str, float | None]:
    """Share of utterances whose true label is among the ``k`` highest-scored labels.

    ``scores``: (N, L), column ``j`` scores ``label_set[j]`` (probabilities, logits or
    log-likelihoods: only the order matters). Ties are broken by label-set order (a stable
    sort), so a constant score row ranks the first labels first. ``k > L`` gives ``None``.
    Returns ``{"top1": ..., "top2": ..., "top3": ...}``.
    """
    label_set = list(label_set)
    scores = np.asarray(scores, dtype=float)
    if scores.shape != (len(y_true), len(label_set)):
        raise ValueError(f"scores has shape {scores.shape}, expected ({len(y_true)}, "
                         f"{len(label_set)}) = (utterances, labels).")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinite values.")
    _check_labels(y_true, label_set, "y_true")
    index = {c: i for i, c in enumerate(label_set)}
    truth = np.array([index[c] for c in y_true])
    # rank[n, j] = position of label j in utterance n's descending order (0 = best)
    order = np.argsort(-scores, axis=1, kind="stable")
    rank = np.empty_like(order)
    rank[np.arange(len(order))[:, None], order] = np.arange(scores.shape[1])
    true_rank = rank[np.arange(len(truth)), truth]
    return {f"top{k}": (float(np.mean(true_rank < k)) if k <= len(label_set) else None)
            for k in ks}


def speaker_metrics(y_true: Sequence[str], y_pred: Sequence[str], speakers: Sequence[str],
                    label_set: Sequence[str], genders: Sequence[str | None] | None = None,
                    thresholds: Iterable[float] = SPEAKER_THRESHOLDS) -> dict[str, Any]:
    """Each speaker's UAR and the share of speakers whose UAR reaches each threshold.

    A speaker's UAR averages recall over the classes that speaker has (the absent-class
    rule). ``genders`` (``"f"``, ``"m"`` or None per utterance) adds ``by_gender``; a
    speaker's gender is the most common non-null value of their rows (speakers with none
    count under ``"unknown"``). Shares are over speakers, each speaker counting once.
    """
    n = len(y_true)
    if not (len(y_pred) == len(speakers) == n) or (genders is not None and len(genders) != n):
        raise ValueError("y_true, y_pred, speakers (and genders) must have the same length.")
    thresholds = list(thresholds)
    rows_of: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(speakers):
        if s is None:
            raise ValueError(f"utterance {i} has no speaker; speaker-level metrics need one "
                             "per utterance.")
        rows_of[str(s)].append(i)
    per_speaker: dict[str, dict[str, Any]] = {}
    for spk in sorted(rows_of):
        idx = rows_of[spk]
        yt = [y_true[i] for i in idx]
        yp = [y_pred[i] for i in idx]
        gender = None
        if genders is not None:
            votes = Counter(g for g in (genders[i] for i in idx) if g is not None)
            if len(votes) > 1:
                log.warning("speaker %s has rows with different genders %s; using the most "
                            "common", spk, dict(votes))
            gender = votes.most_common(1)[0][0] if votes else None
        per_speaker[spk] = {"uar": unweighted_recall(yt, yp, label_set),
                            "wa": float(np.mean([t == p for t, p in zip(yt, yp)])),
                            "n": len(idx), "classes": len(_present(yt, label_set)),
                            "gender": gender}

    def shares(spks: list[str]) -> dict[str, Any]:
        uars = [per_speaker[s]["uar"] for s in spks]
        out: dict[str, Any] = {"speakers": len(spks)}
        for t in thresholds:
            out[f"share_uar_ge_{t:g}"] = float(np.mean([u >= t for u in uars])) if uars else None
        out["mean_uar"] = float(np.mean(uars)) if uars else None
        return out

    result = {"per_speaker": per_speaker, **shares(list(per_speaker))}
    if genders is not None:
        groups: dict[str, list[str]] = defaultdict(list)
        for s, info in per_speaker.items():
            groups[info["gender"] or "unknown"].append(s)
        result["by_gender"] = {g: shares(groups[g]) for g in sorted(groups)}
    return result


def emotion_metrics(y_true: Sequence[str], y_pred: Sequence[str], label_set: Sequence[str],
                    scores: np.ndarray | None = None, speakers: Sequence[str] | None = None,
                    genders: Sequence[str | None] | None = None) -> dict[str, Any]:
    """All emotion metrics in one dict: :func:`classification_metrics`, plus ``k_best``
    (when ``scores`` (N, L) is given) and ``speakers`` (when ``speakers`` is given)."""
    out = classification_metrics(y_true, y_pred, label_set)
    if scores is not None:
        out["k_best"] = k_best_accuracy(y_true, scores, label_set)
    if speakers is not None:
        out["speakers"] = speaker_metrics(y_true, y_pred, speakers, label_set, genders)
    return out


# ---------------------------------------------------------------------------------- VA

def ccc(pred: Sequence[float], target: Sequence[float]) -> float | None:
    """Lin's concordance correlation coefficient.

    ``2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2)`` with population (1/N)
    moments, the form used by the AVEC challenges. ``None`` when both are constant and equal.
    """
    x, y = np.asarray(pred, dtype=float), np.asarray(target, dtype=float)
    denom = x.var() + y.var() + (x.mean() - y.mean()) ** 2
    if len(x) == 0 or denom == 0:
        return None
    return float(2 * np.mean((x - x.mean()) * (y - y.mean())) / denom)


def regression_metrics(pred: Sequence[float], target: Sequence[float]) -> dict[str, Any]:
    """CCC, Pearson r, MAE and RMSE of one dimension (``None`` where undefined)."""
    x, y = np.asarray(pred, dtype=float), np.asarray(target, dtype=float)
    if len(x) == 0:
        return {"n": 0, "ccc": None, "pearson_r": None, "mae": None, "rmse": None}
    r = None
    if len(x) > 1 and x.std() > 0 and y.std() > 0:
        r = float(np.corrcoef(x, y)[0, 1])
    return {"n": int(len(x)), "ccc": ccc(x, y), "pearson_r": _num(r),
            "mae": float(np.mean(np.abs(x - y))), "rmse": float(np.sqrt(np.mean((x - y) ** 2)))}


def va_metrics(targets: dict[str, Sequence[float | None]],
               predictions: dict[str, Sequence[float | None]],
               sources: Sequence[str | None]) -> dict[str, Any]:
    """Per-dimension VA metrics, separately for each ``va_source``.

    ``targets``/``predictions`` map a dimension (``valence``, ``arousal``, ...) to one value
    per utterance; ``sources`` gives each utterance's ``va_source`` (``annotated``,
    ``derived``; None is reported as ``unspecified``). Pairs where either value is missing
    are skipped. Returns ``{source: {dimension: regression_metrics}}``, sources with no pair
    left out.
    """
    n = len(sources)
    out: dict[str, Any] = {}
    for dim, tgt in targets.items():
        prd = predictions.get(dim)
        if prd is None:
            continue
        if len(tgt) != n or len(prd) != n:
            raise ValueError(f"{dim}: targets ({len(tgt)}), predictions ({len(prd)}) and "
                             f"sources ({n}) must have the same length.")
        by_source: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
        for t, p, s in zip(tgt, prd, sources):
            if t is None or p is None or not (math.isfinite(t) and math.isfinite(p)):
                continue
            by_source[s or "unspecified"][0].append(float(p))
            by_source[s or "unspecified"][1].append(float(t))
        for source, (p, t) in sorted(by_source.items()):
            out.setdefault(source, {})[dim] = regression_metrics(p, t)
    return out


# --------------------------------------------------------------------------------- ASR

def _normalizer(name: str):
    # Imported here: `import whisper` pulls in torch (seconds), which the other metrics
    # do not need.
    from whisper.normalizers import BasicTextNormalizer, EnglishTextNormalizer
    if name == "english":
        return EnglishTextNormalizer()
    if name == "basic":
        return BasicTextNormalizer()
    raise ValueError(f"normalizer {name!r}: use 'english' (Whisper's English normalizer) or "
                     "'basic' (lower-case, no punctuation; for other languages).")


def asr_metrics(references: Sequence[str | None], hypotheses: Sequence[str | None],
                normalizer: str = "english") -> dict[str, Any]:
    """Corpus WER and CER (jiwer) after Whisper's text normalizer.

    ``normalizer="english"`` is ``whisper.normalizers.EnglishTextNormalizer`` (spellings,
    numbers, contractions); ``"basic"`` the language-independent one. Utterances with no
    reference, or whose reference normalises to nothing, are skipped and counted in
    ``skipped`` (WER is undefined for an empty reference); a missing hypothesis counts as
    empty (all deletions). WER/CER are corpus-level: total edits over total reference words
    (characters), as jiwer computes them for lists.
    """
    import jiwer

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses.")
    norm = _normalizer(normalizer)
    refs, hyps, skipped = [], [], 0
    for r, h in zip(references, hypotheses):
        if r is None:
            skipped += 1
            continue
        nr, nh = norm(r).strip(), norm(h or "").strip()
        if not nr:
            skipped += 1
            continue
        refs.append(nr)
        hyps.append(nh)
    if not refs:
        return {"n": 0, "skipped": skipped, "wer": None, "cer": None, "normalizer": normalizer}
    return {"n": len(refs), "skipped": skipped, "wer": float(jiwer.wer(refs, hyps)),
            "cer": float(jiwer.cer(refs, hyps)), "normalizer": normalizer}


# -------------------------------------------------------------------------- rationales

def rationale_metrics(records: Sequence[dict | None],
                      predicted_labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Verifier pass rate, stated-emotion agreement and cues cited per rationale.

    One record per utterance (None when no rationale was generated). Expected keys:

    * ``text`` (str): the rationale;
    * ``verdict`` (``"pass"``, ``"fail"`` or None) and ``claims`` (``[{"cue": str,
      "supported": bool, ...}, ...]``): the verifier's result, in the one schema of
      :func:`reasoning.rationales.verify.verdict_fields` (read by ``read_verdict``);
    * ``emotion`` (str, optional): the emotion the rationale states.

    * ``passed_other_clip`` (bool or None, optional): the same rationale checked against the
      evidence of another clip of the same speaker (:func:`reasoning.explain.verify_rationales`).

    Returns rates over the records that have the needed field (``n_verified``,
    ``n_stated``), and cues per rationale = distinct ``cue`` names among its claims,
    averaged over records with a ``claims`` list. ``clip_specific_grounding`` is the pass
    rate against the clip's own evidence minus the pass rate against the other clip's, over
    the ``n_other_clip`` records checked both ways: 0 for rationales that fit any clip.
    """
    if predicted_labels is not None and len(predicted_labels) != len(records):
        raise ValueError(f"{len(records)} rationale records but {len(predicted_labels)} "
                         "predicted labels.")
    passed, match, cues, claims_total, claims_supported = [], [], [], 0, 0
    pairs: list[tuple[bool, bool]] = []  # (passed on its own clip, passed on the other clip)
    n_with = 0
    for i, rec in enumerate(records):
        if not rec:
            continue
        if not isinstance(rec, dict):
            raise ValueError(f"rationale record {i} is a {type(rec).__name__}, expected a dict "
                             "with 'text' and 'verdict'.")
        n_with += 1
        p, claims = read_verdict(rec, f"rationale record {i}")
        if p is not None:
            passed.append(p)
        if p is not None and rec.get("passed_other_clip") is not None:
            pairs.append((p, bool(rec["passed_other_clip"])))
        stated = rec.get("emotion")
        if stated is not None and predicted_labels is not None:
            match.append(str(stated).strip().lower() == str(predicted_labels[i]).strip().lower())
        if isinstance(claims, list):
            names = {c.get("cue") for c in claims if isinstance(c, dict) and c.get("cue")}
            cues.append(len(names))
            claims_total += len(claims)
            claims_supported += sum(1 for c in claims if isinstance(c, dict) and c.get("supported"))
    return {
        "n": len(records), "n_with_rationale": n_with,
        "n_verified": len(passed), "pass_rate": float(np.mean(passed)) if passed else None,
        "n_stated": len(match), "emotion_match_rate": float(np.mean(match)) if match else None,
        "n_with_claims": len(cues), "cues_per_rationale": float(np.mean(cues)) if cues else None,
        "supported_claim_rate": claims_supported / claims_total if claims_total else None,
        "n_other_clip": len(pairs),
        "other_clip_pass_rate": float(np.mean([o for _, o in pairs])) if pairs else None,
        "clip_specific_grounding": float(np.mean([s - o for s, o in pairs])) if pairs else None,
    }
