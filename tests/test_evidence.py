"""The evidence stage on synthesized signals whose pitch, loudness and pauses are known."""

import json
import os
import threading

import numpy as np
import pytest

from evidence_synth import SR, speech, write_wav
from reasoning.cli import main
from reasoning.evidence import (EXTRACTOR_VERSION, add_zscores, find_emotion_words, lexical_evidence,
                                load_lexicon, measure_acoustics, measure_manifest)
from reasoning.evidence import cli as evidence_cli
from reasoning.evidence import measure as measure_mod
from reasoning.manifest import read_manifest, write_manifest


@pytest.mark.parametrize("f0", [120.0, 220.0])
def test_pitch_of_a_known_pulse_train(f0):
    values, flags = measure_acoustics(speech(f0=f0), SR)
    assert flags == []
    assert values["f0_mean_hz"] == pytest.approx(f0, rel=0.02)
    assert values["f0_mean_st"] == pytest.approx(12 * np.log2(f0 / 27.5), abs=0.3)
    assert values["f0_sd_st"] < 0.3 and values["f0_range_st"] < 1.0  # a monotone source


def test_pitch_variability_follows_a_glide():
    # Syllables alternating 110 / 220 Hz: one octave apart, so the range is ~12 semitones.
    wave = np.concatenate([speech(f0=110, n_syll=3), speech(f0=220, n_syll=3)])
    values, _ = measure_acoustics(wave, SR)
    assert 10.0 < values["f0_range_st"] < 13.0
    assert values["f0_sd_st"] > 4.0


def test_loudness_grows_with_amplitude_and_pitch_does_not_move():
    quiet, _ = measure_acoustics(speech(amp=0.05), SR)
    loud, _ = measure_acoustics(speech(amp=0.5), SR)
    assert loud["loudness"] > 3 * quiet["loudness"]
    assert loud["f0_mean_hz"] == pytest.approx(quiet["f0_mean_hz"], rel=0.01)


def test_syllables_rate_and_pauses():
    fluent, _ = measure_acoustics(speech(n_syll=8), SR)
    assert fluent["n_syllables"] == 8
    assert fluent["pause_ratio"] == 0.0 and fluent["n_pauses"] == 0
    # 8 syllables of 0.25 s each: 4 per second of speech.
    assert fluent["syllable_rate"] == pytest.approx(4.0, rel=0.1)
    fast, _ = measure_acoustics(speech(n_syll=8, syl=0.1, gap=0.05), SR)
    assert fast["syllable_rate"] > 1.5 * fluent["syllable_rate"]
    halting, _ = measure_acoustics(speech(n_syll=8, pauses=(2, 5), pause_s=0.5), SR)
    assert halting["n_pauses"] == 2
    # Two pauses of 0.57 s (0.5 s + the 0.07 s gap) in a 3.0 s span.
    assert halting["pause_ratio"] == pytest.approx(1.14 / 3.0, abs=0.05)
    assert halting["syllable_rate"] == pytest.approx(fluent["syllable_rate"], rel=0.15)


def test_voice_quality_moves_the_right_way():
    clean, _ = measure_acoustics(speech(), SR)
    jittery, _ = measure_acoustics(speech(jitter=0.03), SR)
    noisy, _ = measure_acoustics(speech(noise=0.02), SR)
    assert jittery["jitter_local"] > 3 * clean["jitter_local"]
    assert noisy["hnr_db"] < clean["hnr_db"] - 5
    assert clean["spectral_slope"] is not None and clean["shimmer_local"] > 0


def test_silence_and_noise_get_no_pitch():
    values, flags = measure_acoustics(np.zeros(SR, dtype=np.float32), SR)
    assert flags == ["silent", "unvoiced"]
    assert all(v is None for k, v in values.items() if k != "duration_s")
    noise = 0.1 * np.random.default_rng(0).standard_normal(SR).astype(np.float32)
    values, flags = measure_acoustics(noise, SR)
    assert flags == ["unvoiced"]
    for key in ("f0_mean_hz", "f0_mean_st", "f0_range_st", "f0_sd_st", "jitter_local",
                "shimmer_local", "hnr_db"):
        assert values[key] is None, key
    assert values["loudness"] > 0


