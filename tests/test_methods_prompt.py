"""Prompt options: transcript as a second modality, rationale order, two-step VA with an
oracle; left-padded prompts score and generate like single clips."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from reasoning.audio import duration
from reasoning.config import load_recipe
from reasoning.data import AudioCache, Collator, PromptBuilder, va_text
from reasoning.errors import RecipeError, UserError
from reasoning.evaluate import MODEL_NAME, ORACLE_NAME, evaluate_rows
from reasoning.explain import Explainer, predict_rows, stated_emotion
from reasoning.manifest import read_manifest, write_manifest
from reasoning.train import TrainRecipe

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


@pytest.mark.parametrize("override, message", [
    ("prompt.transcript=subtitles", "prompt.transcript"),
    ("prompt.rationale_order=random", "prompt.rationale_order"),
    ("prompt.transcript=asr", r"prompt.transcript is `asr`.*add asr to data.tasks"),
    ("prompt.two_step=true", r"prompt.two_step.*add va to data.tasks"),
])
def test_prompt_options_are_checked_before_any_model(tmp_path, override, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(tree=tiny_recipe_tree(tmp_path), overrides=["data.tasks={emotion: 1.0, rationale: 1.0}", override])


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
    assert saved["prompt"][MODEL_NAME] == {"transcript": "gold", "va_in_prompt": "predicted",
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
