"""Saliency-driven layer selection (`emoreason select-layer`, `layer: auto`)."""

import argparse
import json
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from reasoning.model import saliency
from reasoning.training.config import load_recipe
from reasoning.errors import RecipeError
from reasoning.manifest import read_manifest
from reasoning.training.train import TrainRecipe

from conftest import tiny_recipe_tree

SR = 16000
HOP = 320  # samples per frame of the synthetic encoder
PLANTED = 3


class PlantedEncoder(nn.Module):
    """A speech encoder in the transformers SSL interface whose layer ``PLANTED`` carries the
    clip's pitch (zero-crossing rate per frame); every other layer is noise."""

    def __init__(self, layers: int = 5, dim: int = 8, hidden: bool = True):
        super().__init__()
        self.config = SimpleNamespace(num_hidden_layers=layers, hidden_size=dim, feat_extract_norm="layer")
        self.scale = nn.Parameter(torch.ones(dim))
        self.hidden = hidden

    def _get_feat_extract_output_lengths(self, lengths):
        return lengths // HOP

    def forward(self, waves, attention_mask=None, output_hidden_states=False):
        B, S = waves.shape
        frames = waves[:, : S // HOP * HOP].reshape(B, -1, HOP)
        zcr = (torch.sign(frames[..., 1:]) != torch.sign(frames[..., :-1])).float().mean(-1)  # (B, T)
        layers = [torch.randn(B, frames.shape[1], len(self.scale)) for _ in range(self.config.num_hidden_layers + 1)]
        layers[PLANTED] = zcr[..., None] * self.scale + 0.01 * layers[PLANTED]
        return SimpleNamespace(last_hidden_state=layers[-1],
                               hidden_states=tuple(layers) if self.hidden else None)


@pytest.fixture
def tone_rows(tmp_path):
    """Twelve tones: the emotion sets the pitch, valence follows it."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        label, freq = [("sad", 150.0), ("neutral", 300.0), ("angry", 600.0)][i % 3]
        freq *= 1 + 0.05 * rng.standard_normal()
        t = np.arange(int(0.4 * SR)) / SR
        wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(len(t))
        path = tmp_path / f"c{i}.wav"
        sf.write(path, wave.astype(np.float32), SR)
        rows.append({"id": f"c{i}", "audio": str(path), "emotion": label, "valence": freq / 600 - 0.5,
                     "arousal": None})
    return rows


@pytest.mark.parametrize("target", ["emotion", "valence"])
def test_the_planted_layer_is_picked(tone_rows, target):
    torch.manual_seed(0)
    result = saliency.select_layer(PlantedEncoder(), tone_rows, target)
    assert result["best"] == PLANTED
    scores = result["scores"]
    assert len(scores) == 6 and all(0 <= s <= 1 for s in scores)
    assert scores[PLANTED] > 0.9 and max(s for i, s in enumerate(scores) if i != PLANTED) < 0.6


def test_saliency_score_matches_its_formula():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 2, 3))
    y = rng.normal(size=30)
    expected = [np.mean([abs(np.corrcoef(x[:, l, d], y)[0, 1]) for d in range(3)]) for l in range(2)]
    np.testing.assert_allclose(saliency.saliency_scores(x, list(y), "valence"), expected)
    # two classes: the correlation ratio is |r| against the one-hot column
    labels = ["a" if v > 0 else "b" for v in rng.normal(size=30)]
    onehot = np.array([lab == "a" for lab in labels], float)
    expected = [np.mean([abs(np.corrcoef(x[:, l, d], onehot)[0, 1]) for d in range(3)]) for l in range(2)]
    np.testing.assert_allclose(saliency.saliency_scores(x, labels, "emotion"), expected)


def test_an_encoder_without_hidden_states_names_the_key(tone_rows, tmp_path):
    with pytest.raises(RecipeError, match=r"model\.paralinguistic\.layer.*no hidden states.*integer"):
        saliency.select_layer(PlantedEncoder(hidden=False), tone_rows, "emotion")
    with pytest.raises(RecipeError, match=r"model\.paralinguistic\.layer: `auto`.*kind: ssl"):
        load_recipe(tree=tiny_recipe_tree(tmp_path), overrides=[
            "model.paralinguistic.layer=auto", "model.paralinguistic.kind=opensmile"])


def test_layer_auto_resolves_at_setup_is_cached_and_matches_the_cli(tmp_path, small_manifest, monkeypatch, capsys):
    tree = tiny_recipe_tree(tmp_path / "run", small_manifest)
    tree["model"]["paralinguistic"].update(layer="auto", auto_target="arousal")
    trainer = TrainRecipe(load_recipe(tree=tree))
    trainer._setup_accelerator()
    trainer._setup_output()
    run = tmp_path / "run"
    result = json.loads((run / saliency.RESULT_NAME).read_text())
    assert (run / saliency.PLOT_NAME).stat().st_size > 1000
    assert len(result["scores"]) == 3 and result["clips"] == 8  # tiny WavLM: CNN features + 2 layers
    saved = load_recipe(run / "recipe.yaml")
    assert saved.model.paralinguistic.layer == result["best"] == trainer.recipe.model.paralinguistic.layer

    # A second start (e.g. --resume) reads the cache instead of running the encoder again.
    monkeypatch.setattr(saliency, "select_layer", lambda *a, **k: pytest.fail("not cached"))
    again = load_recipe(tree=tree)
    again.model.paralinguistic.path = str(run / "base" / "paralinguistic")
    assert saliency.resolve_auto_layer(again, read_manifest(small_manifest), run) == result["best"]
    monkeypatch.undo()

    # `emoreason select-layer` on the same encoder and clips prints the same scores.
    parser = argparse.ArgumentParser()
    saliency.add_arguments(parser)
    args = parser.parse_args(["--encoder", str(run / "base" / "paralinguistic"), "--manifest", str(small_manifest),
                              "--target", "arousal", "--out", str(tmp_path / "cli")])
    assert saliency.run(args) == 0
    out = capsys.readouterr().out
    assert f"best layer: {result['best']}" in out and out.count("layer ") >= 3
    cli = json.loads((tmp_path / "cli" / saliency.RESULT_NAME).read_text())
    np.testing.assert_allclose(cli["scores"], result["scores"], rtol=1e-5)

