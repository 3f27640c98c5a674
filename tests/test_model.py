import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reasoning.model.builders import build_model, materialize
from reasoning.training.config import load_recipe
from reasoning.tasks.collate import AudioCache, Collator
from reasoning.tasks.prompts import PromptBuilder
from reasoning.manifest import read_manifest
from reasoning.model.dual_encoder import CCC_PREFIX, ccc, pool_frames

from conftest import ROOT, SAMPLES, launch_two_processes, tiny_recipe_tree


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    recipe = materialize(load_recipe(tree=tiny_recipe_tree(out)), out)
    torch.manual_seed(0)
    model, tokenizer = build_model(recipe)
    model.eval()
    rows = read_manifest(SAMPLES)[:4]
    builder = PromptBuilder(tokenizer, recipe.data.labels, model.num_audio_tokens)
    return model, tokenizer, recipe, Collator(builder, AudioCache()), rows


def test_pool_frames_averages_real_frames_only():
    x = torch.randn(2, 10, 3)
    lengths = torch.tensor([10, 6])
    pooled = pool_frames(x, lengths, 3)
    assert pooled.shape == (2, 3, 3)
    # clip 1 has 6 real frames: tokens average frames [0,2), [2,4), [4,6)
    for i, (a, b) in enumerate([(0, 2), (2, 4), (4, 6)]):
        torch.testing.assert_close(pooled[1, i], x[1, a:b].mean(0))
    # padding after a clip's end never changes its tokens
    y = x.clone()
    y[1, 6:] = 1e6
    torch.testing.assert_close(pool_frames(y, lengths, 3)[1], pooled[1])


def test_ccc_matches_its_formula():
    rng = np.random.default_rng(0)
    p, t = rng.normal(size=(50, 2)), rng.normal(size=(50, 2)) + 0.3
    expected = [2 * np.cov(p[:, d], t[:, d], bias=True)[0, 1]
                / (p[:, d].var() + t[:, d].var() + (p[:, d].mean() - t[:, d].mean()) ** 2) for d in range(2)]
    np.testing.assert_allclose(ccc(torch.tensor(p), torch.tensor(t)).numpy(), expected, rtol=1e-6)
    assert float(ccc(torch.tensor(p), torch.tensor(p))[0]) == pytest.approx(1.0)


def test_whisper_encodes_a_long_clip_in_30_s_windows_and_keeps_every_frame(tiny):
    """Whisper's positions end at 30 s: a 70 s clip is encoded as 30 + 30 + 10 s windows
    whose frames are joined, the same frames as each window alone, in any batch."""
    model, *_ = tiny
    enc = model.speech_encoder
    sr = 16000
    long = torch.randn(70 * sr) * 0.1
    short = torch.randn(5 * sr) * 0.1
    with torch.no_grad():
        feats, lengths = enc(long[None], torch.tensor([len(long)]))
        windows = [enc(long[None, a * sr:b * sr], torch.tensor([(b - a) * sr]))[0][0] for a, b in
                   ((0, 30), (30, 60), (60, 70))]
        both, both_len = enc(torch.nn.utils.rnn.pad_sequence([short, long], batch_first=True),
                             torch.tensor([len(short), len(long)]))
        alone, _ = enc(short[None], torch.tensor([len(short)]))
    assert int(lengths[0]) == 3500 and feats.shape[1] == 3500
    torch.testing.assert_close(feats[0], torch.cat([windows[0][:1500], windows[1][:1500], windows[2][:500]]))
    assert both_len.tolist() == [250, 3500]
    torch.testing.assert_close(both[1], feats[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both[0, :250], alone[0, :250], atol=1e-5, rtol=1e-5)


def test_label_probabilities_sum_to_one_and_match_full_scoring(tiny):
    model, _, recipe, collate, rows = tiny
    batch = collate(rows, "emotion")
    with torch.no_grad():
        logp = model.score_labels(batch)
    assert logp.shape == (len(rows), len(recipe.data.labels))
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(len(rows)))

    # The packed pass equals scoring each full sequence "prompt + label" on its own.
    with torch.no_grad():
        prompt = model.embed_prompt(batch)
        brute = torch.zeros_like(logp)
        for j in range(len(recipe.data.labels)):
            ids = batch["label_ids"][j][batch["label_mask"][j].bool()]
            emb = torch.cat([prompt, model.llm.get_input_embeddings()(ids).expand(len(rows), -1, -1)], 1)
            logits = model.llm(inputs_embeds=emb).logits.float()
            lp = torch.log_softmax(logits[:, prompt.shape[1] - 1:-1], -1)
            brute[:, j] = lp.gather(-1, ids.expand(len(rows), -1)[..., None]).squeeze(-1).sum(-1)
    torch.testing.assert_close(logp, torch.log_softmax(brute, -1), atol=1e-4, rtol=1e-4)


