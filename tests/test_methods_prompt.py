"""Prompt options: transcript as a second modality, rationale order, two-step VA with an
oracle; left-padded prompts score and generate like single clips."""

import json
import re

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from reasoning.audio import duration
from reasoning.training.config import load_recipe
from reasoning.tasks.collate import AudioCache, Collator
from reasoning.tasks.prompts import PromptBuilder, va_text
from reasoning.errors import RecipeError, UserError
from reasoning.evaluation.evaluate import MODEL_NAME, ORACLE_NAME, evaluate_rows
from reasoning.explain import Explainer, predict_rows, stated_emotion
from reasoning.manifest import read_manifest, write_manifest
from reasoning.rationales.base import RationaleRequest
from reasoning.rationales.template import describe_cues, template_rationale
from reasoning.rationales.verify import verify
from reasoning.training.train import TrainRecipe

from conftest import SAMPLES, TINY, tiny_recipe_tree

LABELS = ["neutral", "happy", "angry", "sad"]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TINY / "tokenizer")


def real(batch: dict, i: int) -> list[int]:
    return batch["input_ids"][i][batch["attention_mask"][i].bool()].tolist()


def test_transcript_changes_the_prompt_and_only_it(tokenizer):
    rows = read_manifest(SAMPLES)[:3]
    assert len({r["transcript"] for r in rows}) == 3
    builder = PromptBuilder(tokenizer, LABELS, 4)
    plain = Collator(builder, AudioCache())
    gold = Collator(builder, AudioCache(), transcript="gold")
    for task in ("emotion", "va", "rationale", "asr"):
        a, b = plain(rows, task), gold(rows, task)
        assert a.keys() == b.keys()
        for key in a:
            if key not in ("input_ids", "attention_mask", "audio_mask"):
                assert a[key] == b[key] if not torch.is_tensor(a[key]) else torch.equal(a[key], b[key]), key
        for i, row in enumerate(rows):
            assert int(b["audio_mask"][i].sum()) == int(a["audio_mask"][i].sum()) == 4
            before, after = tokenizer.decode(real(a, i)), tokenizer.decode(real(b, i))
            if task == "asr":  # the transcript is the ASR target: never in its prompt
                assert after == before
            else:
                assert after != before
                assert after.replace(f'Transcript: "{row["transcript"]}"\n', "", 1) == before
        # per-clip prompts are left-padded: each ends at the last position
        assert bool(b["attention_mask"][:, -1].all())
        lengths = b["attention_mask"].sum(1)
        for i in range(len(rows)):
            assert not b["attention_mask"][i, : b["attention_mask"].shape[1] - lengths[i]].any()


def test_rationale_order_changes_the_target(tokenizer):
    rows = read_manifest(SAMPLES)[:2]
    builder = PromptBuilder(tokenizer, LABELS, 4)
    first = Collator(builder, AudioCache())(rows, "rationale")
    last = Collator(builder, AudioCache(), rationale_order="rationale_then_label")(rows, "rationale")
    assert torch.equal(first["input_ids"], last["input_ids"])
    for i, row in enumerate(rows):
        text = lambda b: tokenizer.decode(b["target_ids"][i][b["target_mask"][i].bool()],  # noqa: E731
                                          skip_special_tokens=True).strip()
        assert text(first) == row["rationale"]["text"]  # "neutral: even pitch, ..."
        body = row["rationale"]["text"].split(":", 1)[1].strip()
        assert text(last) == f"{body}, so: {row['emotion']}"
        assert stated_emotion(text(first), LABELS) == stated_emotion(text(last), LABELS) == row["emotion"]


def test_a_recipe_instruction_replaces_the_default_in_every_prompt_builder(tmp_path, tokenizer):
    """`prompt.instructions` shortens a task's instruction (every prompt token costs a CPU
    step); the other tasks keep theirs, and training and explain build the same prompts."""
    recipe = load_recipe(tree=tiny_recipe_tree(tmp_path), overrides=[
        "data.tasks={emotion: 1.0, rationale: 1.0}", "prompt.instructions={emotion: 'Emotion of {labels}?'}"])
    builder = PromptBuilder.for_recipe(tokenizer, recipe, 4)
    default = PromptBuilder(tokenizer, recipe.data.labels, 4)
    emotion = tokenizer.decode(builder.prompt("emotion")[0])
    assert f"Emotion of {', '.join(recipe.data.labels)}?" in emotion
    assert "Which emotion" not in emotion
    assert len(builder.prompt("emotion")[0]) < len(default.prompt("emotion")[0])
    assert builder.prompt("rationale") == default.prompt("rationale")


