"""The cue vocabulary shared by the template writer, the LLM prompts and the verifier.

A *cue* is one measured property that a rationale may cite, with a direction relative to
the speaker's baseline: ``up`` (raised pitch), ``down`` (slow speech) or ``usual``.
Thresholds on the cue's z-score (``evidence["z"]``, see :mod:`reasoning.evidence`):

* a plain claim ("raised pitch") needs ``z >= Z_NOTABLE`` (``<= -Z_NOTABLE`` for down);
* an intensified claim ("very loud", "sharply raised pitch") needs ``|z| >= Z_STRONG``;
* a hedged claim ("slightly faster") needs ``Z_SLIGHT <= |z| < Z_STRONG``;
* a "usual" claim ("usual pitch") needs ``|z| < Z_NOTABLE``;
* a negated claim ("not loud") needs the plain claim to be false (``z < Z_NOTABLE``);
* a cue whose z-score is missing (no F0 in an unvoiced clip, no baseline) supports nothing.

Half a standard deviation is the smallest deviation we let a rationale call "raised": it is
about what listeners notice between utterances of one speaker, and it keeps a rationale
from reading noise as a cue. One standard deviation earns "very".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

Z_SLIGHT = 0.25
Z_NOTABLE = 0.5
Z_STRONG = 1.0


@dataclass(frozen=True)
class Cue:
    """One citable cue: the z-score features it reads and how rationales phrase it."""

    name: str
    features: tuple[str, ...]   # several: the cue's z is the largest of them
    label: str                  # how a prompt names it
    up: tuple[str, ...]         # template phrases (noun phrases), one chosen per rationale
    down: tuple[str, ...]
    usual: tuple[str, ...] = ()
    # Verifier patterns, matched on lower-case text.
    match_up: tuple[str, ...] = ()
    match_down: tuple[str, ...] = ()
    match_usual: tuple[str, ...] = ()


_ADJ_HI = r"\b(?:high|higher|raised|elevated|heightened|increased|rising|lifted|greater)"
_ADJ_LO = r"\b(?:low|lower|lowered|reduced|deep|deeper|decreased|dropped|falling|lesser)"
_USUAL = r"\b(?:usual|typical|normal|average|ordinary|moderate|unremarkable|habitual)"
_VQ_NOUN = r"(?:\s+(?:voice|voicing|voice quality|tone|timbre|phonation))"

CUES: tuple[Cue, ...] = (
    # Order matters for the verifier: earlier cues claim their words first, so "flat
    # spectral slope" is a slope claim and never a flat-intonation one.
    Cue("tension", ("spectral_slope",), "spectral slope (voice tension)",
        up=("a tense voice", "a pressed voice", "a strained voice"),
        down=("a lax voice", "a dull voice", "a dark timbre"),
        match_up=(r"\b(?:tense|strained|shrill|piercing)" + _VQ_NOUN + r"?\b",
                  r"\b(?:pressed|bright|brighter|sharp|sharper|metallic|edgy)" + _VQ_NOUN + r"\b",
                  r"\b(?:flat|flatter|shallower|less steep|raised|higher)\s+spectral slope\b",
                  r"\bmore high[- ]frequency energy\b"),
        match_down=(r"\b(?:lax|relaxed|dull|duller|muffled|dark|darker|mellow)" + _VQ_NOUN + r"\b",
                    r"\b(?:steep|steeper|lower)\s+spectral slope\b",
                    r"\bless high[- ]frequency energy\b")),
    Cue("pauses", ("pause_ratio",), "pause ratio",
        up=("long pauses", "frequent pauses", "a halting delivery"),
        down=("few pauses", "a fluent delivery", "hardly any pauses"),
        usual=("usual pausing",),
        match_up=(r"\b(?:many|frequent|long|longer|lengthy|extended|several|more|numerous)\s+"
                  r"(?:silent\s+)?pauses\b", r"\bhesitant\b", r"\bhesitat\w*\b", r"\bhalting\b",
                  r"\bpaus(?:es|ing) (?:often|frequently|a lot)\b"),
        match_down=(r"\b(?:few|fewer|no|little|short|shorter|brief|rare|hardly any)\s+"
                    r"(?:silent\s+)?pauses\b", r"\bwithout (?:any )?(?:pausing|pauses|a pause)\b",
                    r"\b(?:fluent|fluently|uninterrupted|unbroken|continuous)\b"),
        match_usual=(_USUAL + r"\s+(?:pausing|pauses)\b",)),
    Cue("unvoiced", (), "voicing",
        up=("no voiced speech to measure a pitch from",), down=(),
        match_up=(r"\b(?:no|without)\s+(?:measurable\s+|detectable\s+)?(?:voiced speech|voicing|"
                  r"pitch|f0)\b", r"\bunvoiced\b",
                  r"\bpitch (?:could not|couldn't|cannot|can't) be (?:measured|detected|tracked)\b")),
    Cue("pitch_range", ("f0_range_st",), "pitch range",
        up=("a wide pitch range", "a broad pitch range"),
        down=("a narrow pitch range", "a compressed pitch range"),
        usual=("a usual pitch range",),
        match_up=(r"\b(?:wide|wider|broad|broader|large|larger|expanded|extended|big)\s+"
                  r"(?:pitch|f0)\s+range\b", r"\b(?:pitch|f0) range (?:is |was )?(?:wide|broad|large)\b"),
        match_down=(r"\b(?:narrow|narrower|small|smaller|reduced|compressed|restricted|limited)\s+"
                    r"(?:pitch|f0)\s+range\b",
                    r"\b(?:pitch|f0) range (?:is |was )?(?:narrow|small|compressed)\b"),
        match_usual=(_USUAL + r"\s+(?:pitch|f0)\s+range\b",)),
    Cue("intonation", ("f0_sd_st",), "pitch variability (intonation)",
        up=("lively intonation", "varied intonation", "an expressive melody"),
        down=("a monotone delivery", "flat intonation", "little pitch variation"),
        usual=("usual intonation",),
        match_up=(r"\b(?:varied|variable|lively|animated|expressive|dynamic|exaggerated|sing-song|"
                  r"melodic|fluctuating|swinging)\s+(?:intonation|pitch|melody|prosody|pitch contour)\b",
                  r"\b(?:much|lots of|a lot of|great|strong|more|wide)\s+pitch variation\b",
                  r"\bpitch (?:varies|fluctuates|swings)\b"),
        match_down=(r"\bmonoton(?:e|ous|y)\b",
                    r"\bflat\s+(?:intonation|pitch|melody|prosody|delivery|voice)\b",
                    r"\b(?:little|less|reduced|low|limited)\s+pitch variation\b",
                    r"\b(?:level|unvaried|droning)\s+(?:intonation|pitch|melody|delivery)\b"),
        match_usual=(_USUAL + r"\s+(?:intonation|pitch variation|melody)\b",)),
    Cue("pitch", ("f0_mean_st",), "mean pitch",
        up=("raised pitch", "a high pitch", "an elevated pitch"),
        down=("a low pitch", "lowered pitch", "a deep pitch"),
        usual=("usual pitch", "a typical pitch"),
        match_up=(_ADJ_HI + r"(?:[-\s]+(?:mean|average|overall|vocal|voice))?[-\s]+"
                  r"(?:pitch|pitched|f0|fundamental frequency)\b",
                  r"\b(?:pitch|f0) (?:is |was |goes |went |stays |remains )?(?:up|high|higher|"
                  r"raised|elevated|rises|rose)\b"),
        match_down=(_ADJ_LO + r"(?:[-\s]+(?:mean|average|overall|vocal|voice))?[-\s]+"
                    r"(?:pitch|pitched|f0|fundamental frequency)\b",
                    r"\b(?:pitch|f0) (?:is |was |goes |went |stays |remains )?(?:down|low|lower|"
                    r"lowered|drops|dropped)\b"),
        match_usual=(_USUAL + r"\s+(?:pitch|f0)\b",
                     r"\b(?:pitch|f0) (?:near|close to|at) (?:the speaker's|his|her|their) usual\b")),
    Cue("breathiness", ("hnr_db",), "harmonics-to-noise ratio (HNR)",
        up=("a clear voice", "a resonant voice"),
        down=("a breathy voice", "a hoarse voice", "a noisy voice quality"),
        match_up=(r"\b(?:clear|clean|resonant|ringing|pure)" + _VQ_NOUN + r"\b",
                  r"\b" + _ADJ_HI + r"\s+(?:hnr|harmonics-to-noise ratio|harmonicity)\b"),
        match_down=(r"\b(?:breathy|hoarse|husky|noisy|airy|whispery)" + _VQ_NOUN + r"?\b",
                    r"\b" + _ADJ_LO + r"\s+(?:hnr|harmonics-to-noise ratio|harmonicity)\b")),
    Cue("jitter", ("jitter_local",), "jitter", up=(), down=(),
        match_up=(_ADJ_HI + r"\s+jitter\b",), match_down=(_ADJ_LO + r"\s+jitter\b",)),
    Cue("shimmer", ("shimmer_local",), "shimmer", up=(), down=(),
        match_up=(_ADJ_HI + r"\s+shimmer\b",), match_down=(_ADJ_LO + r"\s+shimmer\b",)),
    Cue("roughness", ("jitter_local", "shimmer_local"), "jitter and shimmer (roughness)",
        up=("a rough voice", "irregular voicing", "a shaky voice"),
        down=("steady voicing", "a stable voice"),
        match_up=(r"\b(?:rough|harsh|creaky|gravelly|raspy|trembling|tremulous|shaky|quavering|"
                  r"wavering)" + _VQ_NOUN + r"?\b",
                  r"\b(?:irregular|unsteady)" + _VQ_NOUN + r"\b"),
        match_down=(r"\b(?:steady|stable|regular|smooth)" + _VQ_NOUN + r"\b",)),
    Cue("loudness", ("loudness",), "loudness",
        up=("a loud voice", "high loudness", "a loud, forceful delivery"),
        down=("a quiet voice", "a soft voice", "low loudness"),
        usual=("usual loudness", "a typical volume"),
        match_up=(r"\b(?:loud|louder|loudest|loudly)\b",
                  r"\b" + _ADJ_HI + r"\s+(?:loudness|volume|intensity|vocal effort)\b",
                  r"\b(?:loudness|volume|intensity) (?:is |was )?(?:high|higher|raised|up)\b",
                  r"\b(?:shout\w*|yell\w*|booming|raised voice)\b"),
        match_down=(r"\b(?:quiet|quieter|quietly|soft|softer|softly|hushed|faint|subdued)\b",
                    r"\bwhisper(?:ed|ing|s)?\b", r"\bsoft-spoken\b",
                    r"\b" + _ADJ_LO + r"\s+(?:loudness|volume|intensity|vocal effort)\b",
                    r"\b(?:loudness|volume|intensity) (?:is |was )?(?:low|lower|reduced|down)\b"),
        match_usual=(_USUAL + r"\s+(?:loudness|volume|intensity)\b",)),
    Cue("rate", ("syllable_rate",), "speaking rate (syllables per second)",
        up=("fast speech", "a rapid tempo", "a quick speaking rate"),
        down=("slow speech", "a slow tempo", "an unhurried pace"),
        usual=("a normal pace", "a typical speaking rate"),
        match_up=(r"\b(?:fast|faster|rapid|rapidly|quick|quicker|quickly|hurried|hurriedly|rushed|"
                  r"brisk|speedy|accelerated|swift|swiftly)\b",
                  r"\b" + _ADJ_HI + r"\s+(?:speaking|speech|articulation|syllable)\s+rate\b",
                  r"\b(?:tempo|pace) (?:is |was )?(?:high|fast|quick)\b"),
        match_down=(r"\b(?:slow|slower|slowly|sluggish|drawn[- ]out|unhurried|leisurely|dragging|"
                    r"drawling|lethargic)\b",
                    r"\b" + _ADJ_LO + r"\s+(?:speaking|speech|articulation|syllable)\s+rate\b"),
        match_usual=(_USUAL + r"\s+(?:pace|tempo|speaking rate|speech rate|rate)\b",)),
)
CUES_BY_NAME = {c.name: c for c in CUES}

# Gold labels of the corpora (DESIGN.md) and the family each belongs to. A rationale may
# use any word of its label's family ("joyful" for happiness) and no word of another.
LABEL_FAMILIES = {
    "angry": "anger", "anger": "anger", "happy": "joy", "happiness": "joy", "joy": "joy",
    "excited": "joy", "sad": "sadness", "sadness": "sadness", "fear": "fear", "fearful": "fear",
    "disgust": "disgust", "surprise": "surprise", "surprised": "surprise",
    "boredom": "boredom", "neutral": "neutral", "frustrated": "frustration",
    "frustration": "frustration",
}
EMOTION_WORDS = {
    "anger": ("angry", "anger", "angrily", "furious", "fury", "rage", "enraged", "irritated",
              "irritation", "annoyed", "annoyance", "mad", "hostile", "irate", "outraged", "livid"),
    "joy": ("happy", "happiness", "happily", "joy", "joyful", "joyous", "glad", "cheerful",
            "delighted", "elated", "excited", "excitement", "pleased", "amused", "merry"),
    "sadness": ("sad", "sadness", "sadly", "unhappy", "sorrow", "sorrowful", "depressed",
                "melancholy", "melancholic", "miserable", "grief", "grieving", "gloomy",
                "despondent", "mournful"),
    "fear": ("fear", "fearful", "afraid", "scared", "frightened", "terrified", "anxious",
             "anxiety", "nervous", "panicked", "panic", "worried"),
    "disgust": ("disgust", "disgusted", "revulsion", "repulsed", "revolted"),
    "surprise": ("surprise", "surprised", "astonished", "astonishment", "amazed", "shocked"),
    "boredom": ("boredom", "bored", "uninterested", "apathetic", "indifferent"),
    "neutral": ("neutral", "emotionless", "unemotional"),
    "frustration": ("frustrated", "frustration"),
}
WORD_FAMILY = {w: fam for fam, ws in EMOTION_WORDS.items() for w in ws}
# Lexicon categories (data/lexicon) whose words support a label family.
LEXICON_SUPPORT = {"anger": {"anger"}, "frustration": {"anger"}, "joy": {"joy"},
                   "sadness": {"sadness"}, "fear": {"fear"}, "disgust": {"disgust"},
                   "surprise": {"surprise"}, "boredom": {"boredom"}}
# A negated joy word ("not happy") supports these families.
NEGATED_JOY_SUPPORTS = {"anger", "frustration", "sadness", "fear", "disgust", "boredom"}

# Typical direction of each cue per family (Banse & Scherer 1996; Juslin & Laukka 2003).
# Used only to order the cues a template cites; the verifier never reads it.
PROFILES = {
    "anger": {"pitch": "up", "loudness": "up", "rate": "up", "intonation": "up",
              "pitch_range": "up", "tension": "up"},
    "frustration": {"pitch": "up", "loudness": "up", "tension": "up", "rate": "up"},
    "joy": {"pitch": "up", "intonation": "up", "pitch_range": "up", "loudness": "up", "rate": "up"},
    "sadness": {"pitch": "down", "loudness": "down", "rate": "down", "intonation": "down",
                "pitch_range": "down", "pauses": "up", "tension": "down", "roughness": "up"},
    "fear": {"pitch": "up", "rate": "up", "roughness": "up", "pitch_range": "up"},
    "boredom": {"pitch": "down", "intonation": "down", "pitch_range": "down", "rate": "down",
                "loudness": "down", "tension": "down"},
    "disgust": {"pitch": "down", "rate": "down", "pauses": "up"},
    "surprise": {"pitch": "up", "intonation": "up", "pitch_range": "up"},
}


def family(label: str) -> str:
    """The emotion family of a gold label (an unknown label is its own family)."""
    label = label.strip().lower()
    return LABEL_FAMILIES.get(label, WORD_FAMILY.get(label, label))


def cue_z(cue: Cue, evidence: dict) -> float | None:
    """The z-score a cue is judged on: its feature's, or the largest of its features'."""
    z = evidence.get("z") or {}
    vals = [z.get(f) for f in cue.features if z.get(f) is not None]
    return max(vals) if vals else None


def compile_patterns() -> list[tuple[re.Pattern, Cue, str]]:
    """Every verifier pattern with its cue and direction, in matching order."""
    out = []
    for cue in CUES:
        for direction, pats in (("up", cue.match_up), ("down", cue.match_down),
                                ("usual", cue.match_usual)):
            out.extend((re.compile(p), cue, direction) for p in pats)
    return out
