"""Builders: load pretrained parts (hub id or local folder), wrap LoRA, assemble the model.

A part given by ``config`` instead of ``path`` (the quickstart and the tests) is first
*materialised*: built with random weights from the config, saved to the run folder, and
the resolved recipe points at that folder. So there is one loading path, checkpoints hold
trainable weights only, and a checkpoint always names base weights that exist on disk.
"""

from __future__ import annotations

import json
import logging
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import torch
from torch import nn

from reasoning.model.cache import EncoderCache, encoder_key
from reasoning.training.config import Recipe
from reasoning.model.encoders import OpenSmileEncoder, SSLEncoder, WhisperSpeechEncoder, wave_normalization
from reasoning.errors import RecipeError, UserError
from reasoning.model.dual_encoder import DualEncoderLLM, Projector, VAHead
from reasoning.pretrained import missing_model_hint, resolve_model_path

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _config_dict(config: dict | str, where: str) -> dict:
    if isinstance(config, str):
        path = Path(config)
        if not path.is_file():
            raise RecipeError(f"{where}.config: no such file {path}.")
        return json.loads(path.read_text())
    return dict(config)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub can be asked at all: False with ``HF_HUB_OFFLINE`` set, or
    when its host does not answer within ``timeout`` seconds (one connection, no retries)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextmanager
def disk_only(path: str) -> Iterator[None]:
    """Around ``from_pretrained(path)``: a folder, or a hub id with no hub to ask, is read from
    disk only (the hub cache), so that a missing model fails at once instead of after
    huggingface_hub's retries (tens of seconds without a network). The hub is switched off
    (``HF_HUB_OFFLINE``) for the call: ``local_files_only`` alone does not reach transformers'
    lookup of an adapter config, which retries."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = before or Path(path).exists() or not hub_reachable()
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _load_dtype(cfg) -> torch.dtype:
    """The dtype ``from_pretrained`` loads a part in by default: its config's, else fp32."""
    dtype = getattr(cfg, "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    return dtype or torch.float32


def _from_pretrained(cls, path: str, where: str, **kw):
    """``cls.from_pretrained`` with an error that says what to do when offline. ``path`` may
    start with ``$EMOREASON_MODELS`` (reasoning.pretrained)."""
    path = resolve_model_path(path)
    try:
        with disk_only(path):
            return cls.from_pretrained(path, **kw)
    except OSError as err:
        hint = missing_model_hint(path)
        if hint:
            raise UserError(f"{where}.path: {hint}") from err
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"{where}.path: could not load {path!r} ({first}). If it is a hub id, it could not be "
            "fetched here (no network, or HF_HUB_OFFLINE=1): download it on a machine with a "
            f"network (`hf download {path} --local-dir DIR`), copy DIR here, and set "
            f"{where}.path to DIR. If it is a local folder, check that it exists and holds "
            "config.json and the weights.") from err


def materialize(recipe: Recipe, out_dir: str | Path, seed: int = 0, device: str | torch.device = "cpu") -> Recipe:
    """Save every part given by ``config`` as a randomly initialised model under
    ``out_dir/base/<part>`` and point the recipe at it. Returns the updated recipe.

    Each part is saved in the dtype it is loaded in (an encoder's config dtype, the LLM's
    ``model.llm.dtype``): a 7B LLM in bfloat16 writes 15 GB, not 30. ``device``: where the
    random weights are drawn (a GPU draws 7B in seconds, a CPU in minutes)."""
    from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer,
                              WhisperConfig, WhisperFeatureExtractor, WhisperModel)

    m = recipe.model
    base = Path(out_dir) / "base"
    if m.speech.path is None:
        torch.manual_seed(seed)
        cfg = WhisperConfig(**_config_dict(m.speech.config, "model.speech"))
        target = base / "speech"
        with torch.device(device):
            WhisperModel(cfg).to(_load_dtype(cfg)).save_pretrained(target)
        WhisperFeatureExtractor(feature_size=cfg.num_mel_bins).save_pretrained(target)
        m.speech.path = str(target)
    if m.paralinguistic.kind == "ssl" and m.paralinguistic.path is None:
        torch.manual_seed(seed + 1)
        cfg = _config_dict(m.paralinguistic.config, "model.paralinguistic")
        target = base / "paralinguistic"
        config = AutoConfig.for_model(**cfg)
        with torch.device(device):
            AutoModel.from_config(config).to(_load_dtype(config)).save_pretrained(target)
        m.paralinguistic.path = str(target)
    if m.llm.path is None:
        torch.manual_seed(seed + 2)
        cfg = _config_dict(m.llm.config, "model.llm")
        tokenizer = _from_pretrained(AutoTokenizer, m.llm.tokenizer, "model.llm.tokenizer")
        cfg.setdefault("vocab_size", len(tokenizer))
        target = base / "llm"
        with torch.device(device):
            AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg), dtype=DTYPES[m.llm.dtype]).save_pretrained(target)
        tokenizer.save_pretrained(target)
        m.llm.path, m.llm.tokenizer = str(target), str(target)
    return recipe


