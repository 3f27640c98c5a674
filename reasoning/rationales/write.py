"""Write a verified rationale for every row: generate, verify, regenerate, fall back."""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from reasoning.rationales.base import RationaleRequest, Writer, WriterError, normalize_output
from reasoning.rationales.template import TemplateWriter
from reasoning.rationales.verify import read_verdict, verdict_fields, verify

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
WRITERS = ("template", "hf", "openai")


def make_writer(name: str, **options) -> Writer:
    """Build a writer by name: ``template``, ``hf`` (options of :class:`HFWriter`) or
    ``openai`` (options of :class:`OpenAIWriter`)."""
    if name == "template":
        return TemplateWriter()
    if name == "hf":
        from reasoning.rationales.hf import HFWriter
        return HFWriter(**options)
    if name == "openai":
        from reasoning.rationales.openai_chat import OpenAIWriter
        return OpenAIWriter(**options)
    raise ValueError(f"unknown writer {name!r}; choose one of {', '.join(WRITERS)}")


def _record(text: str, writer: str, verdict, attempts: int, requested: str, errors: list[str]) -> dict:
    return {"text": text, "writer": writer, **verdict_fields(verdict),
            "attempts": attempts, "requested_writer": requested,
            "fallback": writer != requested, "errors": errors}


def rationale_for(request: RationaleRequest, writer: Writer, max_attempts: int = MAX_ATTEMPTS,
                  fallback: Writer | None = None) -> tuple[dict, dict]:
    """One verified rationale. Returns ``(rationale, tally)``.

    ``writer`` gets up to ``max_attempts`` tries, each told why the last one was rejected;
    the first text whose every claim holds is kept. Otherwise the template writer's text is
    used (``fallback: true``), verified the same way. ``tally`` counts candidates, passes
    and errors per writer for the summary.
    """
    fallback = fallback or TemplateWriter()
    tally: Counter = Counter()
    errors: list[str] = []
    feedback: Sequence[str] = ()
    for attempt in range(max_attempts):
        try:
            raw = writer.write(request, attempt, feedback)
        except WriterError as err:
            errors.append(str(err))
            tally[(writer.name, "errors")] += 1
            continue
        text = normalize_output(raw, request.label)
        verdict = verify(text, request.evidence, request.label, request.transcript)
        tally[(writer.name, "candidates")] += 1
        if verdict.passed:
            tally[(writer.name, "passed")] += 1
            return _record(text, writer.name, verdict, attempt + 1, writer.name, errors), tally
        feedback = verdict.problems
        log.debug("rationale %s attempt %d rejected: %s", request.id, attempt, verdict.problems)
    text = normalize_output(fallback.write(request, 0, ()), request.label)
    verdict = verify(text, request.evidence, request.label, request.transcript)
    tally[(fallback.name, "candidates")] += 1
    tally[(fallback.name, "passed")] += int(verdict.passed)
    return _record(text, fallback.name, verdict, max_attempts, writer.name, errors), tally


def _skip_reason(row: dict) -> str | None:
    ev = row.get("evidence")
    if not isinstance(ev, dict):
        return "no_evidence"
    if ev.get("error"):
        return "evidence_error"
    if not row.get("emotion"):
        return "no_emotion"
    return None


def _still_good(row: dict, writer_name: str) -> bool:
    """A rationale from an earlier run of the same writer that still passes is kept.

    A template that stood in for a failing writer is not: the writer is asked again (its
    answers come from its cache where it has one, so this costs nothing twice)."""
    old = row.get("rationale")
    if not (isinstance(old, dict) and old.get("text") and read_verdict(old, f"row {row.get('id')!r}")[0]
            and old.get("writer") == writer_name and not old.get("fallback")):
        return False
    return verify(old["text"], row["evidence"], row["emotion"], row.get("transcript")).passed