@pytest.mark.parametrize("override, message", [
    ("prompt.instructions={emotions: 'Emotion?'}", r"prompt.instructions: 'emotions' is not a task"),
    ("prompt.instructions={emotion: ''}", r"prompt.instructions.emotion must be a non-empty text"),
    ("prompt.instructions={emotion: 'One of {label}?'}",
     r"prompt.instructions.emotion: .*\{label\}.*only \{labels\}"),
    ("prompt.instructions={emotion: 'Why?', rationale: 'Why?'}",
     r"prompt.instructions: emotion and rationale would have the same instruction"),
    ("prompt.transcript=subtitles", "prompt.transcript"),
    ("prompt.rationale_order=random", "prompt.rationale_order"),
    ("prompt.transcript=asr", r"prompt.transcript is `asr`.*add asr to data.tasks"),
    ("prompt.two_step=true", r"prompt.two_step.*add va to data.tasks"),
    ("prompt.evidence=words", r"prompt.evidence: 'words' is not one of none, measured"),
])
def test_prompt_options_are_checked_before_any_model(tmp_path, override, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(tree=tiny_recipe_tree(tmp_path), overrides=["data.tasks={emotion: 1.0, rationale: 1.0}", override])


def _evidence(z: dict, kind: str = "speaker", flags: tuple = ()) -> dict:
    return {"z": z, "baseline": {"kind": kind, "n": 10}, "flags": list(flags), "error": None}


def test_measured_cues_are_written_as_the_template_words():
    ev = _evidence({"f0_range_st": 1.9, "loudness": -2.0, "jitter_local": 0.6, "shimmer_local": -0.3,
                    "syllable_rate": 0.3, "f0_mean_st": None, "hnr_db": -0.7})
    # CUES order; jitter and shimmer are read as roughness (the larger z); low HNR is breathiness
    assert describe_cues(ev) == ("Against this speaker: a very wide pitch range, a breathy voice, a rough voice, "
                                 "a very quiet voice.")
    assert describe_cues(_evidence({"loudness": 0.2, "f0_mean_st": -0.1}, kind="corpus_gender")) == \
        "Against the corpus: usual pitch, usual loudness."
    assert describe_cues(_evidence({"loudness": 0.2}, flags=("unvoiced",))) == \
        "Against this speaker: no voiced speech to measure a pitch from, usual loudness."
    for missing in (None, {"error": "unreadable", "z": {"loudness": 2.0}}, _evidence({"loudness": None})):
        assert describe_cues(missing) == "Cues: not measured."


def test_every_cue_a_template_rationale_cites_is_in_the_cue_line():
    """The rationale task can copy its cues from the prompt: each claim of a template
    rationale is one that the cue line makes too, as the verifier reads them."""
    rng = np.random.default_rng(0)
    features = ("f0_mean_st", "f0_range_st", "f0_sd_st", "loudness", "syllable_rate", "pause_ratio",
                "jitter_local", "shimmer_local", "hnr_db", "spectral_slope")

    def claims(text: str, ev: dict, label: str) -> set:
        return {(c["cue"], c["direction"], c["strength"]) for c in verify(text, ev, label, None).claims
                if c["kind"] == "cue"}

    for i in range(300):
        flags = ("unvoiced",) if i % 10 == 0 else ()
        ev = _evidence({f: float(rng.normal(0, 1.2)) if rng.random() > 0.1 else None for f in features},
                       flags=flags)
        label = ["anger", "sadness", "neutral", "happiness"][i % 4]
        line = describe_cues(ev)
        text = template_rationale(RationaleRequest(str(i), label, None, ev))
        cited = claims(text, ev, label)
        assert cited and cited <= claims(f"{label}: {line.split(': ', 1)[1]}", ev, label), (text, line)
        assert verify(f"{label}: {line.split(': ', 1)[1]}", ev, label, None).passed, line


def test_measured_cues_go_before_the_audio_of_every_prompt_but_asr(tokenizer):
    rows = [{**r, "evidence": _evidence({"loudness": 1.8 - i, "syllable_rate": -0.6})}
            for i, r in enumerate(read_manifest(SAMPLES)[:3])]
    builder = PromptBuilder(tokenizer, LABELS, 4)
    plain, cued = Collator(builder, AudioCache()), Collator(builder, AudioCache(), evidence="measured")
    for task in ("emotion", "va", "rationale", "asr"):
        a, b = plain(rows, task), cued(rows, task)
        for i, row in enumerate(rows):
            before = tokenizer.decode(real(a, i))
            if task == "asr":
                assert tokenizer.decode(real(b, i)) == before
                continue
            line = describe_cues(row["evidence"])
            ids, audio = b["input_ids"][i], b["audio_mask"][i]
            head = tokenizer.decode(ids[b["attention_mask"][i].bool() & (torch.cumsum(audio, 0) == 0)])
            assert head.endswith(f"{line}\n"), head  # right before the audio positions
            assert tokenizer.decode(real(b, i)).replace(f"{line}\n", "", 1) == before
    assert describe_cues(rows[0]["evidence"]) == "Against this speaker: a very loud voice, slow speech."


@pytest.fixture(scope="module")
def two_step(tmp_path_factory):
    """A tiny model trained two steps with gold transcripts, two-step VA, the label after the
    rationale and augmentation: (trainer, explainer, rows)."""
    tmp = tmp_path_factory.mktemp("two_step")
    rows = [r for r in read_manifest(SAMPLES) if r["speaker"] in ("spk1", "spk2")][::3]
    manifest = write_manifest(rows, tmp / "m.jsonl")
    tree = tiny_recipe_tree(tmp / "run", manifest, train={"max_steps": 2},
                            prompt={"transcript": "gold", "two_step": True,
                                    "rationale_order": "rationale_then_label"},
                            augment={"p": 1.0, "gain_db": [-3.0, 3.0]})
    tree["data"].update(train_split=[], tasks={"emotion": 1.0, "va": 1.0, "rationale": 1.0})
    trainer = TrainRecipe(load_recipe(tree=tree))
    trainer.setup()
    trainer.train()
    return trainer, Explainer(trainer.output_dir, batch_size=8), read_manifest(manifest)


def test_two_step_training_uses_the_gold_va_and_transcript(two_step, tokenizer):
    trainer, explainer, rows = two_step
    idx = [0, 1, 2]
    batches = {t: trainer._batch(t, idx, epoch=0) for t in ("emotion", "va", "rationale")}
    for i in idx:
        row = trainer.rows[i]
        gold_va = va_text(row["valence"], row["arousal"])
        for task, batch in batches.items():
            text = tokenizer.decode(real(batch, i))
            assert f'Transcript: "{row["transcript"]}"' in text
            assert (gold_va in text) == (task != "va"), (task, text)  # never in the prompt of the va task
    assert trainer.collate.augment is not None and explainer.collate.augment is None


def test_evaluation_uses_the_predicted_va_except_in_oracle_mode(two_step, tokenizer, monkeypatch):
    _, explainer, rows = two_step
    rows = sorted(rows[:3], key=duration)  # the order of explain's batches, which the spy sees
    m = explainer.model
    predicted = torch.tensor([[0.5, -0.7]] * len(rows))
    monkeypatch.setattr(m, "predict_va", lambda batch, prompt_embeds=None: predicted)
    seen = []
    score = m.score_labels

    def spy(batch, prompt_embeds=None, with_va=False):
        seen.append([tokenizer.decode(real(batch, i)) for i in range(len(rows))])
        return score(batch, prompt_embeds, with_va)

    monkeypatch.setattr(m, "score_labels", spy)
    preds = explainer.predict(rows, rationale=False, progress=False, oracle=True)
    assert len(seen) == 2  # the predicted-VA pass, then the oracle pass
    for i, row in enumerate(rows):
        assert va_text(0.5, -0.7) in seen[0][i] and va_text(row["valence"], row["arousal"]) not in seen[0][i]
        assert va_text(row["valence"], row["arousal"]) in seen[1][i] and va_text(0.5, -0.7) not in seen[1][i]
        assert preds[i]["valence"] == 0.5 and set(preds[i]["oracle_va"]["probabilities"]) == set(LABELS)
        assert preds[i]["transcript"] == row["transcript"]
    seen.clear()
    explainer.predict(rows, rationale=False, progress=False)
    assert len(seen) == 1, "no oracle pass unless asked"

    no_text = [{**r, "transcript": None} for r in rows]
    with pytest.raises(UserError, match=r"prompt.transcript is `gold`.*no transcript"):
        explainer.predict(no_text, rationale=False, progress=False)


def test_eval_reports_the_oracle_beside_the_model_and_the_prompt_modes(two_step, tmp_path):
    trainer, _, rows = two_step
    result = evaluate_rows(rows, "loso", tmp_path / "eval", baselines=["majority"], fold="speaker-spk1",
                           predictor=lambda fold, test: predict_rows(trainer.output_dir, test, rationale=False))
    assert list(result["systems"]) == [MODEL_NAME, ORACLE_NAME, "majority"]
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["prompt"][MODEL_NAME] == {"transcript": "gold", "evidence": "none", "va_in_prompt": "predicted",
                                           "rationale_order": "rationale_then_label"}
    assert saved["prompt"][ORACLE_NAME]["va_in_prompt"] == "gold"
    assert "Prompts: model: transcript gold" in (tmp_path / "eval" / "report.md").read_text()


def test_gold_transcripts_missing_from_the_training_manifest_name_the_key(two_step, tmp_path):
    trainer, _, rows = two_step
    stripped = write_manifest([{**r, "transcript": None} for r in rows], tmp_path / "no_text.jsonl")
    trainer.recipe.data.train_manifest = str(stripped)
    with pytest.raises(RecipeError, match=r"prompt.transcript is `gold`.*no transcript.*prompt.transcript: none"):
        trainer._setup_data()


def test_asr_mode_transcribes_first_and_left_padded_prompts_match_single_clips(two_step, tokenizer, monkeypatch):
    _, explainer, rows = two_step
    rows = rows[:3]
    m = explainer.model
    monkeypatch.setattr(explainer.prompt, "transcript", "asr")
    monkeypatch.setattr(explainer.prompt, "asr_max_tokens", 6)
    monkeypatch.setattr(explainer, "max_new_tokens", 6)
    calls = []
    generate = m.generate

    def spy(batch, **kw):
        new = generate(batch, **kw)
        calls.append(([tokenizer.decode(real(batch, i)) for i in range(len(batch["input_ids"]))], new))
        return new

    monkeypatch.setattr(m, "generate", spy)
    preds = explainer.predict(rows, rationale=True, progress=False)
    asr_prompts, asr_ids = calls[0]
    assert all("Transcribe the speech." in p and "Transcript:" not in p for p in asr_prompts)
    hyps = [tokenizer.decode(t, skip_special_tokens=True).strip() for t in asr_ids]
    rationale_prompts, _ = calls[1]
    for i, p in enumerate(preds):
        assert p["transcript"] == hyps[i]
        assert f'Transcript: "{hyps[i]}"' in rationale_prompts[i]

    # The prompts now differ in length; each clip scored, read and generated in a left-padded
    # batch gets what it gets alone (from the same audio embeddings).
    collate, b = explainer.collate, explainer.builder
    ctx = [{"transcript": t, "va": (0.1 * i, -0.2)} for i, t in enumerate(["a", "a much longer transcript", "b c"])]
    batch = collate(rows, "emotion", contexts=ctx)
    assert len(set(batch["attention_mask"].sum(1).tolist())) == 3
    with torch.no_grad():
        audio = m.encode_audio(batch["waves"], batch["wave_lengths"])
        logp = m.score_labels(batch, m.embed_prompt(batch, audio))
        va = m.va_head(m.pooled_audio_state(m._run(m.embed_prompt(batch, audio), batch["attention_mask"],
                                                   output_hidden_states=True).hidden_states, batch["audio_mask"]))
        gen = generate(batch, eos_token_id=b.turn_end_ids, pad_token_id=b.pad_id, max_new_tokens=4,
                       prompt_embeds=m.embed_prompt(batch, audio))
        for i in range(len(rows)):
            one = collate(rows[i:i + 1], "emotion", contexts=ctx[i:i + 1])
            emb = m.embed_prompt(one, audio[i:i + 1])
            torch.testing.assert_close(m.score_labels(one, emb)[0], logp[i], atol=1e-4, rtol=1e-4)
            alone = m.va_head(m.pooled_audio_state(m._run(emb, one["attention_mask"],
                                                          output_hidden_states=True).hidden_states, one["audio_mask"]))
            torch.testing.assert_close(alone[0], va[i], atol=1e-4, rtol=1e-4)
            g1 = generate(one, eos_token_id=b.turn_end_ids, pad_token_id=b.pad_id, max_new_tokens=4,
                          prompt_embeds=emb)[0].tolist()
            assert gen[i].tolist()[: len(g1)] == g1
    assert np.isfinite(logp.numpy()).all()


@pytest.fixture(scope="module")
def cued(tmp_path_factory):
    """A tiny model trained two steps with the measured cues in its prompts: (explainer, rows)."""
    from reasoning.evidence.measure import measure_manifest

    tmp = tmp_path_factory.mktemp("cued")
    rows = [{**r, "audio": str(SAMPLES.parent / r["audio"])} for r in read_manifest(SAMPLES)
            if r["speaker"] == "spk1"][:6]
    rows, _ = measure_manifest(rows)
    manifest = write_manifest(rows, tmp / "m.jsonl")
    tree = tiny_recipe_tree(tmp / "run", manifest, train={"max_steps": 2}, prompt={"evidence": "measured"})
    tree["data"].update(train_split=[], tasks={"emotion": 1.0, "rationale": 1.0})
    trainer = TrainRecipe(load_recipe(tree=tree))
    trainer.setup()
    trainer.train()
    return Explainer(trainer.output_dir, batch_size=8), read_manifest(manifest)


def test_prediction_prompts_carry_each_clips_measured_cues(cued, tokenizer, monkeypatch):
    explainer, rows = cued
    rows = sorted(rows, key=duration)  # the order of explain's batches, which the spy sees
    seen = []
    score = explainer.model.score_labels

    def spy(batch, prompt_embeds=None, with_va=False):
        seen.extend(tokenizer.decode(real(batch, i)) for i in range(len(batch["input_ids"])))
        return score(batch, prompt_embeds, with_va)

    monkeypatch.setattr(explainer.model, "score_labels", spy)
    preds = explainer.predict(rows, rationale=False, progress=False)
    lines = [describe_cues(r["evidence"]) for r in rows]
    assert len(set(lines)) > 1  # the clips differ, so the test can tell them apart
    for text, line, row, pred in zip(seen, lines, rows, preds):
        assert f"{line}\n" in text and pred["id"] == row["id"]
    assert explainer.prompt_meta()["evidence"] == "measured"


def test_training_with_cues_needs_measured_evidence(tmp_path):
    manifest = write_manifest(read_manifest(SAMPLES)[:4], tmp_path / "unmeasured.jsonl")
    tree = tiny_recipe_tree(tmp_path / "run", manifest, prompt={"evidence": "measured"})
    tree["data"].update(train_split=[])
    with pytest.raises(RecipeError, match=r"prompt.evidence is `measured`, but 4 of 4 training rows .*"
                                          r"unmeasured.jsonl have no measured evidence .*emoreason evidence"):
        TrainRecipe(load_recipe(tree=tree)).setup()


def test_explain_measures_bare_clips_for_a_model_with_cues(cued, monkeypatch, capsys):
    import argparse

    from reasoning import explain

    explainer, rows = cued
    given = []
    predict = explain.Explainer.predict
    monkeypatch.setattr(explain.Explainer, "predict", lambda self, rs, **kw: given.extend(rs) or predict(self, rs, **kw))
    parser = argparse.ArgumentParser()
    explain.add_arguments(parser)
    clips = [r["audio"] for r in rows[:3]]
    assert explain.run(parser.parse_args(["--checkpoint", str(explainer.checkpoint), "--json", *clips])) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3
    # each clip measured on its own: the manifest's acoustic values (a bare clip has no
    # transcript, so no word rate), z-scores against the six training clips and itself
    assert [g["evidence"]["baseline"] for g in given] == [{"kind": "corpus", "n": 7}] * 3
    by_id = {r["id"]: r for r in rows}
    for g in given:
        values = {**by_id[g["id"]]["evidence"]["values"], "word_rate": None}
        assert g["evidence"]["values"] == values
        assert describe_cues(g["evidence"]).startswith("Against the corpus: ")


def test_explain_without_a_training_corpus_to_measure_against_says_why(cued, monkeypatch):
    from reasoning import explain, export

    explainer, rows = cued
    why = "the training manifest m.jsonl has no measured evidence (`emoreason evidence --manifest m.jsonl` measures it)"
    monkeypatch.setattr(export, "training_evidence", lambda ckpt, recipe: ([], why))
    with pytest.raises(UserError, match=r"prompts carry measured cues \(prompt.evidence\).*" + re.escape(why)):
        explain.measure_clips(explainer, rows[:1])
