"""Rationale writers and the verifier: true claims pass, planted false ones never do."""

import json
import random

import pytest

from evidence_synth import speech, write_wav
from reasoning.cli import main
from reasoning.evidence import Z_FEATURES, measure_manifest
from reasoning.rationales import (RationaleRequest, TemplateWriter, WriterError, extract_claims,
                                  template_rationale, verify, write_rationales)
from reasoning.rationales.base import build_messages, normalize_output
from reasoning.rationales.cues import CUES
from reasoning.rationales.template import intensify, render, select_cues, supporting_quotes


def make_evidence(z=None, flags=(), hits=()):
    zs = dict.fromkeys(Z_FEATURES)
    zs.update(z or {})
    return {"z": zs, "values": {}, "flags": list(flags), "error": None,
            "lexical": {"hits": list(hits), "categories": {}, "n_words": 5}}


HIT_GET_OUT = {"word": "get out", "category": "anger", "negated": False, "phrase": "get out"}
ANGRY = make_evidence({"f0_mean_st": -1.2, "loudness": 1.4, "syllable_rate": 0.7,
                       "f0_sd_st": 0.1, "spectral_slope": 0.9, "hnr_db": -0.2,
                       "jitter_local": 0.1, "shimmer_local": 0.3, "pause_ratio": -0.1,
                       "f0_range_st": 0.2}, hits=[HIT_GET_OUT])
TRANSCRIPT = "Get out of here, I hate this."


def check(text, evidence=ANGRY, gold="anger", transcript=TRANSCRIPT):
    return verify(text, evidence, gold, transcript)


@pytest.mark.parametrize("cue", [c for c in CUES if c.up or c.down], ids=lambda c: c.name)
def test_every_template_phrase_parses_back_to_its_claim(cue):
    for direction, phrases in (("up", cue.up), ("down", cue.down), ("usual", cue.usual)):
        for phrase in phrases:
            for text, strength in ((phrase, "plain"), (intensify(phrase), "strong")):
                claims = [c for c in extract_claims(f"anger: {text}.") if c["kind"] == "cue"]
                assert [(c["cue"], c["direction"], c["strength"], c["negated"]) for c in claims] \
                    == [(cue.name, direction, strength, False)], text


def test_verifier_accepts_true_claims():
    v = check("anger: lowered pitch, a very loud voice, fast speech and a tense voice, and "
              "the words 'get out'.")
    assert v.passed, v.problems
    kinds = sorted(c.get("cue", c["kind"]) for c in v.claims)
    assert kinds == ["emotion", "loudness", "pitch", "quote", "rate", "tension"]
    assert check("anger: usual intonation, not quiet, and she is furious: 'I hate this'").passed
    assert check("Anger: slightly faster speech, a loud voice").passed  # label case aside


@pytest.mark.parametrize("text, why", [
    ("anger: raised pitch and a loud voice.", "pitch"),                 # the clip is low
    ("anger: a loud voice and the words 'leave now'.", "not in the transcript"),
    ("sadness: lowered pitch and a loud voice.", "gold label"),          # wrong label
    ("anger: a loud voice; she also sounds sad.", "sadness"),           # another label
    ("anger: a loud voice and very fast speech.", "rate"),              # z 0.7 is not "very"
    ("anger: a loud voice, slightly lowered pitch.", "pitch"),          # z -1.2 is not slight
    ("anger: not loud, lowered pitch.", "loudness"),                    # negation is false
    ("anger: usual pitch and a loud voice.", "pitch"),
    ("anger: a loud voice and long pauses.", "pauses"),
    ("anger: a loud voice and a breathy voice.", "breathiness"),        # hnr z -0.2
    ("anger: an angry speaker.", "cites no evidence"),
    ("a loud voice and lowered pitch.", "does not start"),
])
def test_verifier_rejects_planted_false_claims(text, why):
    v = check(text)
    assert not v.passed
    assert any(why in p for p in v.problems), v.problems


def test_quotes_need_a_transcript_and_unvoiced_clips_have_no_pitch():
    assert not check("anger: a loud voice and the words 'get out'.", transcript=None).passed
    unvoiced = make_evidence({"loudness": 0.8}, flags=["unvoiced"])
    v = check("anger: raised pitch and a loud voice.", evidence=unvoiced)
    assert not v.passed and any("unvoiced" in p for p in v.problems)
    assert check("anger: no voiced speech to measure a pitch from, and a loud voice.",
                 evidence=unvoiced).passed
    assert not check("anger: no measurable pitch, a loud voice.").passed  # ANGRY is voiced


def test_template_never_invents_pitch_for_an_unvoiced_or_silent_clip():
    silent = make_evidence(flags=["silent", "unvoiced"])
    text = template_rationale(RationaleRequest("x", "neutral", None, silent))
    assert "pitch from" in text and check(text, silent, "neutral", None).passed
    no_baseline = make_evidence()
    text = template_rationale(RationaleRequest("y", "neutral", "hello", no_baseline))
    assert not check(text, no_baseline, "neutral", "hello").passed  # nothing to cite: says so