def write_rationales(rows: list[dict], writer: str | Writer = "template", *,
                     max_attempts: int = MAX_ATTEMPTS, force: bool = False,
                     progress: bool = False, **writer_options) -> tuple[list[dict], dict]:
    """Write the ``rationale`` field of every row that has evidence and an emotion.

    ``writer`` is a name (``template``, ``hf``, ``openai``; ``writer_options`` go to its
    constructor) or a :class:`Writer`. Rows are skipped, and counted, when they have no
    evidence (run ``emoreason evidence`` first), evidence that failed, or no gold emotion;
    their ``rationale`` is left as it was. Unless ``force``, a row whose rationale came from
    the same writer and still passes the verifier is kept. Returns ``(new_rows, summary)``;
    the summary has per-writer pass rates, claims per rationale and cue citation counts,
    ``written_by`` (rows written this run per writer that really wrote them, fallbacks
    included), ``fell_back_after_errors`` and ``all_requests_failed``.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    w = make_writer(writer, **writer_options) if isinstance(writer, str) else writer
    out = [dict(r) for r in rows]
    skipped: Counter = Counter()
    todo, kept = [], 0
    for row in out:
        reason = _skip_reason(row)
        if reason:
            skipped[reason] += 1
        elif not force and _still_good(row, w.name):
            kept += 1
        else:
            todo.append(row)
    if skipped:
        log.warning("rationales: skipped %d rows (%s)", sum(skipped.values()),
                    ", ".join(f"{k} {v}" for k, v in sorted(skipped.items())))

    def one(row: dict):
        req = RationaleRequest(str(row["id"]), str(row["emotion"]), row.get("transcript"),
                               row["evidence"])
        return rationale_for(req, w, max_attempts)

    with ThreadPoolExecutor(max_workers=max(1, getattr(w, "concurrency", 1))) as pool:
        results = pool.map(one, todo)
        if progress:
            from tqdm import tqdm
            results = tqdm(results, total=len(todo), desc=f"rationales ({w.name})",
                           unit="row", disable=None)
        tally: Counter = Counter()
        for row, (rationale, t) in zip(todo, results):
            row["rationale"] = rationale
            tally.update(t)
    summary = summarize(out, tally)
    written = [row["rationale"] for row in todo]
    summary.update(rows=len(out), written=len(todo), kept=kept, skipped=dict(skipped),
                   writer=w.name, written_by=dict(Counter(r["writer"] for r in written)),
                   fell_back_after_errors=sum(r["fallback"] and bool(r["errors"]) for r in written),
                   # The writer did not answer once: its run produced nothing of its own.
                   all_requests_failed=tally[(w.name, "errors")] > 0
                   and tally[(w.name, "candidates")] == 0)
    return out, summary


def summarize(rows: list[dict], tally: Counter | None = None) -> dict:
    """Pass rates per writer, claims per rationale and how often each cue was cited."""
    tally = tally or Counter()
    writers = sorted({name for name, _ in tally})
    per_writer = {}
    for name in writers:
        cand, passed = tally[(name, "candidates")], tally[(name, "passed")]
        per_writer[name] = {"candidates": cand, "passed": passed, "errors": tally[(name, "errors")],
                            "pass_rate": passed / cand if cand else None}
    rats = [r["rationale"] for r in rows if isinstance(r.get("rationale"), dict)]
    cues: Counter = Counter()
    n_claims = []
    for rat in rats:
        claims = rat.get("claims") or []
        n_claims.append(sum(c["kind"] != "emotion" for c in claims))
        for c in claims:
            if c["kind"] == "cue":
                cues[f"{c['cue']}:{'not ' if c['negated'] else ''}{c['direction']}"] += 1
            elif c["kind"] == "quote":
                cues["quoted word"] += 1
    return {
        "per_writer": per_writer,
        "final_writers": dict(Counter(r["writer"] for r in rats)),
        "final_pass": sum(bool(read_verdict(r)[0]) for r in rats),
        "rationales": len(rats),
        "fallbacks": sum(bool(r.get("fallback")) for r in rats),
        "claims_per_rationale": sum(n_claims) / len(n_claims) if n_claims else 0.0,
        "cue_counts": dict(cues.most_common()),
        "errors": [{"id": r["id"], "errors": r["rationale"]["errors"]} for r in rows
                   if isinstance(r.get("rationale"), dict) and r["rationale"].get("errors")],
    }