def test_lexicon_finds_words_and_handles_negation():
    _, lex = load_lexicon()
    hits = find_emotion_words("I'm not happy. I am furious, get out! Not tired but glad.", lex)
    by_word = {(h["word"], h["negated"]) for h in hits}
    assert ("happy", True) in by_word and ("furious", False) in by_word
    assert ("get out", False) in by_word          # a phrase of two words
    assert ("tired", True) in by_word and ("glad", False) in by_word  # "but" ends the scope
    assert [h["phrase"] for h in hits if h["word"] == "happy"] == ["not happy"]
    ev = lexical_evidence("I don't love it. I hate it.")
    assert ev["categories"] == {"anger": 1}       # the negated "love" is not joy
    assert lexical_evidence(None) is None and lexical_evidence("  ") is None


def test_lexicon_finds_nothing_in_the_emodb_glosses():
    # The EmoDB sentences were chosen to be emotionally neutral (copied here, not read).
    glosses = ["The cloth is lying on the fridge.", "What are those bags standing under the table?",
               "I just want to take this away and then go for a drink with Karl.",
               "At the weekends I have always gone home lately and visited Agnes."]
    assert all(lexical_evidence(g)["hits"] == [] for g in glosses)


def _evidence(values):
    return {"evidence": {"values": values, "flags": [], "error": None}}


def test_zscores_use_the_speaker_then_the_corpus_baseline():
    rows = []
    for i in range(4):  # speaker a: 4 utterances, enough with a minimum of 3
        rows.append({"id": f"a{i}", "speaker": "a", "gender": "f", "dataset": "d",
                     **_evidence({"f0_mean_st": 30.0 + i})})
    rows.append({"id": "b0", "speaker": "b", "gender": "f", "dataset": "d",
                 **_evidence({"f0_mean_st": 40.0})})
    rows.append({"id": "c0", "speaker": "c", "gender": None, "dataset": "d",
                 **_evidence({"f0_mean_st": 20.0})})
    kinds = add_zscores(rows, min_speaker_utterances=3)
    assert kinds == {"speaker": 4, "corpus_gender": 1, "corpus": 1}
    z = [r["evidence"]["z"]["f0_mean_st"] for r in rows]
    sd = np.std([30, 31, 32, 33], ddof=1)
    assert z[3] == pytest.approx((33 - 31.5) / sd, abs=1e-3)
    female = [30, 31, 32, 33, 40]
    assert z[4] == pytest.approx((40 - np.mean(female)) / np.std(female, ddof=1), abs=1e-3)
    assert rows[4]["evidence"]["baseline"] == {"kind": "corpus_gender", "n": 5, "group": "f"}
    assert rows[5]["evidence"]["baseline"]["kind"] == "corpus"
    assert rows[0]["evidence"]["z"]["loudness"] is None  # never measured


