"""`emoreason eval`: a checkpoint and the classical baselines under one protocol.

    emoreason eval --manifest M --protocol iemocap4-loso|meld7|meld-sentiment|loso|msp-podcast \\
        --out DIR [--checkpoint CKPT] [--baselines majority,egemaps,tfidf,probe]
        [--probe-encoder WHISPER_DIR]

Every system is trained (baselines) or applied (the model) fold by fold on the same rows
and scored by the same code, :mod:`reasoning.evaluation.metrics`. Without ``--checkpoint`` only the
baselines run. The ``probe`` baseline (a linear probe on the speech encoder) needs that
encoder: ``--probe-encoder``, or the ``model.speech`` of the checkpoint's ``recipe.yaml``; it
runs only when asked for.

The model seam: ``reasoning.explain.predict_rows(checkpoint_dir, rows)`` returns

    {"labels": [str] * N,            # predicted label per row
     "scores": np.ndarray (N, L),    # label scores (probabilities or log-likelihoods)
     "label_set": [str] * L,         # column order of scores
     "valence": [float] * N | None, "arousal": [float] * N | None,
     "dominance": [float] * N | None,          # optional: a VAD head's third dimension
     "rationales": [dict | None] * N | None,   # {text, writer, verdict, emotion}
     "transcripts": [str] * N | None,          # optional: ASR hypotheses
     "prompt": dict | None,                    # optional: what the prompts held (transcript mode...)
     "oracle_va": dict | None}                 # optional: a prediction dict of the same model with
                                               # the gold valence/arousal in its prompts (two-step),
                                               # scored as the system `model-oracle-va`

Scores are re-ordered to the protocol's label set by name; labels the protocol does not
score are dropped and the prediction becomes the best-scored protocol label.

Checkpoints under a multi-fold protocol: a model must not be tested on speakers it was
trained on, so ``--checkpoint DIR`` needs one sub-folder per fold (``DIR/speaker-03``,
``DIR/session1``, ...), or ``--fold NAME`` to evaluate one fold with ``DIR`` itself.
Under ``msp-podcast`` every fold trains on the same rows, so ``DIR`` itself serves all of
them (each test set is still reported on its own).

Rows whose audio is missing or unreadable (when a system needs audio) are left out for
every system, so all systems are scored on the same utterances; they are counted in
``metrics.json`` under ``rows.excluded``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from reasoning.evaluation.baselines import (BASELINE_NAMES, BASELINES, DEFAULT_BASELINES, EGEMAPS_CACHE_NAME,
                                 PROBE_CACHE_DIR, EgemapsCache, extract_egemaps,
                                 missing_transcripts)
from reasoning.training.checkpoint import add_device_argument, read_recipe, resolve_device
from reasoning.training.config import RECIPE_NAME, SpeechEncoderConfig, load_recipe, recipe_hash
from reasoning.errors import UserError
from reasoning.evaluation.folds import (PROTOCOLS, Protocol, aggregate_folds, get_protocol, iter_folds,
                             select_rows)
from reasoning.manifest import DIMENSIONS, read_manifest
from reasoning.evaluation.metrics import asr_metrics, emotion_metrics, rationale_metrics, va_metrics
from reasoning.prepare.protocols import protocol_names
from reasoning.evaluation.report import (METRICS_NAME, TABLE_NAME, json_default, package_versions,
                              write_json, write_report)

log = logging.getLogger(__name__)

MODEL_NAME = "model"
ORACLE_NAME = "model-oracle-va"
PROBE_NAME = "probe"
PROBE_FLAG = "--probe-encoder"
PREDICTIONS_DIR = "predictions"

# (fold name, test rows) -> prediction dict
Predictor = Callable[[str, list[dict]], dict]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `emoreason eval`."""
    parser.add_argument("--manifest", required=True, help="manifest.jsonl to evaluate on")
    parser.add_argument("--protocol", required=True, choices=protocol_names(evaluation=True),
                        help="labels and folds: " + "; ".join(
                            f"{p.name}: {p.description}" for p in PROTOCOLS.values() if p.folds))
    parser.add_argument("--out", required=True, help="run folder for metrics.json, report.md, "
                        "plots/ and predictions/")
    parser.add_argument("--checkpoint", default=None,
                        help="trained model (a folder per fold for multi-fold protocols, or "
                        "use --fold); without it only the baselines run")
    add_device_argument(parser)
    parser.add_argument("--baselines", default=",".join(DEFAULT_BASELINES),
                        help=f"comma-separated subset of {','.join(BASELINE_NAMES)}, or 'none' "
                        f"(default: {','.join(DEFAULT_BASELINES)}; tfidf runs only where every "
                        f"row has a transcript; probe needs {PROBE_FLAG} or --checkpoint)")
    parser.add_argument(PROBE_FLAG, default=None, metavar="PATH",
                        help="Whisper model folder (or $EMOREASON_MODELS/NAME) whose frozen "
                        "encoder the probe baseline reads; default with --checkpoint: its "
                        "recipe's model.speech")
    parser.add_argument("--probe-cache", default=None, metavar="DIR",
                        help=f"pooled encoder features per clip; default OUT/{PROBE_CACHE_DIR}")
    parser.add_argument("--fold", default=None, help="evaluate only this fold (e.g. speaker-03, "
                        "session5)")
    parser.add_argument("--dev-speakers", type=int, default=0,
                        help="session/speaker folds: hold out this many training speakers as "
                        "a dev set for model selection (default 0: no dev set)")
    parser.add_argument("--cache", default=None, help="eGeMAPS feature cache (.npz); default "
                        f"OUT/{EGEMAPS_CACHE_NAME}")
    parser.add_argument("--asr-normalizer", choices=("english", "basic"), default="english",
                        help="text normalizer before WER/CER: Whisper's English one, or the "
                        "basic one for other languages")


