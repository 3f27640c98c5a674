"""The local-LLM writer with a tiny random model and tokenizer built in tmp_path (offline)."""

import pytest

from reasoning.errors import UserError
from reasoning.evidence import Z_FEATURES
from reasoning.rationales import RationaleRequest, write_rationales

CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 1-layer Llama with a byte-level BPE tokenizer: real plumbing, random weights."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny-teacher")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["anger: a loud voice and raised pitch, fast speech.",
                             "Emotion transcript measured cues z-scores speaker usual."], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(path)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=4096, pad_token_id=fast.pad_token_id,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id)
    import torch
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def request():
    z = dict.fromkeys(Z_FEATURES)
    z.update(f0_mean_st=1.3, loudness=0.9)
    ev = {"z": z, "values": {}, "flags": [], "error": None, "lexical": None}
    return RationaleRequest("u1", "anger", "Get out.", ev)


def test_hf_writer_generates_and_its_garbage_falls_back(tiny_model):
    from reasoning.rationales.hf import HFWriter

    w = HFWriter(str(tiny_model), max_new_tokens=8)
    first = w.write(request(), 0, [])
    assert isinstance(first, str) and first == w.write(request(), 0, [])  # greedy: reproducible
    w.write(request(), 1, ["'x': wrong"])  # sampling path
    w.tokenizer.chat_template = CHAT_TEMPLATE
    assert "<|assistant|>" in w._prompt([{"role": "user", "content": "hi"}])
    assert isinstance(w.write(request(), 0, []), str)

    rows = [{"id": "u1", "audio": "u1.wav", "emotion": "anger", "transcript": "Get out.",
             "evidence": request().evidence}]
    out, s = write_rationales(rows, w, max_attempts=2)
    r = out[0]["rationale"]
    # Random weights say nothing the evidence supports: rejected twice, then the template.
    assert r["requested_writer"] == "hf" and r["writer"] == "template" and r["fallback"]
    assert r["verdict"] == "pass" and r["attempts"] == 2
    assert s["per_writer"]["hf"] == {"candidates": 2, "passed": 0, "errors": 0, "pass_rate": 0.0}


def test_hf_writer_names_a_model_it_cannot_load(tmp_path):
    from reasoning.rationales.hf import HFWriter

    with pytest.raises(UserError, match="cannot load a causal LM"):
        HFWriter(str(tmp_path / "no-such-model"))


def test_cli_hf(tiny_model, tmp_path, capsys):
    import json

    from reasoning.cli import main

    path = tmp_path / "m.jsonl"
    row = {"id": "u1", "audio": "u1.wav", "emotion": "anger", "transcript": "Get out.",
           "evidence": request().evidence}
    path.write_text(json.dumps(row) + "\n")
    assert main(["rationales", "--manifest", str(path), "--writer", "hf", "--model",
                 str(tiny_model), "--max-new-tokens", "4", "--max-attempts", "1"]) == 0
    out = capsys.readouterr().out
    assert "pass rate hf: 0/1 candidates (0.0%)" in out and "1 template fallbacks" in out
    assert json.loads(path.read_text())["rationale"]["verdict"] == "pass"