def test_va_read_from_the_label_pass_equals_the_va_prompt(tiny):
    # Explain reads VA from the label prompt's pass: the audio positions precede every
    # task's instruction, so causally they are the same as in the VA prompt.
    model, _, _, collate, rows = tiny
    with torch.no_grad():
        logp, va = model.score_labels(collate(rows, "emotion"), with_va=True)
        expected = model.predict_va(collate(rows, "va"))
    torch.testing.assert_close(logp, model.score_labels(collate(rows, "emotion")))
    torch.testing.assert_close(va, expected, atol=1e-5, rtol=1e-4)
    assert va.std(0).min() > 1e-4  # the clips differ, so a constant head would not pass


def test_speech_encoder_trims_and_masks_padding(tiny):
    model, *_ = tiny
    enc = model.speech_encoder
    a = torch.randn(16000) * 0.1
    batch = lambda other: (torch.nn.utils.rnn.pad_sequence([a, other], batch_first=True),  # noqa: E731
                           torch.tensor([len(a), len(other)]))
    with torch.no_grad():
        alone, len1 = enc(a[None], torch.tensor([len(a)]))
        x3, len3 = enc(*batch(torch.randn(48000) * 0.1))
        x4, len4 = enc(*batch(torch.randn(64000) * 0.1))
    # 10 ms mel frames, stride 2, plus half an STFT window of zeros rounded up: not 1500
    assert x3.shape[1] == 151 and x4.shape[1] == 201
    assert int(len1[0]) == int(len3[0]) == int(len4[0]) == 50
    # a clip's frames are the same alone and beside any longer clip
    torch.testing.assert_close(x3[0, :50], alone[0, :50], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(x4[0, :50], alone[0, :50], atol=1e-5, rtol=1e-5)

    enc.mel_policy = "pad30"
    try:
        with torch.no_grad():
            x30, len30 = enc(*batch(torch.randn(48000) * 0.1))
    finally:
        enc.mel_policy = "trim"
    assert x30.shape[1] == 1500 and int(len30[0]) == 50


def test_paralinguistic_encoders_report_frame_lengths(tiny):
    from reasoning.model.encoders import OpenSmileEncoder

    model, *_ = tiny
    waves = torch.nn.utils.rnn.pad_sequence([torch.randn(16000) * 0.1, torch.randn(8000) * 0.1], batch_first=True)
    lengths = torch.tensor([16000, 8000])
    with torch.no_grad():
        x, n = model.paralinguistic_encoder(waves, lengths)
    assert x.shape[0] == 2 and n[0] > n[1] and int(n[0]) == x.shape[1]
    smile = OpenSmileEncoder(hidden_size=16)
    smile.eval()
    with torch.no_grad():
        y, m = smile(waves, lengths)
    assert y.shape == (2, int(m[0]), 16) and 95 <= int(m[0]) <= 100 and int(m[1]) < int(m[0])
    assert not y[1, int(m[1]):].any()  # padding frames stay zero


def test_feature_fusion_and_opensmile_build(tmp_path):
    tree = tiny_recipe_tree(tmp_path)
    tree["model"]["fusion"] = "feature"
    tree["model"]["paralinguistic"] = {"kind": "opensmile", "num_tokens": 16, "hidden_size": 16}
    recipe = materialize(load_recipe(tree=tree), tmp_path)
    model, tokenizer = build_model(recipe)
    assert model.num_audio_tokens == 16
    collate = Collator(PromptBuilder(tokenizer, recipe.data.labels, 16), AudioCache())
    batch = collate(read_manifest(SAMPLES)[:2], "emotion")
    audio = model.encode_audio(batch["waves"], batch["wave_lengths"])
    assert audio.shape == (2, 16, model.llm.get_input_embeddings().weight.shape[1])
    model(batch)["loss"].backward()
    # feature fusion: each audio position mixes both encoders, so both branches learn
    for part in (model.fuse, model.projectors["speech"], model.projectors["paralinguistic"],
                 model.paralinguistic_encoder.net):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())


