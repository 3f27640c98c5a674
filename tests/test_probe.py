"""The encoder probe: pooling over real frames only, the layer chosen on training speakers
only, the planted layer found, the per-clip cache, and `emoreason eval --baselines probe`."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import reasoning.evaluation.baselines as baselines
import reasoning.evaluation.probe as probe
from reasoning.evaluation.baselines import choose_probe_layer, probe_baseline
from reasoning.cli import main
from reasoning.training.config import SpeechEncoderConfig, load_recipe, save_recipe
from reasoning.errors import UserError
from reasoning.evaluation.evaluate import probe_speech_config
from reasoning.manifest import read_manifest, write_manifest
from reasoning.pretrained import MARKER, models_dir
from reasoning.evaluation.probe import encode_clip, extract_probe_features, load_probe_encoder, pool_layers

from conftest import SAMPLES, TINY, tiny_recipe_tree

LABELS = ["neutral", "happy", "angry", "sad"]


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory) -> Path:
    """A random Whisper (2 layers, d_model 64) saved as a transformers folder."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(0)
    cfg = WhisperConfig(**json.loads((TINY / "whisper.json").read_text()))
    folder = tmp_path_factory.mktemp("whisper")
    WhisperModel(cfg).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=cfg.num_mel_bins).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def encoder(tiny_whisper):
    return load_probe_encoder(SpeechEncoderConfig(path=str(tiny_whisper)))


def sample_rows(speakers=("spk1", "spk2", "spk3"), root: Path | None = None) -> list[dict]:
    """Bundled clips of ``speakers`` (absolute paths); copied under ``root`` when given, so
    a test may touch the files."""
    rows = [r for r in read_manifest(SAMPLES) if r["speaker"] in speakers]
    if root is not None:
        for r in rows:
            r["audio"] = shutil.copy(r["audio"], root / Path(r["audio"]).name)
    return rows


# ------------------------------------------------------------------------------ pooling

def test_pool_layers_reads_only_the_real_frames():
    torch.manual_seed(0)
    states = [torch.randn(2, 10, 3) for _ in range(4)]
    lengths = torch.tensor([4, 10])
    for s in states:
        s[0, 4:] = 1e6  # padding after the first clip's end
    pooled = pool_layers(states, lengths)
    assert pooled.shape == (2, 4, 3)
    for layer, s in enumerate(states):
        torch.testing.assert_close(pooled[0, layer], s[0, :4].mean(0))
        torch.testing.assert_close(pooled[1, layer], s[1].mean(0))


