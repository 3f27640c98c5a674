"""``emoreason estimate-memory RECIPE``: will a recipe fit on a GPU, before anything is downloaded?

The recipe's model is built on the meta device from the parts' configs (the hub ids of
the shipped recipes resolve to the configs stored in ``data/configs/``), so no weights and
no network are needed. Parameters are counted, and the GPU memory of one training process
is estimated for four variants: LoRA and QLoRA, each without and with gradient
checkpointing of the LLM.

* **weights**: every parameter and buffer at the dtype the builders load it in. QLoRA:
  the LLM's linear layers that bitsandbytes quantizes (all but the output embedding) in
  NF4 with double quantization (:func:`nf4_bytes`: 0.5 byte per weight, one byte per block
  of 64 weights, fp32 second-level constants); every other LLM parameter in fp32, because
  ``peft.prepare_model_for_kbit_training`` upcasts them.
* **gradients**: one per trainable parameter, at its dtype.
* **optimizer**: AdamW's two moments per trainable parameter, at its dtype (fp32).
* **activations**: the peak bytes of the tensors alive during one forward and backward
  pass, traced through the model's own code on fake tensors (shapes and dtypes, no data)
  under the recipe's mixed precision, for the tasks whose batches can be the heaviest
  (:func:`tasks_to_trace`); the heaviest is shown. Gradients are excluded here (they are
  their own row). QLoRA adds one dequantized weight, which bitsandbytes materialises in
  the compute dtype for each matmul. To stay fast on a 7B model, the LLM is traced at two
  shallow depths and extrapolated (its layers are identical, so memory is linear in their
  number), and frozen encoders run once per estimate (their outputs are replayed); the
  tests check both shortcuts against full traces, and the trace against a real step.

Lengths: ``data.batch_size`` clips per process, each ``--clip-seconds`` long (default
``model.speech.max_seconds``, or 30 s without one: a batch is as long as its longest clip, and with the
``trim`` mel policy the encoders see exactly that length); a prompt of the chat template,
the task's instruction and the audio tokens (counted with the tokenizer when it is on
disk, else ``--prompt-tokens`` text tokens plus the audio tokens); a target of
``--target-tokens`` (default 128: a rationale of about 90 words; transcripts and labels
are shorter). Not included: the CUDA context and kernel workspaces (about 0.5-1 GiB) and
allocator fragmentation. The trace runs PyTorch's CPU kernels; GPU attention kernels
(flash / memory-efficient) can use less temporary memory in the encoders.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import weakref
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from reasoning.audio import SAMPLE_RATE
from reasoning.model.builders import (DTYPES, _config_dict, _load_dtype, add_lora, assemble,
                                build_paralinguistic_encoder, build_speech_encoder, enable_checkpointing)
from reasoning.training.config import Recipe, load_recipe
from reasoning.model.encoders import WHISPER_HOP, WHISPER_WINDOW_FRAMES
from reasoning.errors import UserError
from reasoning.pretrained import resolve_model_path

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "data" / "configs"
DEFAULT_PROMPT_TOKENS = 64   # Qwen2.5's chat template with its default system line + an instruction
DEFAULT_TARGET_TOKENS = 128  # a rationale of about 90 words
DEFAULT_LABEL_TOKENS = 4     # a label and the end-of-turn marker
NF4_BLOCK = 64               # bitsandbytes 4-bit blocksize
NF4_NESTED_BLOCK = 256       # double quantization: absmax values per second-level block
GIB = 1024 ** 3

VARIANTS = (("LoRA", False, False), ("LoRA+ckpt", False, True),
            ("QLoRA", True, False), ("QLoRA+ckpt", True, True))


def nf4_bytes(numel: int) -> int:
    """Bytes of one weight of ``numel`` values in bitsandbytes NF4 with double quantization:
    packed 4-bit values, a uint8 absmax per block of 64, fp32 absmax per 256 blocks, and the
    per-tensor lookup tables (256 + 16 fp32) and offset (one fp32)."""
    blocks = math.ceil(numel / NF4_BLOCK)
    return math.ceil(numel / 2) + blocks + 4 * math.ceil(blocks / NF4_NESTED_BLOCK) + 4 * (256 + 16 + 1)


# -- configs -------------------------------------------------------------------------------
def stored_config_path(hub_id: str) -> Path:
    """Where the config of a hub id is stored in the repository: data/configs/<org>--<name>/."""
    return CONFIG_DIR / hub_id.replace("/", "--") / "config.json"


def resolve_config(path: str | None, config, where: str) -> dict:
    """The config of a recipe part: its ``config`` field, a local folder's config.json, the
    copy stored in data/configs/, or the Hugging Face cache, in that order."""
    if config is not None:
        return _config_dict(config, where)
    path = resolve_model_path(path)
    if (Path(path) / "config.json").is_file():
        return json.loads((Path(path) / "config.json").read_text())
    stored = stored_config_path(path)
    if stored.is_file():
        return json.loads(stored.read_text())
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, local_files_only=True).to_dict()
    except (OSError, ValueError) as err:
        raise UserError(
            f"{where}.path: no config for {path!r}: it is not a local folder with config.json, "
            f"not stored at {stored}, and not in the Hugging Face cache. Save its config.json "
            f"there (the config only, no weights) or set {where}.path to a local folder.") from err


def local_tokenizer(recipe: Recipe):
    """The LLM's tokenizer when it is on disk (or cached), else None."""
    from transformers import AutoTokenizer

    name = recipe.model.llm.tokenizer or recipe.model.llm.path
    if name is None:
        return None
    try:
        return AutoTokenizer.from_pretrained(resolve_model_path(name), local_files_only=True)
    except (OSError, ValueError):
        return None