def random_evidence(rng):
    z = {f: (None if rng.random() < 0.1 else round(rng.gauss(0, 1.2), 2)) for f in Z_FEATURES}
    flags = ["unvoiced"] if rng.random() < 0.05 else []
    if flags:
        for f in ("f0_mean_st", "f0_range_st", "f0_sd_st", "jitter_local", "shimmer_local", "hnr_db"):
            z[f] = None
    hits = []
    if rng.random() < 0.5:
        hits = [{"word": "hate", "category": "anger", "negated": False, "phrase": "hate"},
                {"word": "happy", "category": "joy", "negated": True, "phrase": "not happy"}]
    return make_evidence(z, flags, hits)


LABELS = ["anger", "happiness", "sadness", "neutral", "fear", "boredom", "disgust", "angry",
          "happy", "sad", "joy", "surprise", "frustrated"]


def test_template_rationales_pass_vary_and_are_deterministic():
    rng = random.Random(0)
    texts = []
    for i in range(300):
        ev, label = random_evidence(rng), rng.choice(LABELS)
        req = RationaleRequest(f"u{i}", label, "I hate it, I'm not happy.", ev)
        text = TemplateWriter().write(req, 0)
        assert text == TemplateWriter().write(req, 0)
        assert text.startswith(f"{label}: ")
        v = verify(text, ev, label, req.transcript)
        if select_cues(label, ev) or supporting_quotes(label, ev):
            assert v.passed, (text, v.problems)
        texts.append(text)
    openings = {t.split(": ", 1)[1].split()[0] for t in texts}
    assert len(openings) >= 8 and len(set(texts)) > 250


def _flip(direction):
    return {"up": "down", "down": "up", "usual": "up"}[direction]


def test_planted_false_set_is_always_rejected():
    """Every template rationale with one claim flipped, its label swapped or a foreign quote."""
    rng = random.Random(1)
    planted = rejected = 0
    for i in range(200):
        ev, label = random_evidence(rng), rng.choice(["anger", "sadness", "neutral", "happiness"])
        cues = [c for c in select_cues(label, ev) if c[0] != "unvoiced"]
        quotes = supporting_quotes(label, ev)
        variants = []
        for k, (name, direction, strong) in enumerate(cues):
            flipped = list(cues)
            flipped[k] = (name, _flip(direction), strong)
            variants.append(render(label, flipped, quotes, seed=f"{i}"))
        other = "neutral" if label != "neutral" else "anger"
        variants.append(render(other, cues, quotes, seed=f"{i}"))  # another leading label
        variants.append(render(label, cues, quotes, seed=f"{i}")
                        + f" The speaker sounds {'neutral' if other == 'neutral' else 'angry'}.")
        variants.append(render(label, cues, list(quotes) + ["see you on wednesday"], seed=f"{i}"))
        for text in variants:
            planted += 1
            rejected += not verify(text, ev, label, "I hate it, I'm not happy.").passed
    assert planted > 600 and rejected == planted


def test_verifier_on_measured_clips(tmp_path):
    """From audio to verdict: "raised pitch" holds for the high clips of a speaker only."""
    rows = []
    for name, f0 in (("a", 110), ("b", 120), ("c", 160), ("d", 220), ("e", 240)):
        write_wav(tmp_path / f"{name}.wav", speech(f0=f0, n_syll=4))
        rows.append({"id": name, "audio": f"{name}.wav", "speaker": "s", "dataset": "t",
                     "transcript": None, "emotion": "neutral"})
    rows, _ = measure_manifest(rows, base_dir=tmp_path, min_speaker_utterances=3)
    ev = {r["id"]: r["evidence"] for r in rows}
    for clip, high in (("a", False), ("b", False), ("d", True), ("e", True)):
        assert verify("neutral: raised pitch.", ev[clip], "neutral", None).passed is high
        assert verify("neutral: lowered pitch.", ev[clip], "neutral", None).passed is not high
    assert verify("neutral: usual pitch.", ev["c"], "neutral", None).passed


def test_normalize_output():
    assert normalize_output('"Anger: a loud voice."\nmore', "anger") == "anger: a loud voice."
    assert normalize_output("**Rationale:** a loud voice", "anger") == "anger: a loud voice"
    assert normalize_output("sadness: quiet", "anger") == "sadness: quiet"  # left to reject
    assert normalize_output("", "anger") == "anger:"
    assert normalize_output("zzkq qqx", "anger") == "anger: zzkq qqx"


