"""`emoreason rationales`: write and verify a rationale for every row of a manifest."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reasoning.errors import UserError
from reasoning.manifest import locked_manifest, read_manifest, require_manifest, write_manifest
from reasoning.rationales.write import MAX_ATTEMPTS, WRITERS, write_rationales


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `emoreason rationales`."""
    parser.add_argument("--manifest", required=True, type=Path,
                        help="manifest.jsonl with evidence (from `emoreason evidence`)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write the manifest with rationales (default: in place)")
    parser.add_argument("--writer", choices=WRITERS, default="template",
                        help="template (offline), hf (local transformers LLM) or openai "
                             "(OpenAI-compatible endpoint); default: %(default)s")
    parser.add_argument("--max-attempts", type=int, default=MAX_ATTEMPTS,
                        help="tries per utterance before falling back to a template "
                             "rationale (default: %(default)s)")
    parser.add_argument("--force", action="store_true",
                        help="rewrite rationales that already pass")
    g = parser.add_argument_group("hf and openai writers")
    g.add_argument("--model", help="hf: local folder or hub id; openai: model name")
    g.add_argument("--temperature", type=float, default=0.7,
                   help="sampling temperature of retries (the first try is greedy)")
    g.add_argument("--max-new-tokens", type=int, default=120, help="answer length limit")
    g = parser.add_argument_group("hf writer")
    g.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    g = parser.add_argument_group("openai writer")
    g.add_argument("--base-url", help="API root, e.g. http://localhost:8000/v1")
    g.add_argument("--api-key-env", default="OPENAI_API_KEY",
                   help="environment variable that holds the API key (default: %(default)s)")
    g.add_argument("--concurrency", type=int, default=4, help="requests in flight at once")
    g.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    g.add_argument("--retries", type=int, default=3,
                   help="retries of a request that timed out, failed (429/5xx) or was malformed")
    g.add_argument("--cache-dir", type=Path, default=None,
                   help="response cache (default: .rationale_cache/openai beside the output)")


def _writer_options(args: argparse.Namespace, out_path: Path) -> dict:
    if args.writer == "template":
        return {}
    if not args.model:
        raise UserError(f"--writer {args.writer} needs --model "
                        + ("(a local folder or hub id)" if args.writer == "hf" else
                           "(the model name the endpoint serves)"))
    if args.writer == "hf":
        return {"model": args.model, "device": args.device,
                "max_new_tokens": args.max_new_tokens, "temperature": args.temperature}
    if not args.base_url:
        raise UserError("--writer openai needs --base-url (e.g. http://localhost:8000/v1)")
    return {"base_url": args.base_url, "model": args.model, "api_key_env": args.api_key_env,
            "cache_dir": args.cache_dir or out_path.parent / ".rationale_cache" / "openai",
            "concurrency": args.concurrency, "timeout": args.timeout, "retries": args.retries,
            "temperature": args.temperature, "max_tokens": args.max_new_tokens}


def format_summary(s: dict) -> str:
    """The summary printed at the end of a run."""
    by = ", ".join(f"{name} {n}" + (" as fallback" if name != s["writer"] else "")
                   for name, n in sorted(s["written_by"].items()))
    lines = [f"rationales: {s['rows']} rows, {s['written']} written"
             + (f" ({by})" if by else "") + f", {s['kept']} kept from an earlier run, "
             f"{sum(s['skipped'].values())} skipped"
             + (f" ({', '.join(f'{k} {v}' for k, v in sorted(s['skipped'].items()))})"
                if s["skipped"] else "")]
    for name, w in s["per_writer"].items():
        rate = "n/a" if w["pass_rate"] is None else f"{100 * w['pass_rate']:.1f}%"
        lines.append(f"  pass rate {name}: {w['passed']}/{w['candidates']} candidates ({rate})"
                     + (f", {w['errors']} failed requests" if w["errors"] else ""))
    lines.append(f"  final: {s['final_pass']}/{s['rationales']} pass; writers "
                 + ", ".join(f"{k} {v}" for k, v in sorted(s["final_writers"].items()))
                 + f"; {s['fallbacks']} template fallbacks")
    if s["fell_back_after_errors"]:
        lines.append(f"  fallbacks after failed requests: {s['fell_back_after_errors']}; run "
                     "again to retry those rows")
    lines.append(f"  claims per rationale (cues and quotes): {s['claims_per_rationale']:.2f}")
    lines.append("  cues cited: " + ", ".join(f"{k} {v}" for k, v in s["cue_counts"].items()))
    for e in s["errors"][:10]:
        lines.append(f"  errors {e['id']}: {e['errors'][-1]}")
    if len(s["errors"]) > 10:
        lines.append(f"  ... {len(s['errors']) - 10} more rows had writer errors")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Write rationales, save the manifest, print the summary.

    Exits 1, leaving the manifest as it was, when every request of the writer failed: a
    manifest of template stand-ins is not what was asked for (and ``--force`` would replace
    good rationales with them). When only some failed it exits 0: every row has a verified
    rationale, and the rows that fell back are retried by the next run.
    """
    if args.max_attempts < 1:
        raise UserError("--max-attempts must be at least 1")
    out_path = args.out or args.manifest
    require_manifest(args.manifest)
    with locked_manifest(out_path, "rationales"):  # from the read to the write
        rows = read_manifest(args.manifest, resolve_audio=False)
        if args.out and args.manifest.parent.resolve() != out_path.parent.resolve():
            from reasoning.evidence.cli import rebase_audio_paths
            rows = rebase_audio_paths(rows, args.manifest.parent, out_path.parent)
        rows, summary = write_rationales(rows, args.writer, max_attempts=args.max_attempts,
                                         force=args.force, progress=True,
                                         **_writer_options(args, out_path))
        print(format_summary(summary))
        if summary["all_requests_failed"]:
            print(f"emoreason rationales: every request of the {args.writer} writer failed "
                  f"(errors above); {out_path} was left as it was. Check the endpoint or "
                  "model, then run again.", file=sys.stderr)
            return 1
        write_manifest(rows, out_path)
    print(f"  -> {out_path}")
    return 0
