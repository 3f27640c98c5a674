"""`emoreason evidence`: measure acoustic and lexical evidence for every row of a manifest."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from reasoning.errors import UserError
from reasoning.evidence.lexical import DEFAULT_LEXICON
from reasoning.evidence.measure import MIN_SPEAKER_UTTERANCES, measure_manifest
from reasoning.manifest import locked_manifest, read_manifest, require_manifest, write_manifest

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `emoreason evidence`."""
    parser.add_argument("--manifest", required=True, type=Path, help="manifest.jsonl to measure")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write the manifest with evidence (default: in place)")
    parser.add_argument("--force", action="store_true",
                        help="measure every utterance again, ignoring cached evidence")
    parser.add_argument("--lexicon", type=Path, default=DEFAULT_LEXICON,
                        help="emotion-word lexicon TSV (default: the bundled English one)")
    parser.add_argument("--min-speaker-utterances", type=int, default=MIN_SPEAKER_UTTERANCES,
                        help="a speaker with fewer measured utterances is compared with the "
                             "corpus baseline instead of their own (default: %(default)s)")


def rebase_audio_paths(rows: list[dict], src_dir: Path, dst_dir: Path) -> list[dict]:
    """Keep relative audio paths valid when the manifest is written to another folder."""
    if src_dir.resolve() == dst_dir.resolve():
        return rows
    for row in rows:
        if not os.path.isabs(row["audio"]):
            row["audio"] = str((src_dir / row["audio"]).resolve())
    return rows


def run(args: argparse.Namespace) -> int:
    """Measure, write the manifest, print a summary; exit 0 even when some rows failed."""
    if args.min_speaker_utterances < 2:
        raise UserError("--min-speaker-utterances must be at least 2 (a z-score needs a "
                        "standard deviation).")
    src = args.manifest
    out_path = args.out or src
    require_manifest(src)

    def checkpoint(partial: list[dict]) -> None:
        write_manifest(partial, out_path)
        log.info("evidence: checkpoint written to %s", out_path)

    with locked_manifest(out_path, "evidence"):  # from the read to the last write
        rows = rebase_audio_paths(read_manifest(src, resolve_audio=False), src.parent,
                                  out_path.parent)
        rows, s = measure_manifest(rows, base_dir=out_path.parent, force=args.force,
                                   lexicon=args.lexicon,
                                   min_speaker_utterances=args.min_speaker_utterances,
                                   checkpoint=checkpoint, progress=True)
        write_manifest(rows, out_path)
    print(f"evidence: {s['rows']} rows -> {out_path}")
    print(f"  measured {s['measured']}, cached {s['cached']}, failed {s['failed']}")
    print(f"  silent {s['silent']}, unvoiced {s['unvoiced']}, no transcript "
          f"{s['no_transcript']}, lexicon hits {s['lexical_hits']}")
    print("  baselines: " + ", ".join(f"{k} {v}" for k, v in sorted(s["baseline"].items())))
    for e in s["errors"][:20]:
        print(f"  failed {e['id']}: {e['error']}")
    if len(s["errors"]) > 20:
        print(f"  ... and {len(s['errors']) - 20} more (see the 'error' of their evidence)")
    return 0
