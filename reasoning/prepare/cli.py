"""`emoreason prepare DATASET --root DIR --out DIR`: the command form of :func:`prepare`."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import yaml

from reasoning.errors import UserError
from reasoning.prepare import DATASETS, DerivedVAConfig, PrepareOptions, prepare
from reasoning.prepare.generic import COLUMN_KEYS
from reasoning.prepare.protocols import protocol_names
from reasoning.prepare.splits import SPLIT_STRATEGIES


def _floats(text: str, n: int, flag: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        values = ()
    if len(values) != n:
        raise UserError(f"{flag} {text!r}: give {n} comma-separated numbers.")
    return values


def _pairs(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    pairs = {}
    for item in text.split(","):
        src, sep, dst = item.partition("=")
        if not sep or not src.strip() or not dst.strip():
            raise UserError(f"--label-map {text!r}: write it as SRC=DST,SRC=DST (e.g. "
                            "hap=happy,exc=happy).")
        pairs[src.strip()] = dst.strip()
    return pairs


def load_va_config(path: str | None) -> DerivedVAConfig:
    """A :class:`DerivedVAConfig` with the fields set in a YAML/JSON file (others default)."""
    if not path:
        return DerivedVAConfig()
    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise UserError(f"--va-config {path}: cannot read it ({err}).") from err
    names = {f.name for f in dataclasses.fields(DerivedVAConfig)}
    if not isinstance(values, dict) or set(values) - names:
        bad = sorted(set(values) - names) if isinstance(values, dict) else values
        raise UserError(f"--va-config {path}: unknown field(s) {bad}; the fields are "
                        f"{', '.join(sorted(names))} (reasoning/prepare/va.py).")
    for key in ("lf_band", "hf_band"):
        if key in values:
            values[key] = tuple(values[key])
    if "min_spread" in values:
        values["min_spread"] = {**DerivedVAConfig().min_spread, **values["min_spread"]}
    try:
        return DerivedVAConfig(**values)
    except (TypeError, ValueError) as err:
        raise UserError(f"--va-config {path}: {err}") from err


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `emoreason prepare`."""
    parser.add_argument("dataset", choices=DATASETS,
                        help="corpus format; generic = a folder of label subfolders or a "
                             "CSV/TSV/JSONL table; hf = a Hugging Face dataset (--dataset)")
    parser.add_argument("--root",
                        help="the corpus as released (IEMOCAP_full_release, the MELD CSV "
                             "folder, the EmoDB folder, the MSP-Podcast folder holding Labels/, "
                             "a label-folder tree or a table file)")
    parser.add_argument("--dataset", dest="hf_dataset", metavar="ID_OR_PATH",
                        help="hf: a hub dataset id (online, or in the local cache), a "
                             "save_to_disk folder, a parquet file or a folder of parquet files")
    parser.add_argument("--out", required=True,
                        help="output folder: manifest.jsonl, card.md, card.json (and audio/ "
                             "for MELD's extracted WAVs and the clips a dataset stores)")
    parser.add_argument("--labels-only", action="store_true",
                        help="write the manifest from the annotations without reading audio")
    parser.add_argument("--force", action="store_true",
                        help="redo the preparation even when the output is up to date")
    parser.add_argument("--protocol", choices=protocol_names(evaluation=False),
                        help="label protocol (default: iemocap4, meld7, emodb7, msp-podcast, all)")
    parser.add_argument("--split", choices=SPLIT_STRATEGIES,
                        help="official (IEMOCAP sessions, MELD train/dev/test, a --split-col), "
                             "loso (leave one speaker out), speaker-random, random; default: "
                             "official, or loso for EmoDB, speaker-random for generic corpora "
                             "(every row needs a speaker; else pass random)")
    parser.add_argument("--seed", type=int, default=0, help="seed of random splits")
    parser.add_argument("--fractions", default="0.8,0.1,0.1",
                        help="train,dev,test shares of random splits")
    parser.add_argument("--workers", type=int, default=2,
                        help="processes that decode and extract audio")
    parser.add_argument("--clips", help="MELD: folder holding train_splits/, "
                        "dev_splits_complete/, output_repeated_splits_test/ (default: --root)")
    parser.add_argument("--name", help="generic, hf: dataset name (default: the root's name)")
    group = parser.add_argument_group(
        "generic corpora (label folders; CSV/TSV/JSONL tables) and hf datasets: their columns "
        "(hf: defaults detected from the features)")
    for key in COLUMN_KEYS:
        group.add_argument(f"--{key}-col", f"--{key}-column", dest=f"{key}_col", metavar="COLUMN",
                           help=f"column holding {key}" + (" (the emotion label)"
                                                           if key == "label" else ""))
    group.add_argument("--label-map", help="rename labels: SRC=DST,SRC=DST")
    group.add_argument("--labels", help="the protocol's label set, comma-separated; rows "
                       "with other labels stay in the manifest and are excluded by it")
    group.add_argument("--va-range", default="1,5",
                       help="LO,HI scale of annotated valence/arousal/dominance columns (hf: "
                            "columns an emoreason export marked are on -1,1 already)")
    parser.add_argument("--keep-other", action="store_true",
                        help="relabel rows outside the protocol's labels 'other' and keep them "
                             "in it (the original label goes to emotion_orig)")
    parser.add_argument("--no-derived-va", action="store_true",
                        help="leave valence/arousal empty when the corpus has no annotation")
    parser.add_argument("--va-config", metavar="FILE",
                        help="YAML/JSON file overriding constants of the derived-VA formula "
                             "(fields of DerivedVAConfig in reasoning/prepare/va.py)")


