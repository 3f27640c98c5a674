"""Corpus preparation: a corpus as released -> ``manifest.jsonl`` + dataset card.

``prepare("iemocap" | "meld" | "emodb" | "msp-podcast" | "generic" | "hf", root, out, ...)``
is the Python form of
``emoreason prepare``. Stages: parse the annotations (one loader per corpus), decode and
check every clip (MELD: extract it to 16 kHz WAV first) in a pool of worker processes,
derive valence/arousal where the corpus has none, assign and check the splits, then write
the manifest (schema in DESIGN.md) and the card (``card.md``, ``card.json``). Rows that
cannot be used are left out of the manifest and listed with their reason in the card;
rows outside the protocol's label set stay in the manifest and are listed too.

A finished preparation is skipped when its inputs (annotation and audio files: size and
modification time) and options are unchanged; ``force=True`` redoes it. Writing over a
manifest keeps the evidence and rationales of the rows that did not change
(:mod:`reasoning.prepare.carryover` says what counts as a change).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from reasoning import __version__
from reasoning.errors import UserError
from reasoning.manifest import FIELDS, MANIFEST_NAME, locked_manifest, write_manifest
from reasoning.prepare import card as card_mod
from reasoning.prepare import emodb, generic, hf, iemocap, meld, msp_podcast
from reasoning.prepare.clips import ClipTask, process_clips
from reasoning.prepare.carryover import carry_over, read_downstream, row_digest
from reasoning.prepare.corpus import Corpus, PrepareOptions, file_stamp
from reasoning.prepare.protocols import (DEFAULT_PROTOCOL, OTHER, PROTOCOLS, apply_protocol,
                                         get_protocol)
from reasoning.prepare.splits import (SPLIT_STRATEGIES, LeakageError, assign_loso,
                                      assign_random, assign_speaker_random, balanced_subset,
                                      check_speaker_disjoint, check_splits, class_weights,
                                      example_weights)
from reasoning.prepare.va import DerivedVAConfig, derive_va

__all__ = ["prepare", "PrepareOptions", "PrepareResult", "DATASETS", "PROTOCOLS",
           "apply_protocol", "balanced_subset", "class_weights", "example_weights",
           "check_speaker_disjoint", "check_splits", "LeakageError",
           "DerivedVAConfig", "derive_va"]

log = logging.getLogger(__name__)

LOADERS = {"iemocap": iemocap.load, "meld": meld.load, "emodb": emodb.load,
           "msp-podcast": msp_podcast.load, "generic": generic.load, "hf": hf.load}
DATASETS = tuple(LOADERS)
# Bump when the same input would now give a different manifest, so old outputs are redone.
PREPARE_VERSION = 1

SPLIT_DESCRIPTIONS = {
    "official": "the corpus's own split",
    "loso": "leave-one-speaker-out: one fold per speaker (split = speaker-<id>)",
    "speaker-random": "speaker-disjoint random train/dev/test",
    "random": "utterance-level random train/dev/test (--split random); NOT speaker-disjoint, "
              "so a speaker's clips may be in train and in test",
}


@dataclass
class PrepareResult:
    """What :func:`prepare` made (or found up to date)."""

    manifest: Path      # <out>/manifest.jsonl
    card_path: Path     # <out>/card.md (card.json beside it)
    card: dict          # the card.json content
    skipped: bool       # True when the existing output was up to date


def _fingerprint(dataset: str, root: Path, corpus: Corpus, opts: PrepareOptions) -> str:
    """Hash of what the output depends on: version, options and every input file's stat."""
    h = hashlib.sha256(json.dumps(
        {"prepare_version": PREPARE_VERSION, "dataset": dataset, "root": _source(root),
         "options": opts.fingerprint_dict()}, sort_keys=True, default=str).encode())
    # Which rows and clips there are (a clip added to a label folder is a change even
    # with --labels-only), then the stat of every file read.
    for row in corpus.rows:
        h.update(f"{row['id']}\0{row.get('_src')}\n".encode())
    files = [str(p) for p in corpus.inputs]
    if not opts.labels_only:
        files += [r[k] for r in corpus.rows for k in ("_src", "_dst") if r.get(k)]
    for f in files:
        h.update(f"{f}\0{file_stamp(f)}\n".encode())
    return h.hexdigest()


