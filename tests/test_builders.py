import pytest
import torch

from reasoning.model.builders import build_model, materialize
from reasoning.training.config import load_recipe
from reasoning.tasks.collate import AudioCache, Collator
from reasoning.tasks.prompts import PromptBuilder
from reasoning.errors import RecipeError, UserError
from reasoning.manifest import read_manifest

from conftest import SAMPLES, tiny_recipe_tree


@pytest.fixture(scope="module")
def local_models(tmp_path_factory):
    """Tiny Whisper, WavLM and Qwen2 models saved to disk, as a user's local folders."""
    out = tmp_path_factory.mktemp("local")
    recipe = materialize(load_recipe(tree=tiny_recipe_tree(out)), out)
    return {"speech": recipe.model.speech.path, "paralinguistic": recipe.model.paralinguistic.path,
            "llm": recipe.model.llm.path}


def recipe_with(tmp_path, local_models, **llm):
    tree = tiny_recipe_tree(tmp_path)
    for part, path in local_models.items():
        tree["model"][part].update(path=path, config=None)
    tree["model"]["llm"].update(tokenizer=None, **llm)
    return load_recipe(tree=tree)


def test_local_folders_load_through_the_real_loading_code(tmp_path, local_models):
    model, tokenizer = build_model(recipe_with(tmp_path, local_models))
    assert model.speech_encoder.encoder.config.d_model == 64
    assert tokenizer.chat_template
    assert model.num_audio_tokens == 16 + 4


def test_a_hub_id_that_cannot_be_fetched_says_how_to_point_at_a_folder(tmp_path, local_models):
    recipe = recipe_with(tmp_path, local_models)
    recipe.model.llm.path = recipe.model.llm.tokenizer = "Qwen/Qwen2.5-1.5B-Instruct"
    with pytest.raises(UserError) as err:
        build_model(recipe)
    msg = str(err.value)
    assert "Qwen/Qwen2.5-1.5B-Instruct" in msg and "could not be fetched" in msg
    assert "model.llm.path" in msg and "--local-dir" in msg


def test_unknown_lora_target_is_a_recipe_error(tmp_path, local_models):
    recipe = recipe_with(tmp_path, local_models)
    recipe.lora.target_modules = ["query", "value"]
    with pytest.raises(RecipeError, match=r"lora.target_modules: \['query', 'value'\].*q_proj"):
        build_model(recipe)


def test_ssl_layer_out_of_range(tmp_path, local_models):
    recipe = recipe_with(tmp_path, local_models)
    recipe.model.paralinguistic.layer = 7
    with pytest.raises(RecipeError, match=r"model.paralinguistic.layer: 7 is out of range"):
        build_model(recipe)


def test_qlora_step_on_cpu(tmp_path, local_models, monkeypatch):
    import bitsandbytes as bnb

    from reasoning.model import builders

    loads, load = [], builders._from_pretrained
    monkeypatch.setattr(builders, "_from_pretrained", lambda cls, path, where, **kw: loads.append((where, kw))
                        or load(cls, path, where, **kw))
    model, tokenizer = build_model(recipe_with(tmp_path, local_models, quantization="4bit", dtype="bfloat16"),
                                   device=torch.device("cpu"))
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.llm.modules())
    # an explicit device map: bitsandbytes places the LLM on the device the encoders go to
    assert [kw.get("device_map") for where, kw in loads if where == "model.llm"] == [{"": torch.device("cpu")}]
    collate = Collator(PromptBuilder(tokenizer, ["neutral", "happy", "angry", "sad"], model.num_audio_tokens),
                       AudioCache())
    losses = model(collate(read_manifest(SAMPLES)[:2], "rationale"))
    losses["loss"].backward()
    lora = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora and all(p.grad is not None and torch.isfinite(p.grad).all() for p in lora)
    assert not any(p.requires_grad for n, p in model.llm.named_parameters() if "base_layer" in n)


def test_a_hub_id_fails_at_once_when_the_hub_cannot_be_reached(monkeypatch):
    """Without HF_HUB_OFFLINE and without a network, huggingface_hub retries for tens of
    seconds (26 s measured here, 53 s reported) before failing; the loaders fail at once."""
    import time

    from huggingface_hub import constants
    from transformers import AutoConfig

    from reasoning.model.builders import _from_pretrained

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://hub.emoreason.invalid")
    start = time.monotonic()
    with pytest.raises(UserError, match="could not be fetched"):
        _from_pretrained(AutoConfig, "emoreason-test/not-cached", "model.llm")
    assert time.monotonic() - start < 10


@pytest.mark.parametrize("loader", ["saliency", "hf rationale writer"])
def test_the_loaders_outside_the_builders_fail_at_once_too(loader, tmp_path, monkeypatch):
    """`emoreason select-layer --encoder ID` and `rationales --writer hf --model ID` call
    from_pretrained themselves; without a reachable hub they too read only the disk."""
    import time

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://hub.emoreason.invalid")
    start = time.monotonic()
    with pytest.raises(UserError, match="emoreason-test/not-cached"):
        if loader == "saliency":
            import argparse

            from reasoning.model import saliency
            saliency.run(argparse.Namespace(encoder="emoreason-test/not-cached", manifest=str(SAMPLES),
                                            target="emotion", split=[], max_clips=4, seed=0, out=str(tmp_path)))
        else:
            from reasoning.rationales.hf import HFWriter
            HFWriter("emoreason-test/not-cached")
    assert time.monotonic() - start < 10