def test_soft_targets_train_with_gradient_checkpointing(tmp_path):
    """With checkpointing, label scoring trains (soft targets, VA from the same pass) and
    gives the scores of evaluation, without checkpointing."""
    tree = tiny_recipe_tree(tmp_path)
    tree["model"]["llm"]["gradient_checkpointing"] = True
    tree["heads"]["emotion_loss"] = "soft"
    tree["heads"]["va_in_emotion"] = True
    recipe = materialize(load_recipe(tree=tree), tmp_path)
    model, tokenizer = build_model(recipe)
    collate = Collator(PromptBuilder(tokenizer, recipe.data.labels, model.num_audio_tokens), AudioCache())
    rows = read_manifest(SAMPLES)[:3]
    for r in rows:
        r["emotion_votes"] = {r["emotion"]: 2, "neutral": 1}
    batch = collate(rows, "emotion")
    model.train()
    losses = model(batch)
    losses["loss"].backward()
    assert "kl" in losses and torch.isfinite(losses["kl"]) and torch.isfinite(losses["va"])
    assert any(p.grad is not None for n, p in model.named_parameters() if "lora_B" in n)
    assert all(p.grad is not None for p in model.va_head.parameters())
    with torch.no_grad():
        train_scores = model.score_labels(batch)
        model.eval()
        eval_scores = model.score_labels(batch)
    torch.testing.assert_close(train_scores, eval_scores, atol=1e-4, rtol=1e-4)


def test_lm_loss_through_the_kept_logits_equals_the_full_logits(tiny):

    model, _, _, collate, rows = tiny
    batch = collate(rows, "rationale")
    with torch.no_grad():
        prompt = model.embed_prompt(batch)
        loss, _ = model.lm_loss(batch, prompt)
        embeds = torch.cat([prompt, model.llm.get_input_embeddings()(batch["target_ids"])], 1)
        mask = torch.cat([batch["attention_mask"], batch["target_mask"]], 1)
        logits = model._run(embeds, mask).logits[:, prompt.shape[1] - 1:-1]
        labels = batch["target_ids"].masked_fill(~batch["target_mask"].bool(), -100)
        full = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(loss, full)


def test_a_system_message_replaces_the_templates_default(tiny):
    _, tokenizer, recipe, _, _ = tiny
    plain = PromptBuilder(tokenizer, recipe.data.labels, 4)
    short = PromptBuilder(tokenizer, recipe.data.labels, 4, system="Listen.")
    ids, audio = short.prompt("emotion")
    text = tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\nListen.<|im_end|>") and sum(audio) == 4
    assert "system" not in tokenizer.decode(plain.prompt("emotion")[0])


