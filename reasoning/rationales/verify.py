"""The verifier: extract the claims of a rationale and check each against the evidence.

Claims it extracts (patterns in :mod:`reasoning.rationales.cues`):

* **the stated emotion**: the leading ``label:`` must be the gold label (case aside), and
  every emotion word elsewhere (outside quotes) must belong to the gold label's family,
  negated or not: a rationale never names another label;
* **acoustic cues**: pitch, pitch range, intonation, loudness, speaking rate, pauses and
  voice quality (roughness, breathiness, tension, jitter, shimmer), each with a direction
  (up, down, usual), a strength (slight, plain, strong) and a negation, judged on the
  cue's z-score with the thresholds of :mod:`reasoning.rationales.cues`;
* **unvoiced**: "no measurable pitch" needs the ``unvoiced`` flag;
* **quoted words**: the words between quotes must occur, in that order, in the transcript.

A rationale passes when it has at least one evidence claim (an emotion alone explains
nothing) and every claim is supported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from reasoning.errors import UserError
from reasoning.evidence.lexical import words
from reasoning.rationales.cues import (WORD_FAMILY, Z_NOTABLE, Z_SLIGHT, Z_STRONG, Cue, compile_patterns,
                                       cue_z, family)

_PATTERNS = compile_patterns()
_LEADING_LABEL = re.compile(r"^\s*([a-z][a-z0-9 _'-]{0,40}?)\s*:")
_QUOTES = (re.compile(r"\u201c([^\u201d]+)\u201d"), re.compile(r'"([^"]+)"'),
           re.compile(r"(?<![\w'])'(.+?)'(?!\w)"), re.compile(r"\u2018(.+?)\u2019(?!\w)"))
_STRONG = re.compile(r"\b(?:very|extremely|highly|much|strongly|sharply|markedly|considerably|"
                     r"greatly|exceptionally|remarkably|especially|particularly|far|"
                     r"significantly|substantially|notably)\s+$")
_SLIGHT = re.compile(r"\b(?:slightly|somewhat|a bit|a little|mildly|marginally|a touch|a tad|"
                     r"moderately)\s+$")
_NEGATED = re.compile(r"\b(?:not|never|hardly|barely|no longer|nor|neither|rather than|"
                      r"instead of|\w+n't)\b(?:\s+\w+){0,2}\s*$")
_CLAUSE = re.compile(r"[,;.:!?]")


@dataclass
class Verdict:
    """The result of :func:`verify`: ``passed`` and every claim with its judgement."""

    passed: bool
    claims: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


PASS, FAIL = "pass", "fail"


def verdict_fields(verdict: Verdict) -> dict:
    """The verdict as every rationale record stores it (the rationale stage's manifest field
    and explain's predictions alike): ``{"verdict": "pass" | "fail", "claims": [...],
    "problems": [...]}``. The one writer of the schema; :func:`read_verdict` reads it."""
    return {"verdict": PASS if verdict.passed else FAIL, "claims": verdict.claims,
            "problems": verdict.problems}


def read_verdict(record: dict, source: str = "a rationale record") -> tuple[bool | None, list | None]:
    """``(passed, claims)`` of a rationale record; ``(None, None)`` when it was not verified.

    Also reads the ``{"passed": bool, "claims": [...]}`` dict that ``emoreason explain``
    wrote before the schema was one; any other verdict raises a UserError naming ``source``
    and the command that writes it again."""
    verdict = record.get("verdict")
    if verdict is None:
        return None, None
    if verdict in (PASS, FAIL):
        return verdict == PASS, record.get("claims")
    if isinstance(verdict, dict) and isinstance(verdict.get("passed"), bool):
        return verdict["passed"], verdict.get("claims")
    raise UserError(f"{source}: rationale verdict {verdict!r} is neither 'pass' nor 'fail'. "
                    "Write the rationales again with `emoreason rationales --manifest M --force`.")


def _mask(text: str, start: int, end: int) -> str:
    return text[:start] + "#" * (end - start) + text[end:]


def _clause_before(text: str, start: int) -> str:
    before = text[:start]
    cut = max((m.end() for m in _CLAUSE.finditer(before)), default=0)
    return before[cut:]


def extract_claims(text: str) -> list[dict]:
    """The claims of a rationale, in order of their kind (no judgement yet).

    Each is a dict with ``kind`` (``emotion``, ``cue`` or ``quote``) and ``text`` (the
    words as written); cue claims add ``cue``, ``direction``, ``strength``, ``negated``;
    emotion claims add ``leading`` (the ``label:`` form) and ``family``.
    """
    # Lower-case character by character so that offsets in ``work`` stay offsets in ``text``.
    work = "".join(ch.lower() if len(ch.lower()) == 1 else ch for ch in text)
    claims: list[dict] = []
    lead = _LEADING_LABEL.match(work)
    if lead:
        claims.append({"kind": "emotion", "text": lead.group(1).strip(), "leading": True})
        work = _mask(work, lead.start(1), lead.end(1))
    for pattern in _QUOTES:
        for m in pattern.finditer(work):
            if "#" in m.group(0):
                continue  # inside a span already taken by another kind of quote
            claims.append({"kind": "quote", "text": text[m.start(1):m.end(1)]})
            work = _mask(work, m.start(), m.end())
    work = work.replace("\u2019", "'")  # "isn\u2019t" negates like "isn't"
    for pattern, cue, direction in _PATTERNS:
        for m in pattern.finditer(work):
            if "#" in m.group(0):
                continue
            before = work[:m.start()]
            strong, slight = _STRONG.search(before), _SLIGHT.search(before)
            clause = _clause_before(work, m.start())
            negation = _NEGATED.search(clause)
            # The claim's text runs from its first modifier, so a report reads "not loud".
            start = min([m.start()] + [x.start() for x in (strong, slight) if x]
                        + ([m.start() - len(clause) + negation.start()] if negation else []))
            claims.append({"kind": "cue", "cue": cue.name, "direction": direction,
                           "strength": "strong" if strong else "slight" if slight else "plain",
                           "negated": negation is not None, "text": text[start:m.end()]})
            work = _mask(work, m.start(), m.end())
    for m in re.finditer(r"[a-z]+", work):
        fam = WORD_FAMILY.get(m.group(0))
        if fam is not None:
            claims.append({"kind": "emotion", "text": m.group(0), "leading": False, "family": fam})
    return claims


def _judge_cue(claim: dict, cue: Cue, evidence: dict) -> tuple[bool, str]:
    flags = evidence.get("flags") or []
    if cue.name == "unvoiced":
        ok = "unvoiced" in flags
        if claim["negated"]:
            return not ok, "the clip is unvoiced" if ok else "the clip has voiced speech"
        return ok, "the clip is unvoiced" if ok else "the clip has voiced speech with a pitch"
    z = cue_z(cue, evidence)
    if z is None:
        why = ("no F0 in an unvoiced clip" if "unvoiced" in flags and cue.name in
               ("pitch", "pitch_range", "intonation", "jitter", "shimmer", "roughness",
                "breathiness") else "not measured for this clip")
        return False, f"{cue.name}: {why}"
    d, s = claim["direction"], claim["strength"]
    sign = 1.0 if d == "up" else -1.0
    if d == "usual":
        ok = abs(z) < Z_NOTABLE
        need = f"|z| < {Z_NOTABLE}"
    elif s == "strong":
        ok, need = sign * z >= Z_STRONG, f"z {'>=' if d == 'up' else '<='} {sign * Z_STRONG:+}"
    elif s == "slight":
        ok = Z_SLIGHT <= sign * z < Z_STRONG
        need = f"{Z_SLIGHT} <= {'' if d == 'up' else '-'}z < {Z_STRONG}"
    else:
        ok, need = sign * z >= Z_NOTABLE, f"z {'>=' if d == 'up' else '<='} {sign * Z_NOTABLE:+}"
    if claim["negated"]:
        ok, need = not ok, f"not ({need})"
    return ok, f"{cue.name} z={z:+.2f}, needs {need}"


def verify(text: str, evidence: dict, gold: str, transcript: str | None,
           gold_name: str = "the gold label") -> Verdict:
    """Check every claim of ``text`` against ``evidence`` (the row's ``evidence`` field),
    the gold label and the transcript. Returns a :class:`Verdict`; each claim gains
    ``supported`` (bool) and ``reason``. ``gold_name`` is how the reasons name ``gold``: a
    clip without a gold label (``emoreason demo``) is checked against the model's own
    scored label.
    """
    from reasoning.rationales.cues import CUES_BY_NAME

    claims = extract_claims(text)
    gold_family = family(gold)
    transcript_words = " " + " ".join(words(transcript or "")) + " "
    problems = []
    for c in claims:
        if c["kind"] == "emotion" and c["leading"]:
            c["supported"] = c["text"] == gold.strip().lower()
            c["reason"] = gold_name if c["supported"] else f"{gold_name} is {gold!r}"
        elif c["kind"] == "emotion":
            c["supported"] = c["family"] == gold_family
            c["reason"] = (f"{c['family']} family" if c["supported"] else
                           f"names {c['family']}, {gold_name} is {gold!r}")
        elif c["kind"] == "quote":
            quoted = " ".join(words(c["text"]))
            c["supported"] = bool(quoted) and transcript is not None and f" {quoted} " in transcript_words
            c["reason"] = ("in the transcript" if c["supported"] else
                           "no transcript" if transcript is None else "not in the transcript")
        else:
            c["supported"], c["reason"] = _judge_cue(c, CUES_BY_NAME[c["cue"]], evidence)
        if not c["supported"]:
            problems.append(f"{c['text']!r}: {c['reason']}")
    if not any(c["kind"] == "emotion" and c["leading"] for c in claims):
        problems.append(f"does not start with '{gold}:'")
    if not any(c["kind"] in ("cue", "quote") for c in claims):
        problems.append("cites no evidence (no acoustic cue and no quoted word)")
    return Verdict(passed=not problems, claims=claims, problems=problems)
