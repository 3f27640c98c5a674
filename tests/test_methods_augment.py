"""Audio augmentation (recipe section `augment`): seeded, measured, training only."""

import numpy as np
import pytest
import torch

from reasoning.training.augment import Augmenter, build_augmenter
from reasoning.training.config import AugmentConfig, load_recipe
from reasoning.tasks.collate import AudioCache, Collator
from reasoning.tasks.prompts import PromptBuilder
from reasoning.errors import RecipeError
from reasoning.manifest import read_manifest

from conftest import SAMPLES, TINY, tiny_recipe_tree

SR = 16000


def tone(freq: float = 440.0, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)), n=8 * len(x)))
    return float(np.argmax(spectrum) * SR / (8 * len(x)))


def db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(np.asarray(x, np.float64) ** 2))


def test_same_seed_and_key_give_the_same_wave_and_others_do_not():
    cfg = AugmentConfig(p=1.0, pitch=[-2.0, 2.0], snr_db=[20.0, 30.0], gain_db=[-6.0, 6.0])
    x = tone()
    a, b = Augmenter(cfg, seed=1), Augmenter(cfg, seed=1)
    out = a(x, "0:clip")
    np.testing.assert_array_equal(out, b(x, "0:clip"))
    np.testing.assert_array_equal(out, a(x, "0:clip"))  # no state carried between calls
    assert not np.allclose(out, a(x, "1:clip"))        # the next epoch draws anew
    assert not np.allclose(out, Augmenter(cfg, seed=2)(x, "0:clip"))
    assert np.array_equal(x, tone()), "the input (the cached clean clip) is never modified"


@pytest.mark.slow
def test_each_transform_changes_the_wave_by_the_documented_amount():
    x = tone(440.0)
    gain = Augmenter(AugmentConfig(p=1.0, gain_db=[6.0, 6.0]))(x, "k")
    assert db(gain) - db(x) == pytest.approx(6.0, abs=0.01)

    pitch = Augmenter(AugmentConfig(p=1.0, pitch=[2.0, 2.0]))(x, "k")
    assert len(pitch) == len(x)
    assert peak_hz(pitch) == pytest.approx(440.0 * 2 ** (2 / 12), rel=0.01)  # 493.9 Hz

    speed = Augmenter(AugmentConfig(p=1.0, speed=[1.25, 1.25]))(x, "k")  # tempo and pitch together
    assert len(speed) == pytest.approx(len(x) / 1.25, rel=0.01)
    assert peak_hz(speed) == pytest.approx(440.0 * 1.25, rel=0.01)

    tempo = Augmenter(AugmentConfig(p=1.0, tempo=[0.8, 0.8]))(x, "k")  # slower, same pitch
    assert len(tempo) == pytest.approx(len(x) / 0.8, rel=0.02)
    assert peak_hz(tempo) == pytest.approx(440.0, rel=0.01)

    noisy = Augmenter(AugmentConfig(p=1.0, snr_db=[10.0, 10.0]))(x, "k")
    assert db(x) - db(noisy - x) == pytest.approx(10.0, abs=0.3)


def test_probability_is_per_example():
    aug = Augmenter(AugmentConfig(p=0.3, gain_db=[6.0, 6.0]), seed=0)
    x = tone(seconds=0.05)
    changed = [not np.array_equal(aug(x, f"0:clip{i}"), x) for i in range(400)]
    assert np.mean(changed) == pytest.approx(0.3, abs=0.06)
    assert build_augmenter(AugmentConfig()) is None  # p = 0: off


def test_collator_augments_training_batches_only_and_never_cached_clips():
    from transformers import AutoTokenizer

    rows = read_manifest(SAMPLES)[:2]
    builder = PromptBuilder(AutoTokenizer.from_pretrained(TINY / "tokenizer"), ["neutral", "happy", "angry", "sad"], 4)
    aug = Augmenter(AugmentConfig(p=1.0, gain_db=[-6.0, -6.0]))
    clean = Collator(builder, AudioCache())(rows, "emotion")["waves"]
    collate = Collator(builder, AudioCache(), augment=aug)
    torch.testing.assert_close(collate(rows, "emotion")["waves"], clean)  # evaluation: no epoch
    train = collate(rows, "emotion", epoch=0)["waves"]
    assert 10 * torch.log10((train ** 2).sum() / (clean ** 2).sum()) == pytest.approx(-6.0, abs=0.01)
    torch.testing.assert_close(collate(rows, "emotion")["waves"], clean)  # the cache kept the clean clip
    collate.cached = True  # encoder outputs from a cache were computed on the clean clip
    torch.testing.assert_close(collate(rows, "emotion", epoch=0)["waves"], clean)


@pytest.mark.parametrize("override, key", [
    ("augment.pitch=[-20, 2]", "augment.pitch"),
    ("augment.snr_db=[30, 10]", "augment.snr_db"),
    ("augment.speed=[0.9]", "augment.speed"),
    ("augment.gain_db=[-60, 0]", "augment.gain_db"),
    ("augment.p=1.5", "augment.p"),
    ("augment.p=0.5", "no transform is set"),
])
def test_out_of_range_parameters_name_the_key(tmp_path, override, key):
    with pytest.raises(RecipeError, match=key):
        load_recipe(tree=tiny_recipe_tree(tmp_path), overrides=[override])