def test_a_clip_measured_on_its_own_is_scored_against_the_corpus(tmp_path):
    """An uploaded clip (no speaker, no gender) gets the reference corpus of its dataset as
    baseline, itself included; the reference rows are left as they were."""
    reference = [{"id": f"r{i}", "speaker": "a" if i < 3 else "b", "gender": "f", "dataset": "d",
                  **_evidence({"f0_mean_st": 30.0 + i, "loudness": 1.0})} for i in range(6)]
    reference.append({"id": "other", "speaker": "x", "dataset": "e", **_evidence({"f0_mean_st": 90.0})})
    before = json.dumps(reference)
    clip = {"id": "upload", "dataset": "d", **_evidence({"f0_mean_st": 40.0, "loudness": 2.0})}
    stats = measure_mod.zscores_against(clip, reference, min_speaker_utterances=3)
    pool = [30, 31, 32, 33, 34, 35, 40]
    assert stats["f0_mean_st"] == pytest.approx((np.mean(pool), np.std(pool, ddof=1)))
    assert clip["evidence"]["z"]["f0_mean_st"] == pytest.approx((40 - np.mean(pool)) / np.std(pool, ddof=1),
                                                                abs=1e-3)
    assert clip["evidence"]["baseline"] == {"kind": "corpus", "n": 7}
    assert clip["evidence"]["z"]["loudness"] == pytest.approx((2 - 8 / 7) / np.std([1] * 6 + [2], ddof=1), abs=1e-3)
    assert json.dumps(reference) == before
    alone = {"id": "upload", "dataset": "d", **_evidence({"f0_mean_st": 40.0})}
    assert measure_mod.zscores_against(alone, []) == {}
    assert alone["evidence"]["baseline"]["n"] == 1 and alone["evidence"]["z"]["f0_mean_st"] is None


def _manifest(tmp_path, specs):
    rows = []
    for i, (name, kw, transcript) in enumerate(specs):
        path = write_wav(tmp_path / f"{name}.wav", speech(**kw) if kw is not None else
                         np.zeros(SR, dtype=np.float32))
        rows.append({"id": name, "audio": path.name, "speaker": "s1", "dataset": "synth",
                     "transcript": transcript, "emotion": "neutral"})
    path = tmp_path / "manifest.jsonl"
    write_manifest(rows, path)
    return path


SPECS = [("low1", {"f0": 110}, "I am not happy at all."),
         ("low2", {"f0": 120, "amp": 0.1}, None),
         ("mid", {"f0": 150, "n_syll": 6}, "Fine."),
         ("high1", {"f0": 220, "amp": 0.5}, "I love it, this is wonderful!"),
         ("high2", {"f0": 240, "syl": 0.1, "gap": 0.05}, "Get out."),
         ("silent", None, "...")]


def test_measure_manifest_scores_caches_and_reports(tmp_path, monkeypatch):
    path = _manifest(tmp_path, SPECS)
    rows = read_manifest(path, resolve_audio=False)
    rows[1]["audio"] = "missing.wav"  # one bad row: reported, the others are measured
    out, summary = measure_manifest(rows, base_dir=tmp_path, min_speaker_utterances=3)
    assert summary["measured"] == 5 and summary["failed"] == 1 and summary["silent"] == 1
    assert "missing.wav" in summary["errors"][0]["error"]
    ev = {r["id"]: r["evidence"] for r in out}
    assert ev["low2"]["error"] and ev["low2"]["values"] is None
    assert ev["low1"]["z"]["f0_mean_st"] < -0.5 < 0.5 < ev["high1"]["z"]["f0_mean_st"]
    assert ev["silent"]["values"]["f0_mean_hz"] is None and "silent" in ev["silent"]["flags"]
    assert ev["silent"]["z"]["f0_mean_st"] is None
    assert ev["low1"]["lexical"]["hits"][0]["phrase"] == "not happy"
    assert ev["high1"]["lexical"]["categories"] == {"joy": 2}
    assert ev["low1"]["baseline"]["kind"] == "speaker"
    assert ev["high1"]["version"] == EXTRACTOR_VERSION
    json.dumps(out)  # plain JSON types only

    # A re-run measures nothing already measured, re-reads transcripts, retries the failure.
    calls = []
    real = measure_mod.measure_acoustics
    monkeypatch.setattr(measure_mod, "measure_acoustics",
                        lambda w, sr: calls.append(1) or real(w, sr))
    out[0]["transcript"] = None
    again, summary = measure_manifest(out, base_dir=tmp_path, min_speaker_utterances=3)
    assert summary["cached"] == 5 and summary["failed"] == 1 and calls == []
    assert "no_transcript" in again[0]["evidence"]["flags"] and again[0]["evidence"]["lexical"] is None
    assert again[3]["evidence"]["values"] == out[3]["evidence"]["values"]
    _, summary = measure_manifest(out, base_dir=tmp_path, force=True, min_speaker_utterances=3)
    assert summary["measured"] == 5 and len(calls) == 5
    out[3]["evidence"]["version"] = "an older extractor"
    _, summary = measure_manifest(out, base_dir=tmp_path, min_speaker_utterances=3)
    assert summary["measured"] == 1