def test_emotion_loss_both_takes_the_lm_loss_from_the_label_scores(tiny):
    """`both` reads the LM loss off the gold label's log-likelihood (one pass); it equals the
    teacher-forced LM loss, and the KL against a one-hot label is the cross-entropy."""
    model, _, _, collate, rows = tiny
    batch = collate(rows, "emotion")
    model.emotion_loss = "both"
    try:
        with torch.no_grad():
            losses = model(batch)
            lm, _ = model.lm_loss(batch, model.embed_prompt(batch))
            logp = model.score_labels(batch)
    finally:
        model.emotion_loss = "lm"
    torch.testing.assert_close(losses["lm"], lm, atol=1e-5, rtol=1e-5)
    gold = batch["label_index"]
    torch.testing.assert_close(losses["kl"], -logp.gather(1, gold[:, None]).mean(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("emotion_loss", ["lm", "both"])
def test_va_in_emotion_batches_is_the_va_batch_loss_from_the_same_pass(tiny, emotion_loss):
    """`heads.va_in_emotion` trains the VA head in emotion batches on the hidden states of
    the pass that scores the label: the same loss as a `va` batch of those clips."""
    model, _, _, collate, rows = tiny
    model.emotion_loss, model.va_in_emotion = emotion_loss, True
    try:
        with torch.no_grad():
            losses = model(collate(rows, "emotion"))
            expected = model(collate(rows, "va"))["va"]
            # a clip without VA targets is left out of the VA loss, and the key stays
            partial = [dict(r) for r in rows]
            partial[0].pop("valence")
            got = model(collate(partial, "emotion"))["va"]
            without = model(collate(rows[1:], "va"))["va"]
            none = model(collate([{k: v for k, v in r.items() if k != "arousal"} for r in rows], "emotion"))
    finally:
        model.emotion_loss, model.va_in_emotion = "lm", False
    torch.testing.assert_close(losses["va"], expected, atol=1e-5, rtol=1e-4)
    weights = {"lm": 1.0, "kl": 1.0, "va": model.va_weight, "gender": model.gender_weight}
    # ccc_<dimension> entries report the CCC of each dimension, and are no part of the total
    assert {k for k in losses if k.startswith(CCC_PREFIX)} == {"ccc_valence", "ccc_arousal"}
    torch.testing.assert_close(losses["loss"], sum(weights[k] * v for k, v in losses.items()
                                                   if k != "loss" and not k.startswith(CCC_PREFIX)))
    torch.testing.assert_close(got, without, atol=1e-5, rtol=1e-4)
    assert float(none["va"]) == 0.0


def test_va_loss_ccc_mse_is_the_sum_of_both(tiny):

    from reasoning.model.dual_encoder import ccc_loss

    model, _, _, collate, rows = tiny
    batch = collate(rows, "va")
    with torch.no_grad():
        pred = model.predict_va(batch)
        model.va_loss = "ccc_mse"
        try:
            got = model(batch)["va"]
        finally:
            model.va_loss = "ccc"
    torch.testing.assert_close(got, ccc_loss(pred, batch["va"]) + F.mse_loss(pred, batch["va"]))



def test_the_va_head_is_pulled_back_when_its_output_leaves_the_target_range(tiny):
    """Fold speaker-10 of the six-fold EmoDB run: a tanh head's arousal went to 0.999 for
    every clip in the first steps (its input to tanh was about 4) and stayed there for 240
    steps, CCC 0.000, since tanh passes back 1e-3 of the gradient there. The head is linear
    while it trains, so the farther off it is the harder the loss pulls; it is clamped to
    [-1, 1] when it predicts."""
    model, _, _, collate, rows = tiny
    batch = collate(rows, "va")
    bias = model.va_head.mlp[-1].bias
    kept, was_training, model.va_loss = bias.detach().clone(), model.training, "ccc_mse"

    def pull(shift: float) -> float:
        with torch.no_grad():
            bias.fill_(shift)
        model.zero_grad()
        model(batch)["va"].backward()
        return float(bias.grad.abs().sum())

    try:
        model.train()
        assert pull(4.0) > pull(0.0)
        with torch.no_grad():
            bias.fill_(4.0)
        model.eval()
        assert float(model.predict_va(batch).max()) == 1.0
    finally:
        model.train(was_training)
        model.va_loss = "ccc"
        with torch.no_grad():
            bias.copy_(kept)
        model.zero_grad()

@pytest.mark.slow
def test_va_loss_over_two_processes_is_the_loss_of_the_whole_batch(tmp_path):
    """CCC is not a mean over clips: each process's few clips must be gathered, or the loss
    (and its gradient) is that of a batch of 3-4 instead of 7."""
    import json

    launch_two_processes([str(ROOT / "tests" / "ddp_ccc.py"), str(tmp_path)], timeout=300)
    for rank in (0, 1):
        got = json.loads((tmp_path / f"ccc{rank}.json").read_text())
        assert got["split"] == pytest.approx(got["full"], rel=1e-6)
        assert got["grad_gap"] < 1e-5


@pytest.mark.parametrize("n_mels", [80, 128])  # whisper-small and before; whisper-large-v3
def test_the_mel_computed_on_the_waves_device_matches_whisper_numpy_mel(tiny, n_mels):
    """The torch mel (``log_mel``, run wherever the batch is) against the feature extractor's
    NumPy spectrogram, on a padded batch of real clips and noise, also under bf16 autocast."""
    from transformers import WhisperFeatureExtractor

    from reasoning.model.encoders import WhisperSpeechEncoder

    model, _, _, collate, rows = tiny
    fe = WhisperFeatureExtractor(feature_size=n_mels)
    enc = WhisperSpeechEncoder(model.speech_encoder.encoder, fe)
    clips = [collate.wave(r) for r in rows[:3]] + [np.random.default_rng(0).normal(0, 0.1, 12345).astype(np.float32)]
    waves = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(c) for c in clips], batch_first=True)
    waves[3, len(clips[3]):] = 1.0  # what lies past a clip's end must not count
    lengths = torch.tensor([len(c) for c in clips])
    feats, frames = enc.mel(waves, lengths)
    target = feats.shape[-1] * fe.hop_length
    assert target % 320 == 0 and target >= int(lengths.max()) + 200
    padded = np.stack([np.pad(c, (0, target - len(c))) for c in clips])
    want = fe._np_extract_fbank_features(padded, "cpu")
    assert feats.dtype == torch.float32 and feats.shape == want.shape == (4, n_mels, target // 160)
    torch.testing.assert_close(feats, torch.from_numpy(want).float(), atol=2e-4, rtol=0)
    assert frames.tolist() == [-(-len(c) // 160) for c in clips]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(enc.mel(waves, lengths)[0], feats)


def test_the_va_pass_reads_hidden_states_without_the_lm_head(tiny):
    """A `va` batch and predict_va read the hidden states alone: the LM head (V logits per
    position) never runs, and the states are those of the full LM's pass."""
    model, _, _, collate, rows = tiny
    batch = collate(rows, "va")
    calls = []
    hook = model.llm.get_output_embeddings().register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            va = model.predict_va(batch)
            loss = model(batch)["va"]
    finally:
        hook.remove()
    assert calls == []
    with torch.no_grad():
        prompt = model.embed_prompt(batch)
        full = model._run(prompt, batch["attention_mask"], output_hidden_states=True).hidden_states
        expected = model.va_head(model.pooled_audio_state(full, batch["audio_mask"]))
    torch.testing.assert_close(va, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(loss, model._va_loss(expected, batch["va"]), atol=1e-6, rtol=1e-5)


def test_the_audio_emotion_head_reads_the_projected_audio_tokens(tmp_path):
    """`heads.audio_emotion_weight`: a linear emotion classifier on the mean of the audio
    tokens the LLM reads, its cross-entropy with the gold label added in emotion batches, so
    the projectors get a direct emotion signal (not only through the LLM)."""
    recipe = materialize(load_recipe(tree=tiny_recipe_tree(tmp_path),
                                     overrides=["heads.audio_emotion_weight=0.5"]), tmp_path)
    torch.manual_seed(0)
    model, tokenizer = build_model(recipe)
    model.train()
    assert model.part_of("audio_emotion_head.weight") == "heads"
    builder = PromptBuilder.for_recipe(tokenizer, recipe, model.num_audio_tokens)
    collate = Collator(builder, AudioCache())
    batch = collate(read_manifest(SAMPLES)[:4], "emotion")
    torch.manual_seed(1)
    losses = model(batch)
    audio = model.encode_audio(batch["waves"], batch["wave_lengths"])
    expected = F.cross_entropy(model.audio_emotion_head(audio.float().mean(1)), batch["label_index"])
    torch.testing.assert_close(losses["audio_emotion"], expected)
    model.audio_emotion_weight = 0.0
    torch.manual_seed(1)
    without = model(batch)
    model.audio_emotion_weight = 0.5
    assert "audio_emotion" not in without
    torch.testing.assert_close(losses["loss"], without["loss"] + 0.5 * expected)
    losses["loss"].backward()
    assert model.audio_emotion_head.weight.grad.abs().sum() > 0
    assert "audio_emotion" not in model(collate(read_manifest(SAMPLES)[:4], "rationale"))
    plain, _ = build_model(materialize(load_recipe(tree=tiny_recipe_tree(tmp_path / "plain")), tmp_path / "plain"))
    assert plain.audio_emotion_head is None


def _packed_case(tiny):
    """An emotion batch whose prompts differ in length (left padding: gold transcripts of
    different lengths) and whose candidates differ in length (right padding), and its prompt
    embeddings."""
    model, tokenizer, _, _, rows = tiny
    labels = ["neutral", "happy", "angry", "sad", "boredom", "disgust"]
    collate = Collator(PromptBuilder(tokenizer, labels, model.num_audio_tokens), AudioCache(), transcript="gold")
    rows = [dict(r) for r in rows]
    rows[1]["transcript"] = "Yes."
    rows[2]["transcript"] = "I did not expect to see all of you here today, so early in the morning."
    batch = collate(rows, "emotion")
    assert batch["attention_mask"].sum(-1).unique().numel() == len(rows)
    assert batch["label_mask"].sum(-1).unique().numel() > 1
    with torch.no_grad():
        prompt = model.embed_prompt(batch)
    return batch, prompt


def _scored_alone(model, batch, prompt):
    """(B, L) log-likelihoods of each candidate, from one LLM run per clip and candidate on
    that clip's real prompt embeddings and that candidate's real tokens, without padding or a mask."""
    embed = model.llm.get_input_embeddings()
    rows = []
    for b in range(prompt.shape[0]):
        real = prompt[b, batch["attention_mask"][b].bool()]
        row = []
        for ids, keep in zip(batch["label_ids"], batch["label_mask"]):
            ids = ids[keep.bool()]
            logits = model.llm(inputs_embeds=torch.cat([real, embed(ids)])[None], use_cache=False).logits[0].float()
            lp = torch.log_softmax(logits[len(real) - 1:-1], -1)
            row.append(lp.gather(-1, ids[:, None]).sum())
        rows.append(torch.stack(row))
    return torch.stack(rows)


def test_packed_label_scores_equal_each_candidate_scored_alone(tiny):
    """All candidates share one pass over "prompt + every candidate" with a mask that keeps
    each candidate to the prompt and its own tokens: each log-likelihood is that of the
    candidate scored alone after its clip's (unpadded) prompt, and the VA state is that of
    the prompt alone."""
    model, *_ = tiny
    batch, prompt = _packed_case(tiny)
    with torch.no_grad():
        got, va = model.score_labels(batch, prompt, loglik=True, with_va=True)
        want = _scored_alone(model, batch, prompt)
        expected_va = model.va_head(model.pooled_audio_state(
            model._hidden_states(prompt, batch["attention_mask"]), batch["audio_mask"]))
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(va, expected_va, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_packed_label_scores_train_to_the_loss_and_gradients_of_each_candidate_alone(tiny, monkeypatch,
                                                                                    checkpointing):
    """In training (emotion_loss `both`: the gold candidate's LM loss and the KL to the votes)
    the packed pass gives the loss, and the LoRA gradients, of the candidates scored alone,
    with activation checkpointing too."""

    model, *_ = tiny
    batch, prompt = _packed_case(tiny)
    monkeypatch.setattr(model, "emotion_loss", "both")
    monkeypatch.setattr(model, "embed_prompt", lambda batch, audio=None: prompt)
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    base = model.llm.get_base_model()
    model.train()
    if checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    try:
        assert base.is_activation_checkpointing == checkpointing
        losses = model(batch)
        got = torch.autograd.grad(losses["lm"] + losses["kl"], lora)  # the gender head's loss aside
        ref = _scored_alone(model, batch, prompt)
        gold = batch["label_index"]
        lm = -ref.gather(1, gold[:, None]).sum() / batch["label_mask"][gold].sum()
        kl = F.kl_div(torch.log_softmax(ref, -1), batch["votes"].to(ref.dtype), reduction="batchmean")
        want = torch.autograd.grad(lm + kl, lora)
    finally:
        model.eval()
        if checkpointing:
            base.gradient_checkpointing_disable()
    torch.testing.assert_close(losses["lm"], lm, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(losses["kl"], kl, atol=1e-5, rtol=1e-4)
    assert any(g.abs().sum() > 0 for g in want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-3)
