"""The one interface every rationale writer implements, and the prompt the LLM writers share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from reasoning.rationales.cues import CUES, Z_NOTABLE, Z_STRONG, cue_z


@dataclass(frozen=True)
class RationaleRequest:
    """What a writer is given for one utterance: the gold label, transcript and evidence."""

    id: str
    label: str
    transcript: str | None
    evidence: dict


class WriterError(Exception):
    """A writer could not produce text for one request (endpoint down, model error).

    The message is reported in the summary; the row falls back to a template rationale.
    """


class Writer(Protocol):
    """A rationale writer. ``write`` returns raw text (normalised and verified by the
    caller); ``attempt`` counts from 0 and ``feedback`` lists why the previous attempt
    was rejected, so a writer can do better. ``concurrency`` is how many requests it may
    serve at once."""

    name: str
    concurrency: int

    def write(self, request: RationaleRequest, attempt: int, feedback: Sequence[str]) -> str: ...


SYSTEM_PROMPT = (
    "You explain why a speech clip expresses a given emotion, in one short line. Cite only "
    "the measured cues you are given, in plain words, and only those marked as citable. "
    "Never name any emotion other than the given one, and do not quote words that are not "
    "in the transcript."
)


def describe_evidence(request: RationaleRequest) -> str:
    """The evidence of one utterance in words an LLM can cite and the verifier can check."""
    from reasoning.rationales.template import intensify, supporting_quotes

    ev = request.evidence
    lines = []
    if "unvoiced" in (ev.get("flags") or []):
        lines.append('- voicing: the clip is unvoiced; there is no pitch. You may say '
                     '"no voiced speech to measure a pitch from"; never describe its pitch.')
    for cue in CUES:
        if not cue.up or not cue.down:
            continue
        z = cue_z(cue, ev)
        if z is None:
            lines.append(f"- {cue.label}: not measured; do not mention it")
        elif abs(z) >= Z_NOTABLE:
            phrase = (cue.up if z > 0 else cue.down)[0]
            if abs(z) >= Z_STRONG:
                phrase = intensify(phrase)
            lines.append(f'- {cue.label}: z = {z:+.2f}, citable, e.g. "{phrase}"')
        else:
            lines.append(f"- {cue.label}: z = {z:+.2f}, near the speaker's usual; do not call "
                         "it raised or lowered")
    quotes = supporting_quotes(request.label, ev)
    lexical = ev.get("lexical") or {}
    for hit in lexical.get("hits", []):
        tag = "citable" if hit["phrase"] in quotes else "not evidence for this emotion"
        lines.append(f"- word '{hit['phrase']}' ({hit['category']}"
                     f"{', negated' if hit['negated'] else ''}): {tag}")
    return "\n".join(lines)


def build_messages(request: RationaleRequest, feedback: Sequence[str] = ()) -> list[dict]:
    """Chat messages for an LLM writer (OpenAI format: ``[{"role", "content"}]``)."""
    from reasoning.rationales.template import template_rationale

    transcript = (f'Transcript: "{request.transcript}"' if request.transcript else
                  "Transcript: none (cite acoustic cues only, quote nothing)")
    example = template_rationale(request, seed=request.id)
    user = (f"Emotion: {request.label}\n{transcript}\n"
            "Measured cues (z-scores against this speaker's usual voice):\n"
            f"{describe_evidence(request)}\n\n"
            f'Answer with one line that starts with "{request.label}:" followed by the '
            f"citable cues that support it, for example:\n{example}")
    if feedback:
        user += ("\n\nYour previous answer was rejected: " + "; ".join(feedback)
                 + ". Write it again using only the citable cues.")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def normalize_output(text: str, label: str) -> str:
    """One clean line from an LLM's answer, starting with ``label:``.

    Takes the first non-empty line, strips wrapping quotes and markdown, fixes the case of
    a leading label that is the gold one, and prepends ``label:`` when the answer has no
    leading label at all. A different leading label is kept, so the verifier rejects it.
    """
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = line.replace("**", "").replace("__", "").strip("`*_ \t").strip()
    for prefix in ("rationale:", "answer:", "output:"):
        if line.lower().startswith(prefix):
            line = line[len(prefix):].strip()
    if len(line) >= 2 and line[0] == line[-1] and line[0] in "\"'":
        line = line[1:-1].strip()
    line = " ".join(line.split())[:400]
    head, sep, rest = line.partition(":")
    if sep and head.strip().lower() == label.lower():
        return f"{label}: {rest.strip()}"
    if sep and 0 < len(head.split()) <= 2:
        return line  # another leading label: left for the verifier to reject
    return f"{label}: {line}" if line else f"{label}:"
