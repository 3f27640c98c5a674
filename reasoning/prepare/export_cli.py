"""`emoreason export --manifest M --to hf OUT`: a prepared manifest as a Hugging Face dataset.

The command form of :func:`reasoning.prepare.hf.export_manifest`: the rows, with their
evidence and rationales, become a ``datasets.Dataset`` with an ``Audio`` feature, saved to
disk at OUT (and pushed to the hub with ``--push-to-hub REPO``). ``emoreason prepare hf
--dataset OUT`` reads it back into the same rows.
"""

from __future__ import annotations

import argparse

EXPORT_FORMATS = ("hf",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `emoreason export` (manifest mode)."""
    parser.add_argument("--manifest", required=True, help="manifest.jsonl to export")
    parser.add_argument("--to", required=True, choices=EXPORT_FORMATS,
                        help="hf: a Hugging Face `datasets` dataset saved with save_to_disk")
    parser.add_argument("out", metavar="OUT", help="folder the dataset is saved to (replaced whole)")
    parser.add_argument("--push-to-hub", metavar="REPO_ID",
                        help="also push the dataset to this hub repository (needs the network "
                             "and a login: `hf auth login`)")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: a private repository")


def run(args: argparse.Namespace) -> int:
    """Export the manifest and print what was written."""
    from reasoning.prepare.hf import export_manifest

    ds = export_manifest(args.manifest, args.out, args.push_to_hub, args.private)
    print(f"{args.out}: {len(ds)} rows, columns {', '.join(ds.column_names)}")
    if args.push_to_hub:
        print(f"pushed to the hub: {args.push_to_hub}")
    print(f"read it back with: emoreason prepare hf --dataset {args.out} --out DIR")
    return 0