def test_a_clip_gets_the_same_features_alone_and_beside_a_longer_clip(encoder):
    rows = sample_rows(("spk1",))
    durations = {r["id"]: sf.info(r["audio"]).duration for r in rows}
    short, long = min(rows, key=lambda r: durations[r["id"]]), max(rows, key=lambda r: durations[r["id"]])
    assert durations[long["id"]] > durations[short["id"]] + 0.2
    alone, _ = extract_probe_features([short], encoder, progress=False)
    beside, _ = extract_probe_features([long, short], encoder, progress=False)
    n_layers = len(encoder.encoder.layers) + 1
    assert alone[short["id"]].shape == (n_layers, encoder.hidden_size)
    np.testing.assert_allclose(beside[short["id"]], alone[short["id"]], atol=1e-5, rtol=0)
    # ... and equal the mean of the encoder's own hidden states over the clip's frames
    from reasoning.audio import load_audio

    wave = torch.from_numpy(load_audio(short["audio"]))[None]
    with torch.no_grad():
        states, n = encoder.hidden_states(wave, torch.tensor([wave.shape[1]]))
    reference = np.stack([s[0, : int(n[0])].mean(0).numpy() for s in states])
    np.testing.assert_allclose(alone[short["id"]], reference, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------ layer choice

def planted(signal_layer: int, n_layers=4, dim=6, speakers=4, per_speaker=20, seed=0,
            labels=LABELS):
    """Features (N, L, D) where only ``signal_layer`` separates the labels; noise elsewhere."""
    rng = np.random.default_rng(seed)
    y = [labels[i % len(labels)] for i in range(speakers * per_speaker)]
    groups = [f"s{i // per_speaker}" for i in range(len(y))]
    x = rng.normal(size=(len(y), n_layers, dim))
    centres = rng.normal(scale=3.0, size=(len(labels), dim))
    x[:, signal_layer] += centres[[labels.index(v) for v in y]]
    return x, y, groups


@pytest.mark.parametrize("layer", [0, 2, 3])
def test_the_layer_that_carries_the_label_is_chosen(layer):
    x, y, groups = planted(layer)
    choice = choose_probe_layer(x, y, groups, LABELS)
    assert choice["layer"] == layer and choice["grouped_by"] == "speaker"
    assert choice["inner_folds"] == 4  # one per training speaker
    ua = choice["inner_ua"]
    assert len(ua) == 4 and ua[layer] > 0.9
    assert max(u for i, u in enumerate(ua) if i != layer) < 0.5  # chance is 0.25
    # one speaker only: stratified inner folds, same answer
    single = choose_probe_layer(x, y, ["s0"] * len(y), LABELS)
    assert single["layer"] == layer and single["grouped_by"] == "class"


def rows_for(x, y, groups):
    return [{"id": f"r{i}", "speaker": g, "emotion": v} for i, (v, g) in enumerate(zip(y, groups))]


def test_the_layer_is_chosen_on_the_training_speakers_only(monkeypatch):
    x, y, groups = planted(1, speakers=5)
    rows = rows_for(x, y, groups)
    features = {r["id"]: x[i] for i, r in enumerate(rows)}
    train = [r for r in rows if r["speaker"] != "s4"]
    test = [r for r in rows if r["speaker"] == "s4"]
    seen = []
    real = baselines.choose_probe_layer

    def recording(x_train, y_train, groups_train, label_set, **kw):
        seen.append((len(x_train), set(groups_train)))
        return real(x_train, y_train, groups_train, label_set, **kw)

    monkeypatch.setattr(baselines, "choose_probe_layer", recording)
    pred = probe_baseline(train, test, LABELS, features=features)
    assert seen == [(len(train), {"s0", "s1", "s2", "s3"})]
    assert pred["layer_choice"]["layer"] == 1
    assert pred["scores"].shape == (len(test), 4)
    # planted on the test speaker: its rows carry the label in layer 3 instead, and its
    # labels are shuffled; the choice does not move
    x_other, _, _ = planted(3, speakers=5, seed=1)
    moved = dict(features)
    for i, r in enumerate(rows):
        if r["speaker"] == "s4":
            moved[r["id"]] = x_other[i]
    relabelled = [{**r, "emotion": LABELS[(LABELS.index(r["emotion"]) + 1) % 4]} for r in test]
    again = probe_baseline(train, relabelled, LABELS, features=moved)
    assert again["layer_choice"] == pred["layer_choice"]


def test_the_probe_needs_features():
    with pytest.raises(UserError, match="--probe-encoder"):
        probe_baseline([{"id": "a", "emotion": "sad"}], [], LABELS)


# ------------------------------------------------------------------------------ cache

def test_the_cache_answers_the_second_time_and_an_edited_clip_is_encoded_again(
        encoder, tiny_whisper, tmp_path, monkeypatch):
    rows = sample_rows(("spk1",), tmp_path)[:3]
    speech = SpeechEncoderConfig(path=str(tiny_whisper))
    first, _ = extract_probe_features(rows, encoder, probe.probe_cache(encoder, speech, tmp_path / "c"),
                                      progress=False)
    calls = []
    real = probe.encode_clip

    def counting(enc, wave):
        calls.append(len(wave))
        return real(enc, wave)

    monkeypatch.setattr(probe, "encode_clip", counting)
    cache = probe.probe_cache(encoder, speech, tmp_path / "c")
    again, _ = extract_probe_features(rows, encoder, cache, progress=False)
    assert calls == []
    assert all(np.array_equal(first[k], again[k]) for k in first)

    # a new modification time, then a new size (the clip is cut): encoded again
    path = Path(rows[1]["audio"])
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    extract_probe_features(rows, encoder, cache, progress=False)
    assert len(calls) == 1
    wave, sr = sf.read(path, dtype="float32")
    sf.write(path, wave[: len(wave) // 2], sr)
    third, _ = extract_probe_features(rows, encoder, cache, progress=False)
    assert len(calls) == 2 and calls[1] < calls[0]
    assert not np.allclose(third[rows[1]["id"]], first[rows[1]["id"]])
    # another clip-length limit gives other features: another cache folder
    other = probe.probe_cache(encoder, SpeechEncoderConfig(path=str(tiny_whisper), max_seconds=10),
                              tmp_path / "c")
    assert other.dir != cache.dir


# --------------------------------------------------------------------- emoreason eval

def test_eval_runs_the_probe_and_writes_the_chosen_layer(tiny_whisper, tmp_path, capsys):
    manifest = write_manifest(sample_rows(), tmp_path / "m.jsonl")
    out = tmp_path / "run"
    base = ["eval", "--manifest", str(manifest), "--protocol", "loso", "--out", str(out),
            "--baselines", "majority,probe"]
    assert main(base) == 2
    assert "--probe-encoder" in capsys.readouterr().err
    assert main(base + ["--probe-encoder", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err

    assert main(base + ["--probe-encoder", str(tiny_whisper)]) == 0
    assert "| probe |" in capsys.readouterr().out
    data = json.loads((out / "metrics.json").read_text())
    result = data["systems"]["probe"]
    assert result["pooled"]["n"] == 36 and set(result["per_fold"]) == {
        "speaker-spk1", "speaker-spk2", "speaker-spk3"}
    assert result["encoder"] == str(tiny_whisper)
    for fold, choice in result["layer_choice"].items():
        assert choice["layer"] in (0, 1, 2) and len(choice["inner_ua"]) == 3
        assert choice["inner_folds"] == 2 and choice["grouped_by"] == "speaker"
    report = (out / "report.md").read_text()
    assert "probe: layer of" in report and "speaker-spk2 layer" in report
    assert len((out / "predictions" / "probe.jsonl").read_text().splitlines()) == 36
    assert len(list((out / "probe_cache").glob("*/*.npy"))) == 36


def test_the_probe_encoder_comes_from_the_checkpoint_recipe(tiny_whisper, tmp_path):
    tree = tiny_recipe_tree(tmp_path / "train")
    tree["model"]["speech"].update(path=str(tiny_whisper), config=None, mel_policy="pad30")
    fold = tmp_path / "ckpt" / "speaker-spk1"
    fold.mkdir(parents=True)
    save_recipe(load_recipe(tree=tree), fold / "recipe.yaml")
    speech = probe_speech_config(None, tmp_path / "ckpt", ["speaker-spk1"])
    assert speech.path == str(tiny_whisper) and speech.mel_policy == "pad30"
    assert probe_speech_config(str(tiny_whisper), tmp_path / "ckpt").mel_policy == "trim"
    assert probe_speech_config(None, None) is None
    with pytest.raises(UserError, match="--probe-encoder"):
        probe_speech_config(None, tmp_path, ["speaker-spk1"])


# ------------------------------------------------------------------ the real Whisper base

@pytest.mark.skipif(not (models_dir() / "whisper-base" / MARKER).is_file(),
                    reason="Whisper base is not fetched (emoreason models fetch whisper-base)")
def test_real_whisper_base_features():
    enc = load_probe_encoder(SpeechEncoderConfig(path=str(models_dir() / "whisper-base")))
    rows = sample_rows(("spk2",))[:2]
    feats, failed = extract_probe_features(rows, enc, progress=False)
    x = feats[rows[0]["id"]]
    assert not failed and x.shape == (7, 512) and np.all(np.isfinite(x))
    # the layers differ: layer 0 is the convolutions, 6 the output after the layer norm
    assert np.abs(x[0] - x[6]).mean() > 0.1
    from reasoning.audio import load_audio

    np.testing.assert_allclose(encode_clip(enc, load_audio(rows[1]["audio"])),
                               feats[rows[1]["id"]], atol=1e-5, rtol=0)