def test_prompt_carries_label_transcript_and_citable_cues():
    msgs = build_messages(RationaleRequest("u", "anger", TRANSCRIPT, ANGRY), ["'x': wrong"])
    user = msgs[1]["content"]
    assert msgs[0]["role"] == "system" and "anger:" in user and TRANSCRIPT in user
    assert "loudness: z = +1.40, citable" in user and "'get out'" in user
    assert "mean pitch: z = -1.20, citable" in user and "rejected: 'x': wrong" in user


class ScriptedWriter:
    """A writer that answers from a list (an exception in the list is raised)."""

    name = "scripted"
    concurrency = 2

    def __init__(self, answers):
        self.answers, self.calls = list(answers), []

    def write(self, request, attempt, feedback):
        self.calls.append((request.id, attempt, list(feedback)))
        answer = self.answers[min(attempt, len(self.answers) - 1)]
        if isinstance(answer, Exception):
            raise answer
        return answer


def _rows():
    return [{"id": "u1", "audio": "u1.wav", "emotion": "anger", "transcript": TRANSCRIPT,
             "evidence": ANGRY},
            {"id": "u2", "audio": "u2.wav", "emotion": None, "transcript": None,
             "evidence": ANGRY},
            {"id": "u3", "audio": "u3.wav", "emotion": "anger", "transcript": None,
             "evidence": None}]


def test_a_rejected_answer_is_regenerated_with_feedback():
    w = ScriptedWriter(["anger: raised pitch.", "anger: lowered pitch and a loud voice."])
    rows, s = write_rationales(_rows(), w)
    r = rows[0]["rationale"]
    assert r["text"] == "anger: lowered pitch and a loud voice."
    assert (r["writer"], r["verdict"], r["attempts"], r["fallback"]) == ("scripted", "pass", 2, False)
    assert w.calls[1][2] and "pitch" in w.calls[1][2][0]   # told why attempt 0 failed
    assert s["skipped"] == {"no_emotion": 1, "no_evidence": 1}
    assert rows[1].get("rationale") is None and rows[2].get("rationale") is None
    assert s["per_writer"]["scripted"] == {"candidates": 2, "passed": 1, "errors": 0,
                                           "pass_rate": 0.5}


def test_garbage_and_errors_fall_back_to_a_template():
    w = ScriptedWriter(["qq zz xx", WriterError("HTTP 503"), "sadness: quiet."])
    rows, s = write_rationales(_rows()[:1], w, max_attempts=3)
    r = rows[0]["rationale"]
    assert r["writer"] == "template" and r["fallback"] and r["verdict"] == "pass"
    assert r["requested_writer"] == "scripted" and r["errors"] == ["HTTP 503"]
    assert s["per_writer"]["scripted"]["errors"] == 1
    assert s["per_writer"]["template"]["pass_rate"] == 1.0 and s["fallbacks"] == 1


def test_rerun_keeps_passing_rationales_unless_forced():
    rows, _ = write_rationales(_rows(), "template")
    rows, s = write_rationales(rows, "template")
    assert s["kept"] == 1 and s["written"] == 0
    rows, s = write_rationales(rows, "template", force=True)
    assert s["written"] == 1


def test_cli_template(tmp_path, capsys):
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    assert main(["rationales", "--manifest", str(path), "--writer", "template"]) == 0
    out = capsys.readouterr().out
    assert "pass rate template: 1/1 candidates (100.0%)" in out and "skipped (no_emotion 1" in out
    assert "claims per rationale" in out and "cues cited:" in out
    row = json.loads(path.read_text().splitlines()[0])
    assert row["rationale"]["verdict"] == "pass" and row["rationale"]["text"].startswith("anger:")
    assert main(["rationales", "--manifest", str(path), "--writer", "openai"]) == 2
    assert "needs --model" in capsys.readouterr().err


def test_rationale_metrics_read_the_record_the_rationale_stage_writes():
    """One verdict schema: the record rationale_for writes (verdict 'pass', claims beside it)
    is read whole by rationale_metrics, claims included; the dict form explain wrote before
    is still read; any other verdict names the command that regenerates it."""
    from reasoning.errors import UserError
    from reasoning.evaluation.metrics import rationale_metrics
    from reasoning.rationales import rationale_for
    from reasoning.rationales.verify import read_verdict
    record, _ = rationale_for(RationaleRequest("u1", "anger", TRANSCRIPT, ANGRY), TemplateWriter())
    assert record["verdict"] == "pass" and record["claims"]
    m = rationale_metrics([record])
    assert m["pass_rate"] == 1.0 and m["n_with_claims"] == 1 and m["cues_per_rationale"] >= 1
    old = {"text": "x", "verdict": {"passed": False, "claims": [{"cue": "pitch", "supported": False}]}}
    assert read_verdict(old) == (False, [{"cue": "pitch", "supported": False}])
    assert read_verdict({"text": "x", "verdict": None}) == (None, None)
    with pytest.raises(UserError, match="emoreason rationales"):
        read_verdict({"text": "x", "verdict": "ok"}, source="m.jsonl row a")