def _read_audio(corpus: Corpus, opts: PrepareOptions) -> tuple[list[dict], str]:
    """Decode (and extract) every clip; failed rows move to ``corpus.dropped``."""
    want_features = corpus.va_source == "derived" and opts.derive_va
    tasks, todo = [], []
    for row in corpus.rows:
        src = row.get("_src")
        if not src or not os.path.isfile(src):
            corpus.drop(row["id"], row.get("_where", ""),
                        f"audio file not found: {src or 'no clip folder for this split'}. "
                        "Add the file (or fix the root), or pass --labels-only")
            continue
        tasks.append(ClipTask(src, row.get("_dst"), row["start"], row["end"], want_features,
                              opts.va_config))
        todo.append(row)
    results = process_clips(tasks, opts.workers, desc=f"{corpus.dataset} audio")
    kept, extracted = [], 0
    for row, res in zip(todo, results):
        if not res["ok"]:
            log.warning("%s: %s", row["id"], res["error"])
            corpus.drop(row["id"], row.get("_where", ""), res["error"])
            continue
        row["duration"] = res["duration"]
        row["_features"] = res["features"]
        extracted += res["extracted"]
        kept.append(row)
    if any(t.dst for t in tasks):
        text = (f"{len(kept)} clips decoded and checked; extracted to 16 kHz mono WAV under "
                f"audio/ ({extracted} extracted now, {len(kept) - extracted} reused from an "
                "earlier run)")
    else:
        text = f"{len(kept)} clips decoded and checked, {corpus.audio_origin}"
    return kept, text


def _derive_va(rows: list[dict], corpus: Corpus, opts: PrepareOptions) -> tuple[str | None, str]:
    """Fill derived valence/arousal where the corpus has none; (va_source, card text)."""
    if corpus.va_source == "annotated":
        return "annotated", corpus.va_description or "annotated by the corpus, mapped linearly to [-1, 1]"
    measured = [r for r in rows if r.get("_features")]
    if corpus.va_source != "derived" or not measured:
        why = ("no audio read, so none derived" if opts.labels_only else
               "--no-derived-va" if not opts.derive_va else "no clip could be measured")
        return None, f"none ({why})"
    va = derive_va([r["_features"] for r in measured], [r["emotion"] for r in measured],
                   opts.va_config)
    for row, (v, a) in zip(measured, va):
        row["valence"], row["arousal"], row["va_source"] = v, a, "derived"
    cfg = opts.va_config
    return "derived", (
        f"derived from acoustics for {len(measured)} clips (va_source = derived): arousal from "
        f"the {cfg.energy_percentile:g}th percentile of frame log-RMS and the spectral balance "
        f"(vocal effort), with an emotion prior of weight {cfg.arousal_prior_weight:g}; valence "
        f"from an emotion prior of weight {cfg.valence_prior_weight:g} plus spectral centroid, "
        "level and zero-crossing rate; features normalised over the corpus (formula in "
        "reasoning/prepare/va.py, constants in card.json va.config)")


def _keep_other(rows: list[dict], labels: list[str]) -> list[str]:
    """Make "other / no agreement" a class: rows outside ``labels`` become "other" (their
    label moves to ``emotion_orig``); returns the label set with "other" in it."""
    if not labels:
        return labels
    for row in rows:
        if row["emotion"] is not None and row["emotion"] not in labels:
            row["emotion_orig"], row["emotion"] = row["emotion"], OTHER
    return labels + ([OTHER] if OTHER not in labels else [])