# -- the model on the meta device --------------------------------------------------------------
@dataclass
class Skeleton:
    model: nn.Module
    quantized: set = field(default_factory=set)   # ids of weights bitsandbytes would quantize
    compute_dtype: torch.dtype = torch.bfloat16
    largest_quantized: int = 0                     # values of the largest of those weights


def _speech_encoder(recipe: Recipe):
    from transformers import WhisperConfig, WhisperModel

    s = recipe.model.speech
    cfg = WhisperConfig.from_dict(resolve_config(s.path, s.config, "model.speech"))
    return build_speech_encoder(s, WhisperModel(cfg).get_encoder().to(_load_dtype(cfg)))


def _paralinguistic_encoder(recipe: Recipe):
    p = recipe.model.paralinguistic
    if p.kind in ("none", "opensmile"):
        return build_paralinguistic_encoder(p)
    from transformers import AutoConfig, AutoModel

    cfg = AutoConfig.for_model(**resolve_config(p.path, p.config, "model.paralinguistic"))
    if not p.freeze:  # SpecAugment's random masks are data-dependent and cost no memory
        cfg.mask_time_prob = cfg.mask_feature_prob = 0.0
    if p.layer == "auto":  # training fixes one layer at setup; which one costs the same memory
        p = replace(p, layer=-1)
    return build_paralinguistic_encoder(p, AutoModel.from_config(cfg).to(_load_dtype(cfg)))


