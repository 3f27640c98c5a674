"""The template writer: deterministic, offline rationales built from the evidence alone.

It cites the cues whose z-score clears ``Z_NOTABLE`` (at most ``MAX_CUES``; those typical
of the label first, then by size; one of pitch range / intonation and one voice-quality
cue), "very" when they clear ``TEMPLATE_STRONG``, and up to two transcript words of the label's
lexicon family. With no notable cue it says the pitch, loudness and pace were usual, which
is itself evidence (for neutral speech above all). Phrasing varies with a seed (the
utterance id): several phrases per cue, list styles and sentence frames. Every phrase is
one the verifier parses back to the same claim, so a template rationale always passes.
"""

from __future__ import annotations

import hashlib
import random
from typing import Sequence

from reasoning.rationales.base import RationaleRequest
from reasoning.rationales.cues import (CUES, CUES_BY_NAME, LEXICON_SUPPORT, NEGATED_JOY_SUPPORTS,
                                       PROFILES, Z_NOTABLE, Z_STRONG, cue_z, family)

MAX_CUES = 3
MAX_QUOTES = 2
# The template says "very" from here, well inside the verifier's Z_STRONG, so that it is
# kept for deviations a listener would call large.
TEMPLATE_STRONG = 1.5
# At most one cue of each group: they describe the same thing twice.
EXCLUSIVE = ({"pitch_range", "intonation"}, {"roughness", "breathiness", "tension"})

_FRAMES = ("{L}: {C}.", "{L}: marked by {C}.", "{L}: heard in {C}.",
           "{L}: {C}, relative to this speaker.")
_FRAMES_Q = ("{L}: {C}, and {Q}.", "{L}: {Q}, with {C}.", "{L}: marked by {C}; the transcript has {Q}.",
             "{L}: {C}, plus {Q}.")


def intensify(phrase: str) -> str:
    """The strong form of a cue phrase: "a loud voice" -> "a very loud voice"."""
    adverb = "sharply" if phrase.split()[0] in ("raised", "lowered") else "very"
    for article in ("a ", "an "):
        if phrase.startswith(article):
            return f"a {adverb} {phrase[len(article):]}"
    return f"{adverb} {phrase}"


def notable_cues(evidence: dict) -> list[tuple[str, str, bool, float]]:
    """Every citable cue whose z-score clears ``Z_NOTABLE``, in the order of :data:`CUES`:
    ``[(cue name, "up"|"down", strong, |z|)]``, strong from ``TEMPLATE_STRONG``."""
    out = []
    for cue in CUES:
        z = cue_z(cue, evidence)
        if cue.up and cue.down and z is not None and abs(z) >= Z_NOTABLE:
            out.append((cue.name, "up" if z > 0 else "down", abs(z) >= max(TEMPLATE_STRONG, Z_STRONG), abs(z)))
    return out


def usual_cues(evidence: dict) -> list[tuple[str, str, bool]]:
    """What a clip with no notable cue is cited for: its usual pitch, loudness and pace
    (those measured), as ``(cue name, "usual", False)``; that is itself evidence."""
    return [(name, "usual", False) for name in ("pitch", "loudness", "rate")
            if (z := cue_z(CUES_BY_NAME[name], evidence)) is not None and abs(z) < Z_NOTABLE]


def select_cues(label: str, evidence: dict) -> list[tuple[str, str, bool]]:
    """The cues a template cites: ``[(cue name, "up"|"down"|"usual", strong)]``."""
    unvoiced = "unvoiced" in (evidence.get("flags") or [])
    chosen: list[tuple[str, str, bool]] = [("unvoiced", "up", False)] if unvoiced else []
    profile = PROFILES.get(family(label), {})
    candidates = [(profile.get(name) != direction, -size, name, direction, strong)
                  for name, direction, strong, size in notable_cues(evidence)]
    taken: set[str] = set()
    for _, _, name, direction, strong in sorted(candidates):
        if len(chosen) >= MAX_CUES + unvoiced:
            break
        group = next((g for g in EXCLUSIVE if name in g), {name})
        if taken & group:
            continue
        taken |= group
        chosen.append((name, direction, strong))
    if len(chosen) == unvoiced:
        chosen += usual_cues(evidence)
    return chosen


