"""Classical baselines, trained and tested on the same fold as the model.

* ``majority``: always the most frequent training label; its scores are the training
  label frequencies (so its k-best accuracy ranks labels by prior).
* ``egemaps``: openSMILE eGeMAPS v02 functionals (88 per clip) -> mean imputation ->
  StandardScaler -> LogisticRegression(class_weight="balanced"): the openSMILE reference
  baseline. openSMILE fills a clip too short to measure with NaN (and warns); the
  imputer gives it the training means.
* ``tfidf``: transcript word uni- and bigrams, TF-IDF (sublinear tf) -> the same logistic
  regression. It runs only where every train and test row has a transcript.
* ``probe``: the model's own frozen speech encoder, mean-pooled at one hidden layer
  (features from :mod:`reasoning.evaluation.probe`) -> StandardScaler -> the same logistic regression:
  what the LLM adds over its encoder, as EmoBox measures encoders. The layer is chosen on
  the fold's training rows only, by a speaker-grouped inner cross-validation (UA per
  layer); the prediction dict adds ``layer_choice`` (:func:`choose_probe_layer`). It needs
  an encoder, so it is not among the :data:`DEFAULT_BASELINES` of ``emoreason eval``.

Each returns a prediction dict in the format of the model's ``predict_rows`` so that
:mod:`reasoning.evaluation.metrics` treats all systems alike::

    {"labels": [str] * N, "scores": np.ndarray (N, L), "label_set": [str] * L,
     "valence": None, "arousal": None, "rationales": None}

``scores[n, j]`` is the probability of ``label_set[j]``; a label absent from the training
fold gets probability 0 (it cannot be predicted).

eGeMAPS features are cached per clip in an ``.npz`` (keyed by audio path + start + end,
checked against the file's size and modification time) so folds and later runs do not
recompute them.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from reasoning.audio import SAMPLE_RATE, load_audio
from reasoning.errors import AudioError, UserError
from reasoning.evaluation.metrics import unweighted_recall
from reasoning.files import atomic_file, file_stamp

log = logging.getLogger(__name__)

EGEMAPS_CACHE_NAME = "egemaps_cache.npz"
PROBE_CACHE_DIR = "probe_cache"  # reasoning.evaluation.probe's pooled encoder features, one file per clip
FEATURE_SET = "eGeMAPSv02/Functionals"
BASELINE_NAMES = ("majority", "egemaps", "tfidf", "probe")
# what `emoreason eval` runs when not told: the probe needs a speech encoder (--probe-encoder)
DEFAULT_BASELINES = ("majority", "egemaps", "tfidf")
PROBE_INNER_FOLDS = 5


def make_prediction(labels: Sequence[str], scores: np.ndarray, label_set: Sequence[str]) -> dict:
    """A prediction dict in the shared format (no VA, no rationales)."""
    return {"labels": list(labels), "scores": np.asarray(scores, dtype=float),
            "label_set": list(label_set), "valence": None, "arousal": None,
            "rationales": None}


def _targets(rows: Sequence[dict], label_key: str, label_set: Sequence[str]) -> list[str]:
    y = [r.get(label_key) for r in rows]
    bad = [(r.get("id"), v) for r, v in zip(rows, y) if v not in label_set]
    if bad:
        raise UserError(f"{len(bad)} rows have a '{label_key}' outside {list(label_set)}, "
                        f"e.g. {bad[0]}. Filter rows by the protocol first.")
    return y


def majority_baseline(train_rows: Sequence[dict], test_rows: Sequence[dict],
                      label_set: Sequence[str], label_key: str = "emotion") -> dict:
    """Predict the most frequent training label (ties: the first in ``label_set``)."""
    y = _targets(train_rows, label_key, label_set)
    counts = Counter(y)
    prior = np.array([counts[c] for c in label_set], dtype=float) / len(y)
    best = label_set[int(np.argmax(prior))]  # argmax takes the first of equal counts
    return make_prediction([best] * len(test_rows), np.tile(prior, (len(test_rows), 1)),
                           label_set)


def _fit_predict(model: Pipeline, x_train, y_train: list[str], x_test,
                 label_set: Sequence[str], n_test: int) -> dict:
    classes = sorted(set(y_train))
    scores = np.zeros((n_test, len(label_set)))
    if len(classes) == 1:
        # LogisticRegression cannot fit one class; the only sensible answer is that class.
        log.warning("training fold has one class (%s); predicting it for every test row",
                    classes[0])
        scores[:, list(label_set).index(classes[0])] = 1.0
    else:
        model.fit(x_train, y_train)
        proba = model.predict_proba(x_test)
        for j, c in enumerate(model.classes_):
            scores[:, list(label_set).index(c)] = proba[:, j]
    labels = [label_set[i] for i in np.argmax(scores, axis=1)]
    return make_prediction(labels, scores, label_set)


def _logistic() -> LogisticRegression:
    # lbfgs is deterministic; class_weight="balanced" is what makes this a UA baseline
    # rather than a majority-class one on skewed corpora such as MELD.
    return LogisticRegression(class_weight="balanced", max_iter=5000)


# ------------------------------------------------------------------------------ eGeMAPS

def audio_span(row: Mapping) -> str:
    """The eGeMAPS cache's key of a row's clip: absolute audio path, start and end (the
    file's size and mtime are stored beside it)."""
    start = "" if row.get("start") is None else repr(float(row["start"]))
    end = "" if row.get("end") is None else repr(float(row["end"]))
    return f"{os.path.abspath(str(row['audio']))}|{start}|{end}"


class EgemapsCache:
    """eGeMAPS functionals per clip, kept in one ``.npz`` (``path=None``: memory only)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, tuple[tuple[int, int], np.ndarray]] = {}
        self._smile = None
        self._dirty = False
        if self.path is not None and self.path.is_file():
            try:
                with np.load(self.path, allow_pickle=False) as data:
                    if str(data["feature_set"]) != FEATURE_SET:
                        raise ValueError(f"feature set {data['feature_set']}")
                    for k, s, v in zip(data["keys"], data["stamps"], data["values"]):
                        self.entries[str(k)] = ((int(s[0]), int(s[1])), v)
            except (OSError, ValueError, KeyError) as err:
                log.warning("%s: cache not usable (%s); features will be recomputed",
                            self.path, err)
                self.entries = {}
            else:
                log.info("%s: %d cached eGeMAPS clips", self.path, len(self.entries))

    def _extractor(self):
        if self._smile is None:
            import opensmile

            self._smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                                          feature_level=opensmile.FeatureLevel.Functionals)
        return self._smile

    def features(self, row: Mapping) -> np.ndarray:
        """The 88 functionals of one row's clip (shape (88,)); raises :class:`AudioError`."""
        key = audio_span(row)
        path = str(row["audio"])
        try:
            stamp = file_stamp(path)
        except OSError as err:
            raise AudioError(f"{path}: no such audio file ({err.strerror}).") from err
        hit = self.entries.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        wave = load_audio(path, row.get("start"), row.get("end"))
        values = self._extractor().process_signal(wave, SAMPLE_RATE).to_numpy()[0]
        values = values.astype(np.float64)
        self.entries[key] = (stamp, values)
        self._dirty = True
        return values

    def save(self) -> None:
        """Write the cache atomically (no-op in memory-only mode or when nothing changed)."""
        if self.path is None or not self._dirty:
            return
        keys = list(self.entries)
        with atomic_file(self.path, "wb") as f:
            np.savez(f, feature_set=np.array(FEATURE_SET), keys=np.array(keys, dtype=str),
                     stamps=np.array([self.entries[k][0] for k in keys], dtype=np.int64),
                     values=np.stack([self.entries[k][1] for k in keys]))
        self._dirty = False


def extract_egemaps(rows: Sequence[dict], cache: EgemapsCache | None = None,
                    progress: bool | None = None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """eGeMAPS functionals of every row: ``({id: (88,) array}, {id: error message})``.

    A clip that cannot be read is reported in the second dict and the others go on; the
    cache is saved at the end (also after an interruption by an unexpected error).
    """
    from tqdm import tqdm

    cache = cache or EgemapsCache()
    feats: dict[str, np.ndarray] = {}
    failed: dict[str, str] = {}
    try:
        # disable=None: a bar on a terminal, none in logs and CI.
        for row in tqdm(rows, desc="eGeMAPS", unit="clip",
                        disable=True if progress is False else None):
            try:
                feats[row["id"]] = cache.features(row)
            except AudioError as err:
                failed[row["id"]] = str(err)
    finally:
        cache.save()
    if failed:
        log.warning("eGeMAPS: %d of %d clips could not be read, e.g. %s", len(failed),
                    len(rows), next(iter(failed.values())))
    return feats, failed


def egemaps_baseline(train_rows: Sequence[dict], test_rows: Sequence[dict],
                     label_set: Sequence[str], label_key: str = "emotion",
                     features: Mapping[str, np.ndarray] | None = None,
                     cache: EgemapsCache | None = None) -> dict:
    """eGeMAPS functionals + standardised, class-balanced logistic regression.

    ``features`` ({row id: (88,) array}, from :func:`extract_egemaps`) avoids recomputing
    per fold; rows missing from it are extracted here (through ``cache``).
    """
    def matrix(rows: Sequence[dict]) -> np.ndarray:
        missing = [r for r in rows if features is None or r["id"] not in features]
        extra = extract_egemaps(missing, cache, progress=False)[0] if missing else {}
        out = []
        for r in rows:
            vec = features.get(r["id"]) if features is not None else None
            vec = extra.get(r["id"]) if vec is None else vec
            if vec is None:
                raise AudioError(f"row {r['id']!r}: no eGeMAPS features (its audio "
                                 f"{r.get('audio')} could not be read).")
            out.append(vec)
        return np.stack(out)

    y = _targets(train_rows, label_key, label_set)
    model = make_pipeline(SimpleImputer(strategy="mean", keep_empty_features=True),
                          StandardScaler(), _logistic())
    return _fit_predict(model, matrix(train_rows), y, matrix(test_rows), label_set,
                        len(test_rows))


# ------------------------------------------------------------------------------ TF-IDF

def missing_transcripts(rows: Sequence[dict]) -> int:
    """How many rows have no usable transcript."""
    return sum(1 for r in rows if not (r.get("transcript") or "").strip())


def tfidf_baseline(train_rows: Sequence[dict], test_rows: Sequence[dict],
                   label_set: Sequence[str], label_key: str = "emotion") -> dict:
    """Transcript TF-IDF (word 1-2 grams) + class-balanced logistic regression."""
    n_missing = missing_transcripts(train_rows) + missing_transcripts(test_rows)
    if n_missing:
        raise UserError(f"tfidf baseline: {n_missing} rows have no transcript; it runs only "
                        "where every row has one.")
    y = _targets(train_rows, label_key, label_set)
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), _logistic())
    return _fit_predict(model, [r["transcript"] for r in train_rows], y,
                        [r["transcript"] for r in test_rows], label_set, len(test_rows))