def parse_baselines(text: str) -> list[str]:
    """``"majority,egemaps"`` -> ``["majority", "egemaps"]``; ``"none"`` -> ``[]``."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["none"]:
        return []
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise UserError(f"--baselines: unknown {unknown}; choose from "
                        f"{', '.join(BASELINE_NAMES)} or 'none'.")
    return list(dict.fromkeys(names))


def align_prediction(pred: dict, label_set: Sequence[str], n: int, system: str) -> dict:
    """Check a prediction dict and re-order its scores to ``label_set`` (see module doc)."""
    if not isinstance(pred, dict) or "scores" not in pred or "label_set" not in pred:
        raise UserError(f"{system}: the prediction must be a dict with 'labels', 'scores' and "
                        "'label_set'.")
    scores = np.asarray(pred["scores"], dtype=float)
    own = [str(c) for c in pred["label_set"]]
    if scores.shape != (n, len(own)):
        raise UserError(f"{system}: scores have shape {scores.shape}, expected ({n}, {len(own)})"
                        " = (rows, labels).")
    missing = [c for c in label_set if c not in own]
    if missing:
        raise UserError(f"{system}: the model does not score {missing} (its labels: {own}); "
                        "train it with the protocol's label set.")
    scores = scores[:, [own.index(c) for c in label_set]]
    if not np.all(np.isfinite(scores)):
        raise UserError(f"{system}: the scores contain NaN or infinite values.")
    labels = pred.get("labels")
    if own != list(label_set) or labels is None:
        labels = [label_set[i] for i in np.argmax(scores, axis=1)]
    elif len(labels) != n:
        raise UserError(f"{system}: {len(labels)} labels for {n} rows.")
    elif not set(labels) <= set(label_set):
        raise UserError(f"{system}: predicted labels {sorted(set(labels) - set(label_set))} "
                        f"are not in its label_set {list(label_set)}.")
    out = dict(pred)
    out.update(labels=list(labels), scores=scores, label_set=list(label_set))
    for key in (*DIMENSIONS, "rationales", "transcripts"):
        if out.get(key) is not None and len(out[key]) != n:
            raise UserError(f"{system}: '{key}' has {len(out[key])} values for {n} rows.")
    return out


def score_prediction(rows: Sequence[dict], pred: dict, label_set: Sequence[str],
                     label_key: str, asr_normalizer: str = "english") -> dict[str, Any]:
    """All metrics of one system on ``rows``: emotion (+ k-best, + speakers when every row
    has one), VA when predicted, ASR when transcripts are predicted, rationales when given."""
    y_true = [r[label_key] for r in rows]
    speakers = [r.get("speaker") for r in rows]
    have_speakers = all(s is not None for s in speakers)
    out = emotion_metrics(y_true, pred["labels"], label_set, scores=pred["scores"],
                          speakers=speakers if have_speakers else None,
                          genders=[r.get("gender") for r in rows] if have_speakers else None)
    dims = [d for d in DIMENSIONS if pred.get(d) is not None]
    if dims:
        out["va"] = va_metrics({d: [r.get(d) for r in rows] for d in dims},
                               {d: pred[d] for d in dims}, [r.get("va_source") for r in rows])
    if pred.get("transcripts") is not None:
        out["asr"] = asr_metrics([r.get("transcript") for r in rows], pred["transcripts"],
                                 asr_normalizer)
    if pred.get("rationales") is not None:
        out["rationales"] = rationale_metrics(pred["rationales"], pred["labels"])
    return out


def _recipe_hash(checkpoint: Path) -> str | None:
    """The recipe hash of ``checkpoint/recipe.yaml``; None without a recipe."""
    path = checkpoint / RECIPE_NAME
    return recipe_hash(load_recipe(path)) if path.is_file() else None


def checkpoint_predictor(checkpoint: str | Path, folds: Sequence[str],
                         device: str | None = None, shared: bool = False) -> tuple[Predictor, dict]:
    """A :data:`Predictor` over ``reasoning.explain.predict_rows`` and the recipe hash(es).

    Each fold uses ``checkpoint/<fold>`` when that folder exists; a single fold, or folds
    that all train on the same rows (``shared``: MSP-Podcast's test sets), may use
    ``checkpoint`` itself.
    """
    root = Path(checkpoint)
    if not root.is_dir():
        raise UserError(f"--checkpoint {root}: no such folder.")
    per_fold = {f: root / f for f in folds if (root / f).is_dir()}
    if len(per_fold) != len(folds):
        if len(folds) > 1 and not shared:
            raise UserError(
                f"--checkpoint {root}: the protocol has {len(folds)} folds but the checkpoint "
                f"has no sub-folder for {[f for f in folds if f not in per_fold][:3]}. A model "
                "must be trained per fold (one folder each), or pass --fold NAME to evaluate "
                "one fold with this checkpoint.")
        per_fold = {f: root for f in folds}
    from reasoning.explain import predict_rows  # the inference stack (transformers, peft)

    hashes = {f: _recipe_hash(p) for f, p in per_fold.items()}

    def predict(fold: str, rows: list[dict]) -> dict:
        return predict_rows(str(per_fold[fold]), rows, device=device)

    return predict, hashes


def probe_speech_config(encoder: str | None, checkpoint: str | Path | None = None,
                        folds: Sequence[str] = ()):
    """The ``model.speech`` config of the probe's encoder: ``SpeechEncoderConfig(path=encoder)``
    (defaults for the rest) when given, else the one in the checkpoint's ``recipe.yaml``
    (``checkpoint/<fold>/`` first, then ``checkpoint/``). None when neither is given."""
    from reasoning.pretrained import resolve_model_path

    if encoder is not None:
        folder = Path(resolve_model_path(encoder))
        if not (folder / "config.json").is_file():
            raise UserError(f"{PROBE_FLAG} {encoder}: {folder} is not a model folder (no "
                            "config.json). Give a Whisper transformers folder, e.g. "
                            "$EMOREASON_MODELS/whisper-base (`emoreason models fetch "
                            "whisper-base` installs it).")
        return SpeechEncoderConfig(path=encoder)
    if checkpoint is None:
        return None
    root = Path(checkpoint)
    for path in [root / f / RECIPE_NAME for f in folds] + [root / RECIPE_NAME]:
        if path.is_file():  # read_recipe: an export's recipe names its own folders relative to it
            return read_recipe(path.parent).model.speech
    raise UserError(f"--checkpoint {root}: no {RECIPE_NAME} there (nor in a fold folder) to "
                    f"take the probe's speech encoder from; pass {PROBE_FLAG} PATH.")


def _write_predictions(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False, default=json_default) + "\n")


def _drop_unusable(rows: list[dict], systems: list[str], cache_path: Path,
                   excluded: dict, skipped: dict, probe_speech=None,
                   probe_dir: Path | None = None) -> tuple[list[dict], dict[str, dict]]:
    """Leave out, for every system, the rows a system cannot use; compute each baseline's
    audio features once (eGeMAPS; the probe's pooled encoder layers with ``probe_speech``,
    a ``model.speech`` config, cached under ``probe_dir``).

    Updates ``excluded`` (row counts by reason) and ``skipped`` (systems not run, with the
    reason; ``systems`` loses them). Returns the usable rows and ``{system: {row id:
    features}}``.
    """
    features: dict[str, dict] = {}

    def drop(rows: list[dict], failed: dict) -> list[dict]:
        if failed:
            excluded["audio unreadable"] = excluded.get("audio unreadable", 0) + len(failed)
        return [r for r in rows if r["id"] not in failed]

    if {MODEL_NAME, "egemaps", PROBE_NAME} & set(systems):
        missing = {r["id"] for r in rows if not os.path.isfile(str(r["audio"]))}
        if missing:
            log.warning("%d rows have no audio file and are left out for every system, e.g. "
                        "%s", len(missing), next(r["audio"] for r in rows if r["id"] in missing))
            excluded["audio file missing"] = len(missing)
            rows = [r for r in rows if r["id"] not in missing]
    if "egemaps" in systems:
        features["egemaps"], failed = extract_egemaps(rows, EgemapsCache(cache_path))
        rows = drop(rows, failed)
    if PROBE_NAME in systems:
        from reasoning.evaluation.probe import extract_probe_features, load_probe_encoder, probe_cache

        encoder = load_probe_encoder(probe_speech)
        features[PROBE_NAME], failed = extract_probe_features(
            rows, encoder, probe_cache(encoder, probe_speech, probe_dir), probe_speech.max_seconds)
        rows = drop(rows, failed)
    if "tfidf" in systems:
        n_missing = missing_transcripts(rows)
        if n_missing:
            skipped["tfidf"] = f"{n_missing} of {len(rows)} rows have no transcript"
            systems.remove("tfidf")
            log.info("tfidf baseline not run: %s", skipped["tfidf"])
    return rows, features


class _Pool:
    """One system's test predictions gathered over the folds."""

    OPTIONAL = (*DIMENSIONS, "rationales", "transcripts")
    # prediction key -> key of a line of predictions/<system>.jsonl
    RECORD_KEYS = {**{d: d for d in DIMENSIONS}, "rationales": "rationale",
                   "transcripts": "asr_hypothesis"}

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.labels: list[str] = []
        self.scores: list[np.ndarray] = []
        self.optional: dict[str, list] = {k: [] for k in self.OPTIONAL}
        self.present: set[str] = set()  # optional outputs the system gave
        self.records: list[dict] = []

    def add(self, fold: str, rows: list[dict], pred: dict, label_key: str) -> None:
        self.rows += rows
        self.labels += pred["labels"]
        self.scores.append(pred["scores"])
        for key in self.OPTIONAL:
            values = pred.get(key)
            if values is not None:
                self.present.add(key)
            self.optional[key] += list(values) if values is not None else [None] * len(rows)
        for i, row in enumerate(rows):
            rec = {"id": row["id"], "fold": fold, "speaker": row.get("speaker"),
                   "true": row[label_key], "pred": pred["labels"][i],
                   "scores": {c: float(v) for c, v in zip(pred["label_set"], pred["scores"][i])}}
            for key, name in self.RECORD_KEYS.items():
                if pred.get(key) is not None:
                    rec[name] = pred[key][i]
            self.records.append(rec)

    def prediction(self) -> dict:
        """The pooled predictions in the shared prediction format."""
        return {"labels": self.labels, "scores": np.concatenate(self.scores),
                **{k: (self.optional[k] if k in self.present else None) for k in self.OPTIONAL}}

    def va_points(self) -> dict[str, tuple[list, list, list]]:
        """``{dim: (predictions, targets, sources)}`` of the rows that have both values."""
        out = {}
        for dim in DIMENSIONS:
            if dim in self.present:
                triples = [(p, r.get(dim), r.get("va_source"))
                           for p, r in zip(self.optional[dim], self.rows)
                           if p is not None and r.get(dim) is not None]
                if triples:
                    out[dim] = tuple(list(x) for x in zip(*triples))
        return out


def evaluate_rows(rows: Sequence[dict], protocol: Protocol | str, out_dir: str | Path,
                  baselines: Sequence[str] = DEFAULT_BASELINES, predictor: Predictor | None = None,
                  fold: str | None = None, dev_speakers: int = 0,
                  cache_path: str | Path | None = None, asr_normalizer: str = "english",
                  meta: dict | None = None, probe_speech=None,
                  probe_cache: str | Path | None = None) -> dict[str, Any]:
    """Evaluate the model (``predictor``) and the baselines fold by fold; write the report.

    ``probe_speech`` (a ``model.speech`` config: the Whisper path, mel policy, clip-length
    limit) is the encoder of the ``probe`` baseline, whose pooled features are cached under
    ``probe_cache`` (default ``out_dir/probe_cache``).

    Returns the result written to ``metrics.json``: ``protocol``, ``rows`` (read, kept,
    excluded), ``folds``, ``systems`` ({name: {"pooled": metrics of all test rows,
    "per_fold": {fold: metrics}, "summary": mean ± std over folds}}; a two-step model adds
    ``model-oracle-va`` after ``model``), ``prompt`` ({system: what its prompts held:
    transcript mode, VA in the prompt, rationale order}), ``skipped`` ({system: reason}),
    ``versions``, ``report`` (the files written) and the ``meta`` entries (manifest,
    checkpoint, recipe hash). The probe's entry in ``systems`` adds ``encoder`` (its path)
    and ``layer_choice`` ({fold: the layer chosen on the fold's training rows and the inner
    cross-validation UA of every layer}).
    """
    started = time.time()
    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    systems = ([MODEL_NAME] if predictor else []) + list(baselines)
    if not systems:
        raise UserError("nothing to evaluate: give --checkpoint or at least one baseline.")
    if PROBE_NAME in systems and (probe_speech is None or probe_speech.path is None):
        raise UserError(f"the {PROBE_NAME} baseline needs a speech encoder: pass {PROBE_FLAG} "
                        "PATH (a Whisper model folder, e.g. $EMOREASON_MODELS/whisper-base) or "
                        "--checkpoint CKPT (its recipe's model.speech.path).")
    kept, label_set, excluded = select_rows(rows, protocol)
    skipped: dict[str, str] = {}
    kept, features = _drop_unusable(kept, systems, Path(cache_path or out / EGEMAPS_CACHE_NAME),
                                    excluded, skipped, probe_speech,
                                    Path(probe_cache or out / PROBE_CACHE_DIR))
    if not kept:
        raise UserError(f"protocol {protocol.name}: no row left to evaluate (excluded: "
                        f"{excluded}).")

    folds = list(iter_folds(kept, protocol, dev_speakers=dev_speakers, only=fold))
    per_fold: dict[str, dict[str, Any]] = {s: {} for s in systems}
    pools = {s: _Pool() for s in systems}
    prompts: dict[str, list[dict]] = {}  # system -> the distinct prompt settings of its folds
    layer_choice: dict[str, dict] = {}   # fold -> the probe's layer and inner-CV scores

    def add(system: str, f, raw: dict) -> None:
        pred = align_prediction(raw, label_set, len(f.test), system)
        per_fold.setdefault(system, {})[f.name] = score_prediction(
            f.test, pred, label_set, protocol.label_key, asr_normalizer)
        pools.setdefault(system, _Pool()).add(f.name, f.test, pred, protocol.label_key)
        if raw.get("prompt") is not None and raw["prompt"] not in prompts.setdefault(system, []):
            prompts[system].append(raw["prompt"])

    for f in folds:
        log.info("fold %s: %d train, %d dev, %d test rows", f.name, len(f.train), len(f.dev),
                 len(f.test))
        for system in systems:
            if system == MODEL_NAME:
                raw = predictor(f.name, list(f.test))
            elif system in features:
                raw = BASELINES[system](f.train, f.test, label_set, protocol.label_key,
                                        features=features[system])
            else:
                raw = BASELINES[system](f.train, f.test, label_set, protocol.label_key)
            add(system, f, raw)
            if system == PROBE_NAME:
                layer_choice[f.name] = raw["layer_choice"]
            if system == MODEL_NAME and raw.get("oracle_va") is not None:
                add(ORACLE_NAME, f, raw["oracle_va"])

    results = {}
    # the oracle-VA system right after the model it bounds
    order = [s for s in systems if s != ORACLE_NAME]
    if ORACLE_NAME in pools:
        order.insert(order.index(MODEL_NAME) + 1, ORACLE_NAME)
    for system in order:
        pool = pools[system]
        results[system] = {
            "pooled": score_prediction(pool.rows, pool.prediction(), label_set,
                                       protocol.label_key, asr_normalizer),
            "per_fold": per_fold[system],
            "summary": aggregate_folds(per_fold[system]),
        }
        if system == PROBE_NAME:
            results[system].update(encoder=probe_speech.path, layer_choice=layer_choice)
        _write_predictions(out / PREDICTIONS_DIR / f"{system}.jsonl", pool.records)
    result = {
        "protocol": {"name": protocol.name, "label_key": protocol.label_key,
                     "labels": label_set, "folds": protocol.folds,
                     "description": protocol.description},
        "manifest": None, "checkpoint": None, "recipe_hash": None,
        **(meta or {}),
        "rows": {"read": len(rows), "kept": len(kept), "excluded": excluded},
        "folds": [{"name": f.name, "train": len(f.train), "dev": len(f.dev),
                   "test": len(f.test),
                   "test_speakers": sorted({str(r.get("speaker")) for r in f.test})}
                  for f in folds],
        "systems": results,
        # what each model system's prompts held: transcript mode (none, gold, asr), VA in
        # the prompt (none, predicted, gold), rationale order; a list when folds differ
        "prompt": {s: (v[0] if len(v) == 1 else v) for s, v in prompts.items()},
        "skipped": skipped,
        "versions": package_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.time() - started, 1),
    }
    va_points = {s: pool.va_points() for s, pool in pools.items() if pool.va_points()}
    result["report"] = write_report(result, out, va_points)
    # written again so that metrics.json also lists the report's files
    write_json(result, out / METRICS_NAME)
    return result