def phrase(name: str, direction: str, strong: bool, pick=lambda options: options[0]) -> str:
    """How a template names one cue: one of its phrases for ``direction`` (``pick`` chooses,
    the first by default), intensified when ``strong``."""
    cue = CUES_BY_NAME[name]
    text = pick({"up": cue.up, "down": cue.down, "usual": cue.usual}[direction])
    return intensify(text) if strong else text


def describe_cues(evidence: dict | None) -> str:
    """The clip's cues in the template's own words, for a prompt (``prompt.evidence:
    measured``): every citable cue that clears ``Z_NOTABLE`` (not only the ``MAX_CUES`` a
    template picks, :func:`notable_cues`), in the first phrase of each; the usual pitch,
    loudness and pace when none does. E.g. ``Against this speaker: a very broad pitch range,
    a very quiet voice.`` Missing evidence or baseline says so."""
    ev = evidence if isinstance(evidence, dict) and not evidence.get("error") else None
    if ev is None or not any(z is not None for z in (ev.get("z") or {}).values()):
        return "Cues: not measured."
    cues = [("unvoiced", "up", False)] if "unvoiced" in (ev.get("flags") or []) else []
    notable = [(name, direction, strong) for name, direction, strong, _ in notable_cues(ev)]
    cues += notable or usual_cues(ev)  # as the template: nothing notable is itself a cue
    whom = "this speaker" if (ev.get("baseline") or {}).get("kind") == "speaker" else "the corpus"
    return f"Against {whom}: {', '.join(phrase(*c) for c in cues)}."


def supporting_quotes(label: str, evidence: dict) -> list[str]:
    """Transcript phrases (lexicon hits) that support ``label``, at most ``MAX_QUOTES``."""
    fam = family(label)
    support = LEXICON_SUPPORT.get(fam, set())
    out: list[str] = []
    for hit in (evidence.get("lexical") or {}).get("hits", []):
        ok = (hit["category"] in support and not hit["negated"]) or (
            hit["negated"] and hit["category"] == "joy" and fam in NEGATED_JOY_SUPPORTS)
        if ok and hit["phrase"] not in out:
            out.append(hit["phrase"])
    return out[:MAX_QUOTES]


def _join(items: Sequence[str], rng: random.Random) -> str:
    if len(items) <= 1:
        return "".join(items)
    comma = "," if len(items) > 2 and rng.random() < 0.5 else ""
    return ", ".join(items[:-1]) + f"{comma} and {items[-1]}"


def render(label: str, cues: Sequence[tuple[str, str, bool]], quotes: Sequence[str], seed: str) -> str:
    """Turn chosen cues and quotes into one line ``label: ...``, phrased by ``seed``."""
    rng = random.Random(int(hashlib.sha256(seed.encode()).hexdigest()[:16], 16))
    phrases = [phrase(name, direction, strong, rng.choice) for name, direction, strong in cues]
    quoted = [f"'{q}'" for q in quotes]
    q = ""
    if quoted:
        many = len(quoted) > 1 or len(quotes[0].split()) > 1
        q = f"the word{'s' if many else ''} {_join(quoted, rng)}"
    if phrases and quoted:
        frame = rng.choice(_FRAMES_Q)
    elif phrases:
        frame = rng.choice(_FRAMES)
    else:
        frame = "{L}: {Q}." if quoted else "{L}:"
    return frame.format(L=label, C=_join(phrases, rng), Q=q)


def template_rationale(request: RationaleRequest, seed: str | None = None) -> str:
    """The template rationale of one request (deterministic for a given seed)."""
    return render(request.label, select_cues(request.label, request.evidence),
                  supporting_quotes(request.label, request.evidence),
                  seed if seed is not None else request.id)


class TemplateWriter:
    """Writer ``template``: offline, deterministic, varied phrasing; never fails to run."""

    name = "template"
    concurrency = 1

    def write(self, request: RationaleRequest, attempt: int = 0, feedback: Sequence[str] = ()) -> str:
        """A template rationale; each attempt is phrased differently."""
        return template_rationale(request, seed=f"{request.id}:{attempt}")