def _assign_splits(rows: list[dict], strategy: str, corpus: Corpus, opts: PrepareOptions) -> bool:
    """Fill ``split``; returns whether the split is speaker-disjoint (and so checked)."""
    if strategy == "official":
        if any(r["split"] is None for r in rows):
            raise UserError(f"{corpus.dataset} has no official split; pass --split loso, "
                            "speaker-random or random.")
    elif strategy == "loso":
        assign_loso(rows)
    elif strategy == "speaker-random":
        assign_speaker_random(rows, opts.seed, tuple(opts.fractions))
    else:
        log.warning("--split random is not speaker-disjoint: test speakers are also in train.")
        assign_random(rows, opts.seed, tuple(opts.fractions))
    disjoint = strategy in ("loso", "speaker-random") or (
        strategy == "official" and corpus.official_speaker_disjoint)
    if disjoint:
        check_splits(rows)
    return disjoint


def _clean(row: dict) -> dict:
    """Manifest row: the contract's keys first, then the corpus's own, without internals."""
    out = {key: row.get(key, default) for key, default in FIELDS.items()}
    out.update({k: v for k, v in row.items() if k not in FIELDS and not k.startswith("_")})
    return out


def _source(root: Path) -> str:
    """The card's and fingerprint's name of the input: a local path made absolute, or a hub
    dataset id (``prepare hf``) as given."""
    return str(root.resolve()) if root.exists() else str(root)


def _command(dataset: str, root: Path, out: Path, opts: PrepareOptions) -> str:
    parts = ["emoreason prepare", dataset, "--dataset" if dataset == "hf" else "--root", str(root),
             "--out", str(out)]
    defaults = PrepareOptions()
    for flag, key in (("--protocol", "protocol"), ("--split", "split"), ("--seed", "seed"),
                      ("--clips", "clips"), ("--name", "name")):
        if getattr(opts, key) != getattr(defaults, key):
            parts += [flag, str(getattr(opts, key))]
    for key, col in opts.columns.items():
        parts += [f"--{key}-col", col]
    if opts.labels_only:
        parts.append("--labels-only")
    if opts.keep_other:
        parts.append("--keep-other")
    return " ".join(parts)