def run(args: argparse.Namespace) -> int:
    """Entry point of `emoreason eval`."""
    resolve_device(args.device)
    baselines = parse_baselines(args.baselines)
    protocol = get_protocol(args.protocol)
    rows = read_manifest(args.manifest)
    predictor, meta = None, {"manifest": str(Path(args.manifest).resolve())}
    names: list[str] = []
    if args.checkpoint:
        selected, _, _ = select_rows(rows, protocol)
        names = [f.name for f in iter_folds(selected, protocol, args.dev_speakers, args.fold)]
        predictor, hashes = checkpoint_predictor(args.checkpoint, names, args.device,
                                                 shared=protocol.one_training_set)
        values = set(hashes.values())
        meta.update(checkpoint=str(Path(args.checkpoint).resolve()),
                    recipe_hash=values.pop() if len(values) == 1 else hashes)
    probe_speech = None
    if PROBE_NAME in baselines:
        probe_speech = probe_speech_config(args.probe_encoder, args.checkpoint, names)
    elif args.probe_encoder:
        log.warning("%s is ignored: %s is not among --baselines", PROBE_FLAG, PROBE_NAME)
    result = evaluate_rows(rows, protocol, args.out, baselines=baselines, predictor=predictor,
                           fold=args.fold, dev_speakers=args.dev_speakers,
                           cache_path=args.cache, asr_normalizer=args.asr_normalizer, meta=meta,
                           probe_speech=probe_speech, probe_cache=args.probe_cache)
    print((Path(args.out) / TABLE_NAME).read_text(encoding="utf-8"))
    print(f"wrote {result['report']['metrics']}, {result['report']['table']} and "
          f"{len(result['report']['plots'])} plots in {Path(args.out) / 'plots'}")
    return 0