def source_argument(args: argparse.Namespace) -> str:
    """``--dataset`` for hf, ``--root`` for every other corpus; UserError when it is missing."""
    if args.dataset == "hf":
        if not (args.hf_dataset or args.root):
            raise UserError("prepare hf needs --dataset ID_OR_PATH (a hub id, a save_to_disk "
                            "folder or parquet files).")
        return args.hf_dataset or args.root
    if args.hf_dataset:
        raise UserError(f"--dataset is for `prepare hf`; for {args.dataset} pass --root DIR.")
    if not args.root:
        raise UserError(f"prepare {args.dataset} needs --root DIR (the corpus as released).")
    return args.root


def run(args: argparse.Namespace) -> int:
    """Prepare the corpus and print where the manifest and card are."""
    options = PrepareOptions(
        labels_only=args.labels_only, force=args.force, protocol=args.protocol,
        split=args.split, seed=args.seed, fractions=_floats(args.fractions, 3, "--fractions"),
        workers=max(1, args.workers), clips=args.clips, name=args.name,
        columns={k: getattr(args, f"{k}_col") for k in COLUMN_KEYS if getattr(args, f"{k}_col")},
        label_map=_pairs(args.label_map),
        labels=[x.strip() for x in args.labels.split(",") if x.strip()] if args.labels else None,
        va_range=_floats(args.va_range, 2, "--va-range"), keep_other=args.keep_other,
        derive_va=not args.no_derived_va, va_config=load_va_config(args.va_config))
    result = prepare(args.dataset, source_argument(args), args.out, options)
    card = result.card
    state = "up to date, nothing redone" if result.skipped else "written"
    print(f"{result.manifest}: {card['rows']} rows ({state})")
    for split, per_label in card["counts"]["label_by_split"].items():
        print(f"  {split}: {sum(per_label.values())} rows: "
              + ", ".join(f"{k} {v}" for k, v in sorted(per_label.items(), key=lambda kv: -kv[1])))
    print(f"protocol {card['protocol']['name']}: {card['protocol']['rows_in']} rows in, "
          f"{len(card['protocol']['excluded'])} excluded (kept in the manifest)")
    print(f"left out of the manifest: {len(card['dropped'])} rows; "
          f"problems: {len(card['problems'])}")
    print(f"card: {result.card_path}")
    return 0