# ------------------------------------------------------------------------- encoder probe

def _inner_splits(y: Sequence[str], groups: Sequence, n_splits: int
                  ) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """Inner folds over the training rows and what they are grouped by: by speaker when
    there are at least 2 (no speaker on both sides), else stratified by class."""
    n = len(y)
    if n < 2:
        raise UserError(f"probe baseline: {n} training row; the layer choice needs at least 2.")
    speakers = set(groups)
    if None not in speakers and len(speakers) >= 2:
        cv = GroupKFold(n_splits=min(n_splits, len(speakers)))
        return list(cv.split(np.zeros(n), y, groups=list(groups))), "speaker"
    smallest = min(Counter(y).values())
    cv = StratifiedKFold(n_splits=min(n_splits, n, max(2, smallest)), shuffle=True, random_state=0)
    return list(cv.split(np.zeros(n), y)), "class"


def choose_probe_layer(x: np.ndarray, y: Sequence[str], groups: Sequence,
                       label_set: Sequence[str], n_splits: int = PROBE_INNER_FOLDS) -> dict:
    """The hidden layer whose pooled features (x: (N, L, D) of *training* rows only) best
    predict ``y`` (N labels) under an inner cross-validation grouped by ``groups`` (N speaker
    ids; fewer than 2 speakers: stratified folds instead).

    Each layer's score is the UA of its out-of-fold predictions over all N rows (the same
    standardised, class-balanced logistic regression as the final fit). Returns
    ``{"layer": best (the lowest on ties), "inner_ua": [UA of layer 0 .. L-1],
    "inner_folds": k, "grouped_by": "speaker" | "class"}``.
    """
    x = np.asarray(x)
    y = list(y)
    splits, grouped_by = _inner_splits(y, groups, n_splits)
    scores = []
    for layer in range(x.shape[1]):
        pred = np.empty(len(y), dtype=object)
        for tr, te in splits:
            fold = _fit_predict(make_pipeline(StandardScaler(), _logistic()), x[tr, layer],
                                [y[i] for i in tr], x[te, layer], label_set, len(te))
            pred[te] = fold["labels"]
        scores.append(unweighted_recall(y, list(pred), label_set))
    best = int(np.argmax(scores))
    log.info("probe: layer %d chosen (inner UA per layer: %s; %d folds by %s)", best,
             " ".join(f"{s:.3f}" for s in scores), len(splits), grouped_by)
    return {"layer": best, "inner_ua": scores, "inner_folds": len(splits),
            "grouped_by": grouped_by}