def test_a_replaced_or_deleted_clip_is_not_taken_from_the_cache(tmp_path):
    path = _manifest(tmp_path, SPECS[:3])
    out, _ = measure_manifest(read_manifest(path, resolve_audio=False), base_dir=tmp_path,
                              min_speaker_utterances=2)
    write_wav(tmp_path / "low1.wav", speech(f0=240, n_syll=5))  # same name, another voice
    (tmp_path / "mid.wav").unlink()
    again, s = measure_manifest(out, base_dir=tmp_path, min_speaker_utterances=2)
    assert (s["cached"], s["measured"], s["failed"]) == (1, 1, 1)
    ev = {r["id"]: r["evidence"] for r in again}
    assert ev["low1"]["values"]["f0_mean_hz"] == pytest.approx(240, rel=0.05)
    assert "mid.wav" in ev["mid"]["error"]


def test_cli_writes_evidence_and_reruns_from_cache(tmp_path, capsys):
    path = _manifest(tmp_path, SPECS[:3])
    out = tmp_path / "sub" / "with_evidence.jsonl"
    assert main(["evidence", "--manifest", str(path), "--out", str(out),
                 "--min-speaker-utterances", "2"]) == 0
    printed = capsys.readouterr()
    assert "measured 3, cached 0, failed 0" in printed.out
    # the progress bar goes to stderr even when it is not a terminal (a log, a pipe)
    assert "evidence" in printed.err and "3/3" in printed.err and "3/3" not in printed.out
    rows = read_manifest(out)  # relative audio paths were rebased for the new folder
    assert all(r["evidence"]["values"]["f0_mean_hz"] for r in rows)
    assert main(["evidence", "--manifest", str(out)]) == 0
    assert "measured 0, cached 3" in capsys.readouterr().out
    assert main(["evidence", "--manifest", str(tmp_path / "nope.jsonl")]) == 2
    assert "no such manifest" in capsys.readouterr().err
    assert not (tmp_path / "nope.jsonl.lock").exists()  # a mistyped path leaves nothing behind
    assert main(["evidence", "--manifest", str(out), "--lexicon", str(tmp_path / "x.tsv")]) == 2


def test_two_stages_on_one_manifest_do_not_overwrite_each_other(tmp_path, monkeypatch, capsys):
    path = _manifest(tmp_path, SPECS[:3])
    assert main(["evidence", "--manifest", str(path), "--min-speaker-utterances", "2"]) == 0
    started, release, codes = threading.Event(), threading.Event(), []
    real = evidence_cli.measure_manifest

    def slow(*args, **kwargs):  # an `evidence --force` that is still measuring
        started.set()
        release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(evidence_cli, "measure_manifest", slow)
    evidence = threading.Thread(target=lambda: codes.append(main(
        ["evidence", "--manifest", str(path), "--force", "--min-speaker-utterances", "2"])))
    evidence.start()
    assert started.wait(10)
    try:
        code = main(["rationales", "--manifest", str(path)])
    finally:
        release.set()
        evidence.join(30)
    err = capsys.readouterr().err
    assert codes == [0]
    lost = code == 0 and not any(r["rationale"] for r in read_manifest(path))
    assert not lost, "rationales exited 0, then evidence wrote the manifest it had read over them"
    assert code == 2 and f"{path}: `emoreason evidence` (pid {os.getpid()}) is changing" in err
    assert main(["rationales", "--manifest", str(path)]) == 0  # once evidence is done
    assert all(r["rationale"]["verdict"] == "pass" for r in read_manifest(path))