def _llm(recipe: Recipe, quantized: bool, checkpointing: bool, tokenizer,
         layers: int | None = None) -> tuple[nn.Module, set, torch.dtype]:
    """The LLM as :func:`reasoning.model.builders.build_llm` makes it (with only its first ``layers``
    decoder layers when given); QLoRA is emulated: the weights bitsandbytes would quantize
    stay in the compute dtype and are returned by id."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.quantizers.base import HfQuantizer
    from transformers.quantizers.quantizers_utils import should_convert_module

    m, lora = recipe.model.llm, recipe.lora
    cfg = resolve_config(m.path, m.config, "model.llm")
    if "vocab_size" not in cfg:  # as materialize: the tokenizer decides
        if tokenizer is None:
            raise UserError(f"model.llm: the config has no vocab_size and the tokenizer {m.tokenizer!r} "
                            "is not on disk; add vocab_size to the config.")
        cfg["vocab_size"] = len(tokenizer)
    compute = DTYPES[m.dtype] if not quantized or m.dtype != "float32" else torch.bfloat16
    config = AutoConfig.for_model(**cfg)
    if layers is not None:
        config.num_hidden_layers = layers
        if getattr(config, "layer_types", None):
            config.layer_types = config.layer_types[:layers]
    llm = AutoModelForCausalLM.from_config(config, dtype=compute)
    weights = set()
    if quantized:
        skip = HfQuantizer.get_modules_to_not_convert(llm, None, llm._keep_in_fp32_modules)
        linears = [mod for name, mod in llm.named_modules()
                   if isinstance(mod, nn.Linear) and should_convert_module(name, skip)]
        weights = {id(mod.weight) for mod in linears}
        llm.requires_grad_(False)
        for p in llm.parameters():  # prepare_model_for_kbit_training upcasts what was not quantized
            if id(p) not in weights and p.dtype in (torch.float16, torch.bfloat16):
                p.data = p.data.float()
        for mod in linears:  # bitsandbytes computes in the compute dtype and returns the input's
            mod.forward = lambda x, _f=mod.forward: _f(x.to(compute)).to(x.dtype)
    if checkpointing:
        enable_checkpointing(llm)
    return add_lora(llm, lora, m.path), weights, compute


def build_skeleton(recipe: Recipe, quantized: bool = False, checkpointing: bool = False,
                   tokenizer=None, llm_layers: int | None = None) -> Skeleton:
    """The recipe's :class:`DualEncoderLLM` on the meta device, assembled as
    :func:`reasoning.model.builders.build_model` assembles it (``llm_layers``: keep only the
    LLM's first decoder layers, for a shallow trace)."""
    with torch.device("meta"):
        speech = _speech_encoder(recipe)
        para = _paralinguistic_encoder(recipe)
        llm, weights, compute = _llm(recipe, quantized, checkpointing, tokenizer, llm_layers)
        model = assemble(recipe, speech, para, llm)
    largest = max((p.numel() for p in llm.parameters() if id(p) in weights), default=0)
    return Skeleton(model, weights, compute, largest)


# -- counting ------------------------------------------------------------------------------
GROUPS = (("speech encoder", ("speech_encoder.",)),
          ("paralinguistic encoder", ("paralinguistic_encoder.",)),
          ("LLM", ("llm.",)),
          ("projectors + heads", ("projectors.", "fuse.", "va_head.", "gender_head.", "audio_emotion_head.")))


def count_parameters(model: nn.Module) -> dict[str, tuple[int, int]]:
    """``{group: (total, trainable)}`` over unique parameters, plus ``"all"``."""
    out = {name: [0, 0] for name, _ in GROUPS}
    for name, p in model.named_parameters():  # named_parameters skips tied duplicates
        group = next(g for g, prefixes in GROUPS if name.startswith(prefixes))
        out[group][0] += p.numel()
        out[group][1] += p.numel() if p.requires_grad else 0
    out["all"] = [sum(v[0] for v in out.values()), sum(v[1] for v in out.values())]
    return {k: tuple(v) for k, v in out.items()}


def weight_bytes(skeleton: Skeleton) -> int:
    """Bytes of every unique parameter and buffer; quantized weights in NF4."""
    seen, total = set(), 0
    for t in [*skeleton.model.parameters(), *skeleton.model.buffers()]:
        if id(t) in seen:
            continue
        seen.add(id(t))
        total += nf4_bytes(t.numel()) if id(t) in skeleton.quantized else t.numel() * t.element_size()
    return total


def trainable_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


# -- activations ----------------------------------------------------------------------------
class PeakMemory(TorchDispatchMode):
    """Live bytes of the tensors that ops create inside the mode, and their peak.

    Each storage counts once, from the op that creates it until it is freed (a weak
    reference to the storage says when). Storages that exist before (parameters) are passed
    as ``exclude``; :meth:`release` takes a tensor out of the count (a gradient, which is
    accounted for on its own). ``peaks[phase]`` is the peak within each phase (the caller
    sets ``phase``; here 0 until the LLM first runs, then 1).
    """

    def __init__(self, exclude=()):
        super().__init__()
        self.live = 0
        self.phase = 0
        self.peaks = [0, 0]
        self._sizes = WeakIdKeyDictionary()
        for t in exclude:
            self._sizes[t.untyped_storage()] = [0]

    def _free(self, rec: list) -> None:
        self.live -= rec[0]

    def release(self, t: torch.Tensor) -> None:
        rec = self._sizes.get(t.untyped_storage())
        if rec:
            self.live -= rec[0]
            rec[0] = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.prim.device.default:  # most calls of a fake pass: nothing is allocated
            return out
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                if st not in self._sizes:
                    rec = [st.nbytes()]
                    self._sizes[st] = rec
                    self.live += rec[0]
                    weakref.finalize(st, self._free, rec)
        self.peaks[self.phase] = max(self.peaks[self.phase], self.live)
        return out


def _to_fake(model: nn.Module, mode) -> None:
    """Swap every meta parameter and buffer for a fake CPU tensor of the same shape and dtype
    (tied parameters stay tied)."""
    memo: dict[int, torch.Tensor] = {}
    with mode:
        for mod in model.modules():
            for store, wrap in ((mod._parameters, True), (mod._buffers, False)):
                for key, t in list(store.items()):
                    if t is None:
                        continue
                    if id(t) not in memo:
                        new = torch.empty(t.shape, dtype=t.dtype, device="cpu")
                        memo[id(t)] = nn.Parameter(new, requires_grad=t.requires_grad) if wrap else new
                    store[key] = memo[id(t)]


@dataclass
class Lengths:
    """What one batch of the estimate holds."""
    batch: int
    clip_seconds: float
    audio_tokens: int
    prompt: dict          # task -> prompt tokens, audio tokens included
    target: dict          # task -> target tokens
    labels: int           # emotion labels scored per clip
    label_tokens: int
    exact_prompt: bool    # counted with the tokenizer


def plan_lengths(recipe: Recipe, audio_tokens: int, tokenizer, clip_seconds: float | None = None,
                 prompt_tokens: int | None = None, target_tokens: int = DEFAULT_TARGET_TOKENS) -> Lengths:
    """Batch, clip and sequence lengths of the estimate (see the module docstring)."""
    from reasoning.tasks.prompts import PromptBuilder

    d = recipe.data
    tasks = list(d.tasks)
    exact = tokenizer is not None and prompt_tokens is None
    if exact:
        builder = PromptBuilder.for_recipe(tokenizer, recipe, audio_tokens)
        prompt = {t: len(builder.prompt(t)[0]) for t in tasks}
        label_tokens = max((len(builder.target(x)) for x in d.labels), default=1)
    else:
        text = DEFAULT_PROMPT_TOKENS if prompt_tokens is None else prompt_tokens
        prompt = dict.fromkeys(tasks, text + audio_tokens)
        label_tokens = DEFAULT_LABEL_TOKENS
    target = {t: {"asr": target_tokens, "rationale": target_tokens, "emotion": label_tokens, "va": 0}[t]
              for t in tasks}
    # Without a cut, clips are as long as the corpus makes them: 30 s (one Whisper window) is
    # the estimate's default, --clip-seconds gives the corpus's longest.
    seconds = (recipe.model.speech.max_seconds or 30.0) if clip_seconds is None else clip_seconds
    return Lengths(d.batch_size, seconds, audio_tokens, prompt, target, len(d.labels), label_tokens, exact)


def tasks_to_trace(recipe: Recipe, lengths: Lengths) -> list[str]:
    """The tasks whose batches can be the heaviest: the next-token task with the longest
    prompt + target (asr, rationale and plain emotion batches differ only in lengths), the
    emotion task when it also scores every label (soft targets), and `va` only when no
    next-token task is trained (its pass is the prompt part of a next-token pass)."""
    lm = [t for t in lengths.prompt if t != "va"]
    out = [max(lm, key=lambda t: (lengths.prompt[t] + lengths.target[t], t))] if lm else ["va"]
    if "emotion" in lengths.prompt and recipe.heads.emotion_loss in ("soft", "both") and lengths.labels:
        out.append("emotion")
    return list(dict.fromkeys(out))


def _batch(task: str, lengths: Lengths, recipe: Recipe) -> dict:
    """A fake batch of ``task`` with the planned lengths (call inside the fake mode)."""
    B, P, T = lengths.batch, lengths.prompt[task], lengths.target[task]
    samples = int(lengths.clip_seconds * SAMPLE_RATE)
    audio = torch.zeros(B, P, dtype=torch.bool)
    audio[:, 1:1 + lengths.audio_tokens] = True
    batch = {"task": task, "waves": torch.zeros(B, samples), "wave_lengths": torch.full((B,), samples),
             "input_ids": torch.zeros(B, P, dtype=torch.long), "attention_mask": torch.ones(B, P, dtype=torch.long),
             "audio_mask": audio, "target_ids": torch.zeros(B, T, dtype=torch.long),
             "target_mask": torch.ones(B, T, dtype=torch.long), "gender": torch.full((B,), -1)}
    if T > 1:  # targets of a batch differ in length: the LLM runs with a padding mask
        batch["target_mask"][0, -1] = 0
    if task in ("va", "emotion"):  # emotion batches train the VA head with heads.va_in_emotion
        batch["va"] = torch.zeros(B, 2)
    if task == "emotion" and lengths.labels:
        batch["label_ids"] = torch.zeros(lengths.labels, lengths.label_tokens, dtype=torch.long)
        batch["label_mask"] = torch.ones(lengths.labels, lengths.label_tokens, dtype=torch.long)
        batch["votes"] = torch.full((B, lengths.labels), 1.0 / lengths.labels)
        batch["label_index"] = torch.zeros(B, dtype=torch.long)
    return batch


def _fake_mel(encoder, batch_size: int, samples: int):
    """Whisper's log-mel features read the clips' lengths (values a fake trace has not); the trace
    needs only their shape."""
    if encoder.mel_policy == "pad30":
        frames_total = WHISPER_WINDOW_FRAMES
    else:
        frames_total = -(-samples // (2 * WHISPER_HOP)) * 2
    n_mels = encoder.feature_extractor.feature_size

    def mel(waves, wave_lengths):
        return (torch.zeros(batch_size, n_mels, frames_total),
                torch.full((batch_size,), -(-samples // WHISPER_HOP)))
    return mel


def _fake_opensmile(encoder, batch_size: int, samples: int):
    """openSMILE's descriptors come from a native library; the trace runs the trainable
    encoder on descriptors of the right shape (25 per 10 ms frame)."""
    frames = max(samples // WHISPER_HOP, 1)

    def forward(waves, wave_lengths):
        x = torch.zeros(batch_size, encoder.norm.num_features, frames)
        x = encoder.net(encoder.norm(x))
        return x.transpose(1, 2), torch.full((batch_size,), frames)
    return forward


@dataclass
class _TensorSpec:
    shape: tuple
    dtype: torch.dtype


def _recorder(store: dict, key: str):
    """A forward hook that keeps the shapes and dtypes of a module's outputs."""
    def hook(module, args, out):
        leaves, spec = tree_flatten(out)
        store[key] = ([_TensorSpec(tuple(t.shape), t.dtype) if isinstance(t, torch.Tensor) else t
                       for t in leaves], spec)
    return hook


def _replayer(entry):
    """A forward that returns new tensors shaped like the recorded outputs."""
    from torch.utils._pytree import tree_unflatten

    leaves, spec = entry

    def forward(*args, **kwargs):
        return tree_unflatten([torch.zeros(x.shape, dtype=x.dtype) if isinstance(x, _TensorSpec) else x
                               for x in leaves], spec)
    return forward


def _frozen_encoders(model) -> dict:
    """The encoders no gradient reaches: their outputs are the same in every trace."""
    parts = {"speech": model.speech_encoder, "paralinguistic": getattr(model.paralinguistic_encoder, "model", None)}
    return {k: m for k, m in parts.items() if m is not None and not any(p.requires_grad for p in m.parameters())}


def trace_step(skeleton: Skeleton, recipe: Recipe, lengths: Lengths, cache: dict | None = None,
               fake: bool = True) -> tuple[dict, dict]:
    """Trace one forward and backward pass per task (see :func:`tasks_to_trace`) on fake
    tensors. Returns ``{task: (peak before the LLM runs, peak from then on)}`` in bytes, and
    the error of each task whose step fails. Consumes the skeleton: its parameters become
    fake tensors (``fake=False``: run a model with real weights on real tensors instead,
    which the tests use to check the fake trace).

    Frozen encoders compute the same outputs in every trace of an estimate, so ``cache``
    keeps their outputs' shapes and the peak while they run, from the first trace on; later
    traces create tensors of those shapes instead of running them (the slow part).
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    cache = {} if cache is None else cache
    outputs = cache.setdefault("outputs", {})

    model = skeleton.model
    model.train()
    model.gender_weight = 0.0  # a (B, H) -> 2 layer whose data-dependent row selection cannot be traced
    ssl = getattr(model.paralinguistic_encoder, "model", None)
    if ssl is not None:  # equal-length clips: the all-ones mask only adds data-dependent indexing
        ssl.register_forward_pre_hook(lambda mod, args, kw: (args, {**kw, "attention_mask": None}),
                                      with_kwargs=True)
    samples = int(lengths.clip_seconds * SAMPLE_RATE)
    model.speech_encoder.mel = _fake_mel(model.speech_encoder, lengths.batch, samples)
    if recipe.model.paralinguistic.kind == "opensmile":
        model.paralinguistic_encoder.forward = _fake_opensmile(model.paralinguistic_encoder, lengths.batch, samples)
    mode = FakeTensorMode() if fake else contextlib.nullcontext()
    if fake:
        _to_fake(model, mode)
    params = [*model.parameters(), *model.buffers()]
    precision = recipe.train.mixed_precision
    peaks, failed = {}, {}
    for task in tasks_to_trace(recipe, lengths):
        tracker = PeakMemory(exclude=params)
        hooks = [p.register_post_accumulate_grad_hook(lambda p: tracker.release(p.grad))
                 for p in model.parameters() if p.requires_grad]
        hooks.append(model.llm.register_forward_pre_hook(lambda *_: setattr(tracker, "phase", 1)))
        replayed = False
        for key, encoder in _frozen_encoders(model).items():
            if key in outputs:
                encoder.forward, replayed = _replayer(outputs[key]), True
            else:
                hooks.append(encoder.register_forward_hook(_recorder(outputs, key)))
        autocast = (torch.autocast("cpu", dtype=DTYPES["bfloat16" if precision == "bf16" else "float16"])
                    if precision != "no" else contextlib.nullcontext())
        try:
            with mode, tracker:
                batch = _batch(task, lengths, recipe)
                with autocast:
                    losses = model(batch)
                losses["loss"].backward()
            before = max(tracker.peaks[0], cache.get("before", 0)) if replayed else tracker.peaks[0]
            cache.setdefault("before", before)
            peaks[task] = (before, tracker.peaks[1])
        except Exception as err:  # noqa: BLE001 - a step that fails here fails in training too: report it
            failed[task] = f"{type(err).__name__}: {err}"
            log.warning("a `%s` training step fails: %s", task, failed[task])
        finally:
            for h in hooks:
                h.remove()
            for p in model.parameters():
                p.grad = None
    return peaks, failed


TRACE_DEPTHS = (2, 4)


def trace_activations(recipe: Recipe, quantized: bool, checkpointing: bool, tokenizer, lengths: Lengths,
                      full_depth: int, depths: tuple | None = TRACE_DEPTHS,
                      cache: dict | None = None) -> tuple[dict, dict]:
    """Peak activation bytes per traced task, and the errors of failing tasks.

    The LLM's decoder layers are identical, so from the moment it runs, memory is linear in
    their number: the step is traced with the LLM cut to ``depths`` (two depths) and the LLM
    phase extrapolated to ``full_depth`` (``depths=None``: trace the full depth). The
    encoders run before the LLM at full size; the peak is the larger of the two phases.
    QLoRA adds one weight dequantized in the compute dtype, as bitsandbytes does per matmul.
    """
    if depths is None or full_depth <= max(depths):
        depths = (full_depth,)
    traces, failed = [], {}
    for depth in depths:
        skeleton = build_skeleton(recipe, quantized, checkpointing, tokenizer, llm_layers=depth)
        peaks, errors = trace_step(skeleton, recipe, lengths, cache)
        traces.append(peaks)
        failed.update(errors)
    dequantized = skeleton.largest_quantized * torch.finfo(skeleton.compute_dtype).bits // 8
    out = {}
    for task in traces[0]:
        if not all(task in t for t in traces):
            continue
        before = traces[-1][task][0]
        llm = traces[-1][task][1]
        if len(depths) == 2:
            (d1, d2), (a, b) = depths, (traces[0][task][1], traces[1][task][1])
            llm = b + (b - a) * (full_depth - d2) // (d2 - d1)
        out[task] = max(before, llm) + dequantized
    return out, failed


# -- the estimate ----------------------------------------------------------------------------
@dataclass
class VariantEstimate:
    """GPU memory of one training process for one variant, in bytes."""
    name: str
    weights: int
    gradients: int
    optimizer: int
    activations: int
    heaviest_task: str
    per_task: dict
    failed: dict           # task -> the error its training step raises

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations


@dataclass
class MemoryEstimate:
    recipe: str
    parts: dict            # part -> the model it is built from
    parameters: dict       # group -> (total, trainable)
    lengths: Lengths
    mixed_precision: str
    current: str           # the variant the recipe itself trains
    variants: list


def _part_names(recipe: Recipe) -> dict:
    m = recipe.model

    def name(part, config):
        return part if part is not None else f"config {config}" if isinstance(config, str) else "config"
    para = m.paralinguistic
    return {"speech encoder": name(m.speech.path, m.speech.config),
            "paralinguistic encoder": name(para.path, para.config) if para.kind == "ssl" else para.kind,
            "LLM": name(m.llm.path, m.llm.config)}


def estimate_memory(recipe: Recipe, clip_seconds: float | None = None, prompt_tokens: int | None = None,
                    target_tokens: int = DEFAULT_TARGET_TOKENS, variants=VARIANTS,
                    recipe_name: str = "", trace_depths: tuple | None = TRACE_DEPTHS,
                    replay_encoders: bool = True) -> MemoryEstimate:
    """Parameters and per-process GPU memory of ``recipe`` for each of ``variants``
    (``(name, quantized, checkpointing)``; see the module docstring)."""
    tokenizer = local_tokenizer(recipe)
    params = lengths = None
    cache: dict = {}  # frozen encoders' outputs, shared by every trace
    results = []
    sizes: dict[bool, tuple] = {}  # quantized -> (weights, gradients, LLM depth); checkpointing changes none
    for name, quantized, checkpointing in variants:
        if quantized not in sizes:
            skeleton = build_skeleton(recipe, quantized, False, tokenizer)
            if params is None:
                params = count_parameters(skeleton.model)
                lengths = plan_lengths(recipe, skeleton.model.num_audio_tokens, tokenizer, clip_seconds,
                                       prompt_tokens, target_tokens)
            sizes[quantized] = (weight_bytes(skeleton), trainable_bytes(skeleton.model),
                                skeleton.model.llm.get_base_model().config.num_hidden_layers)
        weights, grads, depth = sizes[quantized]
        peaks, failed = trace_activations(recipe, quantized, checkpointing, tokenizer, lengths, depth,
                                          trace_depths, cache if replay_encoders else None)
        heaviest = max(peaks, key=peaks.get) if peaks else "-"
        results.append(VariantEstimate(name, weights, grads, 2 * grads, peaks.get(heaviest, 0), heaviest,
                                       peaks, failed))
        log.debug("%s: %s", name, results[-1])
    return MemoryEstimate(recipe_name, _part_names(recipe), params, lengths, recipe.train.mixed_precision,
                          recipe_variant(recipe), results)


def recipe_variant(recipe: Recipe) -> str:
    """The name, among :data:`VARIANTS`, of the recipe's own setting (e.g. ``QLoRA+ckpt``)."""
    llm = recipe.model.llm
    return ("QLoRA" if llm.quantization == "4bit" else "LoRA") + ("+ckpt" if llm.gradient_checkpointing else "")


def _count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return str(n)


def format_estimate(est: MemoryEstimate) -> str:
    """The estimate as the table ``emoreason estimate-memory`` prints."""
    L = est.lengths
    lines = [f"Memory estimate for {est.recipe or 'the recipe'} (one training process)", "",
             f"{'parameters':<26}{'total':>12}{'trainable':>12}  model"]
    for group, (total, trainable) in est.parameters.items():
        model = est.parts.get(group, "")
        lines.append(f"  {group:<24}{_count(total):>12}{_count(trainable):>12}  {model}")
    prompts = sorted(set(L.prompt.values()))
    prompt = f"{prompts[0]}" if len(prompts) == 1 else f"{prompts[0]}-{prompts[-1]}"
    how = "counted with the tokenizer" if L.exact_prompt else \
        "text tokens estimated: no tokenizer on disk, see --prompt-tokens"
    lines += ["", f"batch: {L.batch} clips of {L.clip_seconds:g} s per process; prompt {prompt} tokens "
                  f"({L.audio_tokens} of them audio; {how}); target up to {max(L.target.values())} tokens; "
                  f"mixed precision {est.mixed_precision}", ""]
    names = [v.name + ("*" if v.name == est.current else "") for v in est.variants]
    width = max(12, *(len(n) + 2 for n in names))
    unit, scale = ("GiB", GIB) if max(v.total for v in est.variants) >= GIB else ("MiB", 1024 ** 2)
    lines.append(f"{f'GPU memory ({unit})':<26}" + "".join(f"{n:>{width}}" for n in names))
    rows = (("weights", "weights"), ("gradients", "gradients"), ("optimizer (AdamW)", "optimizer"),
            ("activations (peak)", "activations"), ("total", "total"))
    for label, attr in rows:
        if label == "total":
            lines.append("  " + "-" * (24 + width * len(names)))
        lines.append(f"  {label:<24}" + "".join(f"{getattr(v, attr) / scale:>{width}.2f}" for v in est.variants))
    lines.append(f"  {'heaviest task':<24}" + "".join(f"{v.heaviest_task:>{width}}" for v in est.variants))
    for v in est.variants:
        for task, err in v.failed.items():
            lines.append(f"  ! {v.name}: one `{task}` training step fails here (and would in training), "
                         f"so it is not counted: {err}")
    lines += ["", "* the recipe's own setting. ckpt: gradient checkpointing of the LLM. Add about 0.5-1 GiB",
              "  for the CUDA context and kernel workspaces. DDP holds all of this on every GPU; FSDP full",
              "  shard and DeepSpeed ZeRO-3 divide weights, gradients and optimizer state by the number",
              "  of GPUs (ZeRO-2: gradients and optimizer state only), not the activations."]
    return "\n".join(lines)


def estimate_to_dict(est: MemoryEstimate) -> dict:
    """A JSON-ready form of the estimate (bytes, counts)."""
    out = asdict(est)
    for v, d in zip(est.variants, out["variants"]):
        d["total"] = v.total
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="a recipe YAML (see recipes/)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted recipe overrides, e.g. data.batch_size=4 model.llm.gradient_checkpointing=true")
    parser.add_argument("--clip-seconds", type=float, default=None,
                        help="length of every clip of the batch (default: model.speech.max_seconds, the worst case, or 30 s without one)")
    parser.add_argument("--prompt-tokens", type=int, default=None,
                        help=f"text tokens of the prompt, audio tokens excluded (default: counted with the "
                             f"tokenizer when it is on disk, else {DEFAULT_PROMPT_TOKENS})")
    parser.add_argument("--target-tokens", type=int, default=DEFAULT_TARGET_TOKENS,
                        help="tokens of the longest target text (asr, rationale)")
    parser.add_argument("--variant", action="append", choices=[v[0] for v in VARIANTS],
                        help="estimate only this variant (repeatable; default: all four)")
    parser.add_argument("--json", action="store_true", help="print the estimate as JSON (bytes)")


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.overrides)
    if args.clip_seconds is not None and not 0 < args.clip_seconds <= 30:
        raise UserError("--clip-seconds must be in (0, 30]: Whisper's encoder window is 30 s.")
    variants = [v for v in VARIANTS if not args.variant or v[0] in args.variant]
    est = estimate_memory(recipe, args.clip_seconds, args.prompt_tokens, args.target_tokens, variants,
                          recipe_name=str(args.recipe))
    print(json.dumps(estimate_to_dict(est), indent=1) if args.json else format_estimate(est))
    return 0