def probe_baseline(train_rows: Sequence[dict], test_rows: Sequence[dict],
                   label_set: Sequence[str], label_key: str = "emotion",
                   features: Mapping[str, np.ndarray] | None = None) -> dict:
    """The encoder probe: choose a layer on ``train_rows`` (:func:`choose_probe_layer`),
    then a standardised, class-balanced logistic regression on all training rows at that
    layer. ``features``: {row id: (L, D) pooled layers} from
    :func:`reasoning.evaluation.probe.extract_probe_features`. The prediction dict adds
    ``layer_choice``."""
    if features is None:
        raise UserError("probe baseline: no encoder features. `emoreason eval --baselines "
                        "...,probe` needs --probe-encoder PATH (a Whisper folder) or "
                        "--checkpoint; `emoreason benchmark` uses the recipe's model.speech.")

    def tensor(rows: Sequence[dict]) -> np.ndarray:  # (N, L, D)
        missing = [r["id"] for r in rows if r["id"] not in features]
        if missing:
            raise AudioError(f"probe baseline: no encoder features for {len(missing)} rows, "
                             f"e.g. {missing[0]!r} (its audio could not be read).")
        return np.stack([features[r["id"]] for r in rows])

    y = _targets(train_rows, label_key, label_set)
    x_train = tensor(train_rows)
    choice = choose_probe_layer(x_train, y, [r.get("speaker") for r in train_rows], label_set)
    layer = choice["layer"]
    pred = _fit_predict(make_pipeline(StandardScaler(), _logistic()), x_train[:, layer], y,
                        tensor(test_rows)[:, layer], label_set, len(test_rows))
    pred["layer_choice"] = choice
    return pred


BASELINES: dict[str, Callable[..., dict]] = {
    "majority": majority_baseline,
    "egemaps": egemaps_baseline,
    "tfidf": tfidf_baseline,
    "probe": probe_baseline,
}