def freeze(module: nn.Module) -> nn.Module:
    """Freeze a module and keep it in eval mode (no dropout, no SpecAugment) for good."""
    module.requires_grad_(False)
    module.eval()
    module._frozen = True  # checkpoints skip frozen modules (reasoning.training.checkpoint.module_state)
    module.train = lambda mode=True: module  # a frozen part never goes back to training mode
    return module


def build_speech_encoder(cfg, encoder: nn.Module | None = None) -> WhisperSpeechEncoder:
    """The Whisper encoder of ``cfg.path``, or ``encoder`` when given (already built, e.g. on
    the meta device by :mod:`reasoning.model.memory`), checked and frozen as the recipe says."""
    from transformers import WhisperFeatureExtractor, WhisperModel

    fe = None
    if encoder is None:
        encoder = _from_pretrained(WhisperModel, cfg.path, "model.speech").get_encoder()
        try:
            with disk_only(resolve_model_path(cfg.path)):
                fe = WhisperFeatureExtractor.from_pretrained(resolve_model_path(cfg.path))
        except OSError:  # a folder with the model but no preprocessor_config.json
            pass
    fe = fe or WhisperFeatureExtractor(feature_size=encoder.config.num_mel_bins)
    n = len(encoder.layers)
    if not -(n + 1) <= cfg.layer <= n:
        raise RecipeError(f"model.speech.layer: {cfg.layer} is out of range for {cfg.path} "
                          f"({n} layers: use 0..{n}, or -1 for the final output).")
    if cfg.freeze:
        freeze(encoder)
    return WhisperSpeechEncoder(encoder, fe, cfg.mel_policy, cfg.layer)


def build_paralinguistic_encoder(cfg, ssl: nn.Module | None = None) -> nn.Module | None:
    """The paralinguistic encoder of the recipe; ``ssl``: the WavLM/HuBERT model already
    built (as for :func:`build_speech_encoder`)."""
    if cfg.kind == "none":
        return None
    if cfg.kind == "opensmile":
        return OpenSmileEncoder(cfg.hidden_size, cfg.cache_mb)
    from transformers import AutoModel

    if cfg.layer == "auto":
        raise RecipeError("model.paralinguistic.layer is `auto`, which a training run resolves to a layer number "
                          "at setup (reasoning.model.saliency.resolve_auto_layer): train with this recipe, or set the "
                          "layer that `emoreason select-layer` reports.")
    if ssl is None:
        ssl = _from_pretrained(AutoModel, cfg.path, "model.paralinguistic")
    n = ssl.config.num_hidden_layers
    if isinstance(cfg.layer, int) and not -(n + 1) <= cfg.layer <= n:
        raise RecipeError(f"model.paralinguistic.layer: {cfg.layer} is out of range for {cfg.path} "
                          f"({n} layers: use 0..{n}, -1 for the last, or `weighted`).")
    if cfg.freeze:
        freeze(ssl)
    return SSLEncoder(ssl, cfg.layer, normalize=wave_normalization(cfg.path))


def build_llm(cfg, lora, device: torch.device | None = None):
    """The causal LM wrapped with LoRA (and loaded in 4-bit NF4 for QLoRA), and its tokenizer.
    A 4-bit LLM is loaded onto ``device`` (default: the current GPU): bitsandbytes places its
    weights once and cannot move them. ``lora`` None: the LM as it is, unwrapped (an
    export whose adapter is merged into it, :mod:`reasoning.export`)."""
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    kw = {"dtype": DTYPES[cfg.dtype]}
    if cfg.quantization == "4bit":
        compute = DTYPES[cfg.dtype] if cfg.dtype != "float32" else torch.bfloat16
        kw["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute)
        if device is None:
            device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else "cpu"
        kw["device_map"] = {"": device}
    llm = _from_pretrained(AutoModelForCausalLM, cfg.path, "model.llm", **kw)
    tokenizer = _from_pretrained(AutoTokenizer, cfg.tokenizer or cfg.path, "model.llm.tokenizer")
    if cfg.quantization == "4bit":
        llm = prepare_model_for_kbit_training(llm, use_gradient_checkpointing=cfg.gradient_checkpointing,
                                              gradient_checkpointing_kwargs=CHECKPOINTING)
    elif cfg.gradient_checkpointing:
        enable_checkpointing(llm)
    if lora is None:
        return llm, tokenizer
    return add_lora(llm, lora, cfg.path), tokenizer


# Non-reentrant checkpointing: peft passes torch's reentrant default on, and under DDP a
# reentrant backward marks a LoRA weight ready twice ("Expected to mark a variable ready
# only once", with find_unused_parameters).
CHECKPOINTING = {"use_reentrant": False}


def enable_checkpointing(llm: nn.Module) -> None:
    """Gradient checkpointing of a (not quantized) LLM, as training runs it."""
    if hasattr(llm, "activation_checkpointing_enable"):  # transformers >= 5.25 warns on the old name
        llm.activation_checkpointing_enable(activation_checkpointing_kwargs=CHECKPOINTING)
    else:
        llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=CHECKPOINTING)
    llm.enable_input_require_grads()


