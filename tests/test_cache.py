import pytest

from reasoning.model.builders import build_model, materialize
from reasoning.training.config import load_recipe
from reasoning.training.train import TrainRecipe

from conftest import tiny_recipe_tree


def run_losses(tmp_path, manifest, cache_dir=None, **model):
    tree = tiny_recipe_tree(tmp_path, manifest, train={"epochs": 2, "lr": 1e-2})
    tree["model"]["paralinguistic"]["layer"] = 1  # a fixed layer: the SSL encoder is frozen whole
    tree["model"]["encoder_cache"] = str(cache_dir) if cache_dir else None
    tree["model"].update(model)
    trainer = TrainRecipe(load_recipe(tree=tree))
    trainer.setup()
    return [h["loss"] for h in trainer.train()], trainer.unwrapped


def test_cached_and_uncached_training_give_the_same_losses(tmp_path, small_manifest):
    plain, _ = run_losses(tmp_path / "a", small_manifest)
    cached, model = run_losses(tmp_path / "b", small_manifest, cache_dir=tmp_path / "cache")
    assert set(model.caches) == {"speech", "paralinguistic"}
    speech = model.caches["speech"]
    assert speech.misses == 8 and speech.hits >= 8 * 7, "each clip encoded once, then read back"
    assert len(list(speech.dir.glob("*.npy"))) == 8
    # Cached clips are encoded one at a time, uncached ones in padded batches: the same frames
    # (the WavLM-style encoder's group norm leaves the padding out).
    assert cached == pytest.approx(plain, rel=1e-4, abs=1e-4)

    from reasoning.training.checkpoint import load_for_inference
    assert load_for_inference(tmp_path / "b")[0].caches == {}, "prediction encodes every clip afresh"


def test_a_changed_encoder_setting_or_clip_invalidates_the_cache(tmp_path, small_manifest):
    def key_dirs(**speech):
        tree = tiny_recipe_tree(tmp_path / "m", small_manifest)
        tree["model"]["paralinguistic"]["layer"] = 1
        tree["model"]["speech"].update(speech)
        tree["model"]["encoder_cache"] = str(tmp_path / "cache")
        recipe = materialize(load_recipe(tree=tree), tmp_path / "m")
        model, _ = build_model(recipe)
        return {k: c.dir.name for k, c in model.caches.items()}

    base = key_dirs()
    assert key_dirs() == base
    other = key_dirs(mel_policy="pad30")
    assert other["speech"] != base["speech"] and other["paralinguistic"] == base["paralinguistic"]

    from reasoning.model.cache import clip_key
    import shutil
    clip = tmp_path / "clip.wav"
    shutil.copy(tiny_recipe_tree.__globals__["SAMPLES"].parent / "wav" / "spk1_sad_0.wav", clip)
    before = clip_key({"audio": str(clip)})
    assert clip_key({"audio": str(clip), "start": 0.5}) != before
    clip.write_bytes(clip.read_bytes()[:-320])
    assert clip_key({"audio": str(clip)}) != before


def test_trainable_encoders_are_not_cached(tmp_path, small_manifest):
    tree = tiny_recipe_tree(tmp_path, small_manifest)  # layer: weighted -> trainable layer weights
    tree["model"]["encoder_cache"] = str(tmp_path / "cache")
    recipe = materialize(load_recipe(tree=tree), tmp_path)
    model, _ = build_model(recipe)
    assert set(model.caches) == {"speech"}


def test_the_memory_cache_drops_the_least_recently_used_arrays_past_its_limit():
    import numpy as np

    from reasoning.model.cache import LRUCache

    cache = LRUCache(max_bytes=3 * 400)
    arrays = {k: np.full(100, i, dtype=np.float32) for i, k in enumerate("abcd")}  # 400 bytes each
    for k in "abc":
        cache.put(k, arrays[k])
    assert cache.get("a") is arrays["a"]  # a is now the most recently used: b goes first
    cache.put("d", arrays["d"])
    assert (cache.get("b"), len(cache), cache.bytes, cache.evictions) == (None, 3, 1200, 1)
    assert all(cache.get(k) is arrays[k] for k in "acd")
    cache.put("big", np.zeros(400, dtype=np.float32))  # larger than the whole limit: not kept
    assert cache.get("big") is None and len(cache) == 3
    nothing = LRUCache(0)
    nothing.put("a", arrays["a"])
    assert nothing.get("a") is None and nothing.bytes == 0


def test_a_bounded_clip_cache_evicts_and_trains_to_the_same_losses(tmp_path, small_manifest):
    def train(cache_mb):
        tree = tiny_recipe_tree(tmp_path / str(cache_mb), small_manifest, train={"epochs": 2, "lr": 1e-2},
                                data={"audio_cache_mb": cache_mb, "tasks": {"emotion": 1.0, "va": 1.0}})
        trainer = TrainRecipe(load_recipe(tree=tree))
        trainer.setup()
        return [h["loss"] for h in trainer.train()], trainer.collate.audio.clips

    unbounded, everything = train(512)
    bounded, few = train(0.2)  # about two of the eight 1-2 s clips
    assert bounded == unbounded
    assert everything.evictions == 0 and len(everything) == 8
    assert few.evictions > 0 and few.bytes <= 0.2 * 2**20 and 0 < len(few) < 8
