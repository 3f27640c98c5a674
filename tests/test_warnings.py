"""Warnings a user cannot act on are silenced where they arise, and only those."""

import logging
import warnings

import pytest
import torch
from transformers import AutoConfig, AutoModel

from reasoning.model.builders import _config_dict, build_paralinguistic_encoder
from reasoning.training.config import load_recipe

from conftest import tiny_recipe_tree


def test_the_bitsandbytes_kernels_hint_is_dropped_and_its_other_warnings_kept():
    import reasoning  # noqa: F401 - installs the filter

    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    hint = logger.makeRecord(logger.name, logging.WARNING, "ops.py", 1,
                             "Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please "
                             "make sure you already `pip install kernels`", ("No module named 'kernels'",), None)
    other = logger.makeRecord(logger.name, logging.WARNING, "ops.py", 1, "something else", (), None)
    assert not logger.filter(hint) and logger.filter(other)


def test_the_kernels_offline_trust_notice_for_that_kernel_is_dropped_and_its_other_warnings_kept():
    """With `kernels` installed (transformers 5.25 requires it), bitsandbytes asks it for the
    same optional kernel, and offline it warns on every command that it skips the publisher's
    trust check before failing back to the built-in path."""
    import reasoning  # noqa: F401 - installs the filter

    logger = logging.getLogger("kernels._internals.hf_hub")
    notice = logger.makeRecord(logger.name, logging.WARNING, "hf_hub.py", 1,
                               "Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes' "
                               "because Hugging Face Hub is in offline mode.", (), None)
    other = logger.makeRecord(logger.name, logging.WARNING, "hf_hub.py", 1,
                              "Skipping publisher trust check for 'someone/else' because Hugging Face Hub "
                              "is in offline mode.", (), None)
    assert not logger.filter(notice) and logger.filter(other)


def test_a_padded_wavlm_batch_raises_no_key_padding_mask_deprecation(tmp_path):
    """transformers' WavLM passes a bool padding mask with a float position bias to torch's
    attention, which warns on every padded batch; SSLEncoder silences that one warning."""
    recipe = load_recipe(tree=tiny_recipe_tree(tmp_path / "run", tmp_path / "m.jsonl"))
    p = recipe.model.paralinguistic  # the tiny WavLM of the test recipes
    encoder = build_paralinguistic_encoder(p, AutoModel.from_config(AutoConfig.for_model(
        **_config_dict(p.config, "model.paralinguistic.config"))))
    waves = torch.randn(2, 8000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encoder(waves, torch.tensor([8000, 4000]))
    assert not [w for w in caught if "key_padding_mask" in str(w.message)]


def test_the_grpo_stage_configures_trl_without_a_deprecation(tmp_path):
    """`gradient_checkpointing=` is deprecated in transformers 5 and warned on every `emoreason grpo`."""
    pytest.importorskip("trl")
    from reasoning.training.config import GrpoConfig
    from reasoning.training.grpo import trl_config

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        assert trl_config(GrpoConfig(), tmp_path, use_cpu=True).activation_checkpointing is False


def test_checkpointing_is_enabled_without_transformers_deprecation():
    """transformers 5.25 renamed `gradient_checkpointing_enable` to `activation_checkpointing_enable`
    and warns on the old name: every checkpointed training run printed a FutureWarning."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from reasoning.model.builders import enable_checkpointing

    llm = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, num_key_value_heads=2, vocab_size=64))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        enable_checkpointing(llm)
    assert any(getattr(m, "gradient_checkpointing", False) for m in llm.modules())