def prepare(dataset: str, root: str | Path, out: str | Path,
            options: PrepareOptions | None = None, **overrides) -> PrepareResult:
    """Prepare ``dataset`` from ``root`` into ``out/manifest.jsonl`` and ``out/card.md``.

    ``options`` (a :class:`PrepareOptions`) and/or keyword overrides of its fields, e.g.
    ``prepare("meld", "MELD.Raw", "prep/meld", labels_only=True)``. Raises
    :class:`~reasoning.errors.UserError` for input it cannot use at all (no such root,
    wrong layout, a speaker on both sides of a split); single bad rows are left out and
    listed in the card instead.
    """
    opts = replace(options or PrepareOptions(), **overrides)
    dataset = dataset.lower()
    if dataset not in LOADERS:
        raise UserError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)} "
                        "(generic: a folder of label subfolders or a CSV/JSONL table; hf: a "
                        "Hugging Face dataset).")
    if opts.split is not None and opts.split not in SPLIT_STRATEGIES:
        raise UserError(f"--split {opts.split}: choose one of {', '.join(SPLIT_STRATEGIES)}.")
    root, out = Path(root).expanduser(), Path(out).expanduser()
    if not root.exists() and dataset != "hf":  # hf: a hub id is no local path
        raise UserError(f"--root {root}: no such file or folder.")
    protocol = get_protocol(opts.protocol or DEFAULT_PROTOCOL.get(dataset, "all"), dataset)
    corpus = LOADERS[dataset](root, out, opts, protocol)

    manifest_path, md_path = out / MANIFEST_NAME, out / card_mod.CARD_MD
    old = card_mod.read_card(out)
    if (not opts.force and manifest_path.is_file() and old
            and old.get("fingerprint") == _fingerprint(dataset, root, corpus, opts)):
        log.info("%s is up to date (same inputs and options); pass --force to redo it.",
                 manifest_path)
        return PrepareResult(manifest_path, md_path, old, skipped=True)
    out.mkdir(parents=True, exist_ok=True)
    # Held from reading the old manifest (its evidence and rationales) to writing the new one,
    # so that `evidence` or `rationales` cannot rewrite it in between.
    with locked_manifest(manifest_path, "prepare"):
        downstream = read_downstream(manifest_path)

        if opts.labels_only:
            rows = corpus.rows
            present = sum(1 for r in rows if r.get("_src") and os.path.isfile(r["_src"]))
            audio_text = (f"not read (--labels-only): the manifest was written from the annotations "
                          f"alone; `audio` paths point where the clips are expected ({present} of "
                          f"{len(rows)} present now)")
            durations = [r["_duration"] for r in rows if r.get("_duration")]
            durations_source = "the annotations' time stamps (no audio read)"
        else:
            rows, audio_text = _read_audio(corpus, opts)
            durations = [r["duration"] for r in rows]
            durations_source = "the decoded audio"

        va_source, va_text = _derive_va(rows, corpus, opts)

        strategy = opts.split or corpus.default_split
        disjoint = _assign_splits(rows, strategy, corpus, opts)
        ids = Counter(r["id"] for r in rows)
        dup = [i for i, n in ids.items() if n > 1]
        if dup:  # loaders drop duplicates; this guards the manifest contract itself
            raise UserError(f"duplicate id {dup[0]!r} in {root}; ids must be unique.")
        labels = _keep_other(rows, list(corpus.labels)) if opts.keep_other else list(corpus.labels)
        kept, excluded = apply_protocol(rows, labels)
        for entry in corpus.dropped:   # the card names the root once; keep "where" short
            if entry["where"].startswith(str(root) + os.sep):
                entry["where"] = entry["where"][len(str(root)) + 1:]

        manifest_rows = [_clean(r) for r in rows]
        digests = {r["id"]: row_digest(r, out) for r in manifest_rows}
        carry_over(manifest_rows, downstream, digests, (old or {}).get("row_digests"), manifest_path)
        write_manifest(manifest_rows, manifest_path)
        card = {
            "dataset": corpus.dataset, "version": __version__, "prepare_version": PREPARE_VERSION,
            "command": _command(dataset, root, out, opts), "root": _source(root),
            "manifest": MANIFEST_NAME, "rows": len(rows), "labels_only": opts.labels_only,
            "audio": audio_text,
            "protocol": {"name": protocol.name, "description": protocol.description,
                         "labels": labels, "rows_in": len(kept), "keep_other": opts.keep_other,
                         "excluded": [{"id": r["id"], "label": r["emotion"], "reason": why}
                                      for r, why in excluded]},
            "split": {"strategy": strategy, "speaker_disjoint": disjoint,
                      "description": SPLIT_DESCRIPTIONS[strategy]
                      + (" (speaker-disjoint: checked)" if disjoint else
                         " (not speaker-disjoint)" if strategy == "official" else "")},
            "va": {"source": va_source, "description": va_text,
                   "config": opts.va_config.as_dict() if va_source == "derived" else None},
            "counts": card_mod.counts(rows),
            "durations": card_mod.duration_stats(durations),
            "durations_source": durations_source,
            "dropped": corpus.dropped, "problems": corpus.problems, "notes": corpus.notes,
            "options": opts.fingerprint_dict(),
            # After the audio stage, so extracted WAVs count as inputs of the next run.
            "fingerprint": _fingerprint(dataset, root, corpus, opts),
            # What each row's evidence and rationale depend on, for the next run's carry_over.
            "row_digests": digests,
        }
        card_mod.write_card(card, out)
    for split, per_label in card["counts"]["label_by_split"].items():
        log.info("%s %s: %d rows (%s)", corpus.dataset, split, sum(per_label.values()),
                 ", ".join(f"{k} {v}" for k, v in sorted(per_label.items(), key=lambda kv: -kv[1])))
    if corpus.dropped:
        log.warning("%d rows left out of the manifest; reasons in %s", len(corpus.dropped), md_path)
    for problem in corpus.problems:
        log.warning("%s", problem)
    log.info("wrote %s (%d rows) and %s", manifest_path, len(rows), md_path)
    return PrepareResult(manifest_path, md_path, card, skipped=False)