def add_lora(llm: nn.Module, lora, where: str) -> nn.Module:
    """``llm`` wrapped in the recipe's LoRA (``lora``: :class:`reasoning.training.config.LoraConfig`);
    the one place the peft config is written. ``where`` names the LLM in errors."""
    from peft import LoraConfig, get_peft_model

    names = {name.rsplit(".", 1)[-1] for name, _ in llm.named_modules()}
    missing = [t for t in lora.target_modules if t not in names]
    if missing:
        raise RecipeError(f"lora.target_modules: {missing} are not modules of {where}; "
                          f"linear layers there include e.g. {sorted(n for n in names if 'proj' in n)[:8]}.")
    peft_cfg = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                          target_modules=list(lora.target_modules),
                          modules_to_save=list(lora.modules_to_save) or None, task_type="CAUSAL_LM")
    return get_peft_model(llm, peft_cfg)


def attach_caches(model: DualEncoderLLM, recipe: Recipe) -> None:
    """Give each encoder without trainable parameters an output cache (reasoning.model.cache)."""
    m = recipe.model
    settings = {"speech": dict(path=m.speech.path, mel_policy=m.speech.mel_policy, max_seconds=m.speech.max_seconds,
                               layer=m.speech.layer),
                "paralinguistic": dict(path=m.paralinguistic.path, layer=m.paralinguistic.layer,
                                       max_seconds=m.speech.max_seconds)}
    if m.paralinguistic.kind == "ssl":  # the waveform it reads: z-normalised or not (do_normalize)
        settings["paralinguistic"]["normalize"] = model.paralinguistic_encoder.normalize
    for name, encoder in (("speech", model.speech_encoder), ("paralinguistic", model.paralinguistic_encoder)):
        if encoder is None or any(p.requires_grad for p in encoder.parameters()):
            log.info("encoder cache: %s encoder has trainable parameters and is not cached", name)
            continue
        inner = getattr(encoder, "encoder", None) or encoder.model
        dtype = str(next(encoder.parameters()).dtype)
        key = encoder_key(name, inner.config.to_dict(), dtype=dtype, **settings[name])
        model.caches[name] = EncoderCache(m.encoder_cache, key)
        log.info("encoder cache: %s -> %s", name, model.caches[name].dir)


def assemble(recipe: Recipe, speech: nn.Module, para: nn.Module | None, llm: nn.Module) -> DualEncoderLLM:
    """The model around built encoders and LLM: projectors, fusion and heads from the recipe."""
    m, h = recipe.model, recipe.heads
    hidden = llm.get_input_embeddings().weight.shape[1]
    projectors = nn.ModuleDict({"speech": Projector(speech.hidden_size, hidden, m.speech.num_tokens,
                                                    m.projector_hidden)})
    fuse = None
    if para is not None:
        projectors["paralinguistic"] = Projector(para.hidden_size, hidden, m.paralinguistic.num_tokens,
                                                 m.projector_hidden)
        if m.fusion == "feature":
            fuse = nn.Linear(2 * hidden, hidden)
    return DualEncoderLLM(
        speech, para, projectors, llm, VAHead(hidden, h.va_pooling, n_out=len(h.dimensions)),
        gender_head=nn.Linear(hidden, 2) if h.gender_weight > 0 else None,
        audio_emotion_head=nn.Linear(hidden, len(recipe.data.labels)) if h.audio_emotion_weight > 0 else None,
        fusion=m.fusion, fuse=fuse, va_layer=h.va_layer, va_loss=h.va_loss, va_weight=h.va_weight,
        gender_weight=h.gender_weight, audio_emotion_weight=h.audio_emotion_weight, emotion_loss=h.emotion_loss,
        va_in_emotion=h.va_in_emotion, va_dimensions=tuple(h.dimensions))


def build_model(recipe: Recipe, caches: bool = True, device: torch.device | None = None,
                adapter: bool = True) -> tuple[DualEncoderLLM, object]:
    """Assemble the full model from a recipe whose parts all have a ``path``. ``caches``:
    attach the recipe's encoder-output cache (training; prediction never uses it).
    ``device``: where a 4-bit LLM is loaded (the caller places the rest). ``adapter``
    False: no LoRA around the LLM, whose path then holds the adapter merged in."""
    m = recipe.model
    speech = build_speech_encoder(m.speech)
    para = build_paralinguistic_encoder(m.paralinguistic)
    llm, tokenizer = build_llm(m.llm, recipe.lora if adapter else None, device)
    model = assemble(recipe, speech, para, llm)
    if caches and m.encoder_cache:
        attach_caches(model, recipe)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("model: %s trainable of %s parameters (%.2f%%)", f"{trainable:,}", f"{total:,}",
             100 * trainable / max(total, 1))
    return model, tokenizer
