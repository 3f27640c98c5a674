"""Recipes: YAML files loaded into typed dataclasses.

A recipe has these sections: ``model``, ``lora``, ``heads``, ``data``, ``prompt``, ``augment``,
``train``, ``eval`` and ``grpo`` (the reinforcement stage after training, ``emoreason grpo``). Every field has help text, which ``emoreason train --help`` prints. Loading is strict:

* an unknown key is an error that names the key and the closest valid one;
* ``section.field=value`` overrides from the command line win over the file (the value
  is parsed as YAML, so ``train.lr=1e-4`` is a float and ``data.tasks={emotion: 1}`` a map);
* cross-field checks run in ``__post_init__`` before any model is built.

Relative paths in a recipe are relative to the current directory (recipes are launched
from the repository root, as the command at the top of each recipe shows).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reasoning.errors import RecipeError
from reasoning.tasks.prompts import INSTRUCTIONS
from reasoning.training.rewards import check_weights

RECIPE_NAME = "recipe.yaml"
TASKS = ("asr", "emotion", "va", "rationale")
SCHEDULES = ("round_robin", "weighted", "phased")
TRACKERS = ("tensorboard", "wandb", "trackio")  # train.log_with: accelerate's names (LoggerType)
# Parts a phase of the `phased` schedule may train.
PARTS = ("speech", "paralinguistic", "llm", "heads")
TRANSCRIPT_MODES = ("none", "gold", "asr")
EVIDENCE_MODES = ("none", "measured")
RATIONALE_ORDERS = ("label_then_rationale", "rationale_then_label")
LAYER_TARGETS = ("emotion", "valence", "arousal")
# `heads.dimensions`: what the VA head predicts, in this order (a VAD head adds dominance).
HEAD_DIMENSIONS = (["valence", "arousal"], ["valence", "arousal", "dominance"])
# augment.<key>: (lowest, highest) allowed value, and the unit for messages.
# grpo.loss_type: the losses of TRL's GRPOTrainer that normalise per sequence or per token
# (the others need TRL's generation batch bookkeeping).
GRPO_LOSSES = ("grpo", "bnpo", "dr_grpo")
GRPO_SCALES = ("group", "batch", "none")
AUGMENT_RANGES = {"speed": (0.5, 2.0, "x"), "tempo": (0.5, 2.0, "x"), "pitch": (-12.0, 12.0, "semitones"),
                  "snr_db": (-10.0, 80.0, "dB"), "gain_db": (-40.0, 40.0, "dB")}


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with help text (mutable defaults are copied per instance)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class SpeechEncoderConfig:
    path: str | None = _f(None, "Whisper checkpoint: hub id or local folder. Null: build from `config`.")
    config: dict | str | None = _f(None, "WhisperConfig fields (a map) or a config.json path, for a randomly initialised encoder.")
    num_tokens: int = _f(100, "Speech tokens per clip given to the LLM (the encoder output is pooled to this many).")
    freeze: bool = _f(True, "Keep the Whisper encoder frozen (only its projector trains).")
    layer: int = _f(-1, "Whisper hidden layer fed to the projector: 0 = the convolutions, i = the output of layer i, -1 = the final output. Layers above it are not run.")
    mel_policy: str = _f("trim", "`trim`: pad mel frames only to the longest clip of the batch (short clips cost little); `pad30`: pad every clip to Whisper's 30 s window, as in pre-training.")
    max_seconds: float | None = _f(None, "Null: clips are used whole, and Whisper encodes a clip longer than its 30 s window in 30 s windows whose frames are joined. A number: clips are cut to their first `max_seconds` (after augmentation) with a warning, and clips longer than it are left out of the asr task, whose transcript covers the whole clip.")

    def __post_init__(self) -> None:
        if self.mel_policy not in ("trim", "pad30"):
            raise RecipeError(f"model.speech.mel_policy: {self.mel_policy!r} is not one of trim, pad30.")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise RecipeError("model.speech.max_seconds must be above 0, or null to use clips whole.")


@dataclass
class ParalinguisticConfig:
    kind: str = _f("ssl", "`ssl`: a transformers speech SSL model (WavLM, HuBERT, wav2vec2); `opensmile`: frame-level eGeMAPS low-level descriptors through a small trainable encoder; `none`.")
    path: str | None = _f(None, "SSL checkpoint: hub id or local folder. Null: build from `config`.")
    config: dict | str | None = _f(None, "SSL model config (a map with `model_type`, or a config.json path) for a random init.")
    layer: int | str = _f("weighted", "Hidden layer to use (0 = the CNN features, -1 = last), `weighted` for learned softmax weights over all layers, or `auto`: the layer whose mean-pooled output correlates best with `auto_target` on the training rows (`emoreason select-layer`; arXiv 2503.22711), chosen at setup and cached in the run folder.")
    auto_target: str = _f("emotion", "`layer: auto`: the target the layer must carry: emotion, valence or arousal.")
    auto_max_clips: int = _f(200, "`layer: auto`: training clips (a seeded subset) the saliency is measured on.")
    num_tokens: int = _f(10, "Paralinguistic tokens per clip given to the LLM.")
    freeze: bool = _f(True, "Keep the SSL model frozen (its layer weights and projector still train).")
    hidden_size: int = _f(128, "Width of the trainable encoder over openSMILE descriptors (kind: opensmile).")
    cache_mb: float = _f(256.0, "kind: opensmile: memory for the descriptors of clips already seen (about 10 kB per second of audio), per process; the least recently used are dropped beyond it (an augmented clip is a new clip every epoch); 0: none kept.")

    def __post_init__(self) -> None:
        if self.kind not in ("ssl", "opensmile", "none"):
            raise RecipeError(f"model.paralinguistic.kind: {self.kind!r} is not one of ssl, opensmile, none.")
        if isinstance(self.layer, str) and self.layer not in ("weighted", "auto"):
            raise RecipeError(f"model.paralinguistic.layer: {self.layer!r} must be an integer, `weighted` or `auto`.")
        if self.layer == "auto" and self.kind != "ssl":
            raise RecipeError(f"model.paralinguistic.layer: `auto` picks a hidden layer of an SSL model, but kind is "
                              f"{self.kind!r}: set kind: ssl or give layer an integer.")
        if self.auto_target not in LAYER_TARGETS:
            raise RecipeError(f"model.paralinguistic.auto_target: {self.auto_target!r} is not one of "
                              f"{', '.join(LAYER_TARGETS)}.")
        if self.auto_max_clips < 2:
            raise RecipeError("model.paralinguistic.auto_max_clips must be at least 2.")
        if self.cache_mb < 0:
            raise RecipeError("model.paralinguistic.cache_mb must be 0 (no cache) or more.")


@dataclass
class LLMConfig:
    path: str | None = _f(None, "Causal LM: hub id or local folder. Null: build from `config`.")
    config: dict | str | None = _f(None, "LM config (a map with `model_type`, or a config.json path) for a random init.")
    tokenizer: str | None = _f(None, "Tokenizer folder or hub id; defaults to `path`. It must have a chat template.")
    dtype: str = _f("float32", "Weights dtype of the frozen LLM: float32, bfloat16 or float16.")
    quantization: str = _f("none", "`4bit`: QLoRA, the frozen LLM in NF4 through bitsandbytes; `none`.")
    gradient_checkpointing: bool = _f(False, "Recompute LLM activations in the backward pass to save memory.")

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise RecipeError(f"model.llm.dtype: {self.dtype!r} is not one of float32, bfloat16, float16.")
        if self.quantization not in ("none", "4bit"):
            raise RecipeError(f"model.llm.quantization: {self.quantization!r} is not one of none, 4bit.")


@dataclass
class ModelConfig:
    speech: SpeechEncoderConfig = _f(None, "The Whisper acoustic encoder.", )
    paralinguistic: ParalinguisticConfig = _f(None, "The paralinguistic encoder.")
    llm: LLMConfig = _f(None, "The language model.")
    fusion: str = _f("sequence", "`sequence`: speech then paralinguistic tokens along the sequence; `feature`: both pooled to the speech budget and concatenated along features.")
    projector_hidden: int = _f(512, "Hidden width of each encoder's two-layer MLP projector.")
    encoder_cache: str | None = _f(None, "Folder for the outputs of frozen encoders, computed once per clip and reused across epochs and tasks (null: off).")

    def __post_init__(self) -> None:
        if self.fusion not in ("sequence", "feature"):
            raise RecipeError(f"model.fusion: {self.fusion!r} is not one of sequence, feature.")


@dataclass
class LoraConfig:
    r: int = _f(16, "LoRA rank.")
    alpha: int = _f(32, "LoRA alpha (scale = alpha / r).")
    dropout: float = _f(0.05, "Dropout on the LoRA input.")
    target_modules: list = _f(["q_proj", "k_proj", "v_proj", "o_proj"], "LLM module names to adapt.")
    modules_to_save: list = _f([], "LLM modules trained in full and saved with the adapter (peft `modules_to_save`), e.g. [lm_head].")


@dataclass
class HeadsConfig:
    va_pooling: str = _f("mean", "Pooling of hidden states over the audio positions: `mean` or `attention`.")
    va_layer: int = _f(-1, "LLM hidden layer the VA head reads (-1 = last).")
    va_loss: str = _f("ccc", "`ccc` (1 - concordance correlation, per dimension), `mse`, or `ccc_mse`: their sum. CCC alone says almost nothing about the mean while the predictions barely vary (as they do at the start with a real LLM), so Adam's steps let the mean drift away from the targets; the MSE term holds it to them.")
    dimensions: list = _f(["valence", "arousal"], "What the VA head predicts: [valence, arousal], or [valence, arousal, dominance] (a VAD head, for corpora annotated with dominance such as MSP-Podcast). The CCC loss is the mean over these dimensions, and a `va` example needs every one of them.")
    va_weight: float = _f(1.0, "Weight of the VA loss in `va` batches.")
    gender_weight: float = _f(0.0, "Weight of the auxiliary gender loss (0 turns the gender head off).")
    audio_emotion_weight: float = _f(0.0, "Weight of an auxiliary emotion loss in emotion batches: a linear classifier on the mean of the audio tokens the LLM reads (the projectors' output), against the gold label. It gives the projectors a direct emotion signal, where through the LLM alone a frozen encoder's stream is learned slowly (eval/results.md). Training only: predictions still come from the label scores. 0 turns it off.")
    va_in_emotion: bool = _f(False, "Train the VA head in emotion batches too, on the hidden states of the pass that scores the label (the audio comes before every instruction, so under the causal mask those states are the VA prompt's): a VA update at every emotion step at no extra LLM cost, and a recipe may then drop the `va` task. Rows without VA targets are left out of that loss.")
    emotion_loss: str = _f("lm", "`lm`: next-token loss on the label; `soft`: KL from the annotators' vote distribution (`emotion_votes`; a one-hot of the gold label for rows without votes) to the label scores, a cross-entropy over the label set; `both`: the two, from one pass.")

    def __post_init__(self) -> None:
        if self.va_pooling not in ("mean", "attention"):
            raise RecipeError(f"heads.va_pooling: {self.va_pooling!r} is not one of mean, attention.")
        if self.va_loss not in ("ccc", "mse", "ccc_mse"):
            raise RecipeError(f"heads.va_loss: {self.va_loss!r} is not one of ccc, mse, ccc_mse.")
        if self.emotion_loss not in ("lm", "soft", "both"):
            raise RecipeError(f"heads.emotion_loss: {self.emotion_loss!r} is not one of lm, soft, both.")
        if self.dimensions not in HEAD_DIMENSIONS:
            raise RecipeError(f"heads.dimensions: {self.dimensions!r} is not one of "
                              + " or ".join(f"[{', '.join(d)}]" for d in HEAD_DIMENSIONS) + ".")


@dataclass
class DataConfig:
    train_manifest: str = _f("", "Manifest (JSON Lines) to train on.")
    train_split: list = _f([], "Splits of the train manifest to train on; empty = every row.")
    eval_manifest: str | None = _f(None, "Manifest to evaluate on; null = the train manifest.")
    eval_split: list = _f([], "Splits of the eval manifest to evaluate on; empty = every row not trained on.")
    labels: list = _f([], "The emotion label set, in order. Rows with other labels are not used for the emotion task.")
    tasks: dict = _f({"asr": 1.0, "emotion": 1.0, "va": 1.0, "rationale": 1.0}, "Tasks to train and their weights.")
    schedule: str = _f("round_robin", "`round_robin`, `weighted` (by example count with `temperature`) or `phased`.")
    temperature: float = _f(1.0, "`weighted` schedule: task probability ∝ (weight * examples) ** (1 / temperature).")
    phases: list = _f([], "`phased` schedule: a list of {tasks: [...], train: [parts]} epochs; parts are speech, paralinguistic, llm, heads. A final joint epoch of every task and part follows.")
    batch_size: int = _f(8, "Examples per batch and process.")
    group_by_length: bool = _f(True, "Batch clips of similar duration together (shuffled within chunks of 50 batches) so that little is padded.")
    balance: str = _f("none", "Emotion task, each epoch: `undersample` every label to the rarest one's count; `weighted`: draw examples with replacement, weighted by inverse label frequency; `none`.")
    num_workers: int = _f(0, "DataLoader worker processes per training process that read, augment and collate the next batches while the model trains (0: in the training process, between steps). Each worker holds its own `audio_cache_mb`.")
    prefetch_factor: int = _f(2, "Batches each worker prepares ahead (with num_workers > 0).")
    audio_cache_mb: float = _f(512.0, "Memory for decoded clips per process (and per DataLoader worker): the least recently used clips are dropped beyond it, so a large corpus is read from disk again instead of filling memory; 0: no clip is kept.")

    def __post_init__(self) -> None:
        unknown = set(self.tasks) - set(TASKS)
        if unknown:
            raise RecipeError(f"data.tasks: unknown task(s) {sorted(unknown)}; tasks are {', '.join(TASKS)}.")
        if not self.tasks:
            raise RecipeError("data.tasks is empty: name at least one of " + ", ".join(TASKS) + ".")
        if self.schedule not in SCHEDULES:
            raise RecipeError(f"data.schedule: {self.schedule!r} is not one of {', '.join(SCHEDULES)}.")
        if self.schedule == "phased" and not self.phases:
            raise RecipeError("data.schedule is `phased` but data.phases is empty: list the phases, "
                              "e.g. [{tasks: [asr], train: [speech]}, {tasks: [emotion, va], train: [paralinguistic, heads]}].")
        for i, phase in enumerate(self.phases):
            if set(phase) - {"tasks", "train"}:
                raise RecipeError(f"data.phases[{i}]: only `tasks` and `train` are allowed, got {sorted(phase)}.")
            bad = set(phase.get("tasks", [])) - set(self.tasks)
            if bad:
                raise RecipeError(f"data.phases[{i}].tasks: {sorted(bad)} not in data.tasks.")
            bad = set(phase.get("train", [])) - set(PARTS)
            if bad:
                raise RecipeError(f"data.phases[{i}].train: unknown part(s) {sorted(bad)}; parts are {', '.join(PARTS)}.")
        if self.balance not in ("none", "undersample", "weighted"):
            raise RecipeError(f"data.balance: {self.balance!r} is not one of none, undersample, weighted.")
        if self.batch_size < 1:
            raise RecipeError("data.batch_size must be at least 1.")
        if self.num_workers < 0:
            raise RecipeError("data.num_workers must be 0 (no worker processes) or more.")
        if self.prefetch_factor < 1:
            raise RecipeError("data.prefetch_factor must be at least 1.")
        if self.audio_cache_mb < 0:
            raise RecipeError("data.audio_cache_mb must be 0 (no cache) or more.")


@dataclass
class PromptConfig:
    transcript: str = _f("none", "Transcript as a second modality (arXiv 2506.10930), written before the audio in the emotion, va and rationale prompts: `none`; `gold`: the manifest's transcript (every row needs one); `asr`: the gold transcript in training, and at evaluation the model's own transcript (a first ASR pass with the same model; needs the asr task).")
    rationale_order: str = _f("label_then_rationale", "Target of the rationale task (arXiv 2305.17422): `label_then_rationale` (\"angry: loud voice...\") or `rationale_then_label` (\"loud voice..., so: angry\").")
    two_step: bool = _f(False, "Two-step prediction (arXiv 2305.17422): valence and arousal are written into the emotion and rationale prompts (\"Valence +0.3, arousal -0.2.\"): the gold values in training, the VA head's prediction at evaluation, where the gold values give a second system `model-oracle-va`. Needs the va task.")
    evidence: str = _f("none", "Measured cues as words in the emotion, va and rationale prompts, before the audio (as SpeechCueLLM, arXiv 2407.21315, describes the voice to the LLM): `none`; `measured`: each cue of the clip's evidence that departs from its speaker's baseline, in the template rationales' own words (\"Against this speaker: a very wide pitch range, a very quiet voice.\"). Every row needs measured evidence (`emoreason evidence`); `explain` and `demo` measure each clip alone, against the corpus the model was trained on.")
    system: str | None = _f(None, "System message of every prompt; null: the chat template's default (SmolLM2's and Qwen2.5's add about 20 tokens), \"\": an empty one.")
    asr_max_tokens: int = _f(48, "`transcript: asr`: length limit of the model's own transcript.")
    instructions: dict = _f({}, "Task -> instruction text replacing the default one (reasoning/tasks/prompts.py INSTRUCTIONS), `{labels}` standing for the label list: e.g. `{emotion: \"Emotion?\"}`. Label scoring needs no list of labels in the prompt, and on a CPU every prompt token costs at each step. Each task's instruction must differ from the others': it is what tells the tasks apart.")

    def __post_init__(self) -> None:
        for task, text in self.instructions.items():
            if task not in INSTRUCTIONS:
                raise RecipeError(f"prompt.instructions: {task!r} is not a task; tasks: {', '.join(INSTRUCTIONS)}.")
            if not isinstance(text, str) or not text.strip():
                raise RecipeError(f"prompt.instructions.{task} must be a non-empty text.")
            try:
                text.format(labels="")
            except (KeyError, IndexError, ValueError) as err:
                raise RecipeError(f"prompt.instructions.{task}: {text!r} has a placeholder that cannot be "
                                  f"filled ({err!r}); only {{labels}} is known (write {{{{ and }}}} for braces).") from None
        merged = {**INSTRUCTIONS, **self.instructions}
        for task in self.instructions:
            for other, text in merged.items():
                if other != task and text == merged[task]:
                    pair = " and ".join(sorted((task, other), key=list(INSTRUCTIONS).index))
                    raise RecipeError(f"prompt.instructions: {pair} would have the same instruction "
                                      f"{text!r}; give each task its own.")
        if self.transcript not in TRANSCRIPT_MODES:
            raise RecipeError(f"prompt.transcript: {self.transcript!r} is not one of {', '.join(TRANSCRIPT_MODES)}.")
        if self.evidence not in EVIDENCE_MODES:
            raise RecipeError(f"prompt.evidence: {self.evidence!r} is not one of {', '.join(EVIDENCE_MODES)}.")
        if self.rationale_order not in RATIONALE_ORDERS:
            raise RecipeError(f"prompt.rationale_order: {self.rationale_order!r} is not one of "
                              f"{', '.join(RATIONALE_ORDERS)}.")
        if self.asr_max_tokens < 1:
            raise RecipeError("prompt.asr_max_tokens must be at least 1.")


@dataclass
class AugmentConfig:
    p: float = _f(0.0, "Probability that each transform below is applied to a training example (0: no augmentation). Never applied at evaluation, nor when encoder outputs are cached (arXiv 2510.12819 used time stretch and pitch shift).")
    speed: list | None = _f(None, "[lowest, highest] speed factor (tempo and pitch together, by resampling), e.g. [0.9, 1.1]; within [0.5, 2]. Null: off.")
    tempo: list | None = _f(None, "[lowest, highest] tempo factor, pitch kept (time stretch), e.g. [0.9, 1.1]; within [0.5, 2]. Null: off.")
    pitch: list | None = _f(None, "[lowest, highest] pitch shift in semitones, tempo kept, e.g. [-2, 2]; within [-12, 12]. Null: off.")
    snr_db: list | None = _f(None, "[lowest, highest] signal-to-noise ratio in dB of added Gaussian noise, e.g. [15, 40]; within [-10, 80]. Null: off.")
    gain_db: list | None = _f(None, "[lowest, highest] gain in dB, e.g. [-6, 6]; within [-40, 40]. Null: off.")
    seed: int | None = _f(None, "Seed of the augmentation draws; null: train.seed. Each example's draw depends only on (seed, epoch, utterance id).")

    def __post_init__(self) -> None:
        if not 0 <= self.p <= 1:
            raise RecipeError(f"augment.p: {self.p} must be a probability in [0, 1].")
        for key, (low, high, unit) in AUGMENT_RANGES.items():
            value = getattr(self, key)
            if value is None:
                continue
            ok = (len(value) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))
            if not ok or not low <= value[0] <= value[1] <= high:
                raise RecipeError(f"augment.{key}: {value!r} must be [lowest, highest] with "
                                  f"{low:g} <= lowest <= highest <= {high:g} ({unit}), or null to turn it off.")
        if self.p > 0 and not self.transforms():
            raise RecipeError("augment.p is above 0 but no transform is set: give a range to at least one of "
                              + ", ".join(f"augment.{k}" for k in AUGMENT_RANGES) + ", or set augment.p: 0.")

    def transforms(self) -> dict[str, list]:
        """The transforms turned on, by key: ``{"pitch": [-2, 2], ...}``."""
        return {k: getattr(self, k) for k in AUGMENT_RANGES if getattr(self, k) is not None}


@dataclass
class TrainConfig:
    output_dir: str = _f("runs/run", "Run folder: resolved recipe, logs, checkpoints.")
    epochs: int = _f(1, "Passes over the training data (`phased`: one pass per phase, plus the joint one).")
    max_steps: int = _f(-1, "Stop after this many optimizer steps (-1: run all epochs).")
    lr: float = _f(1e-4, "Peak learning rate (of the LLM's adapter; of everything unless `projector_lr` is set).")
    projector_lr: float | None = _f(None, "Peak learning rate of the parts trained from scratch: projectors, heads and the openSMILE encoder (null: `lr`).")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    warmup_steps: int = _f(0, "Linear warm-up steps.")
    lr_schedule: str = _f("cosine", "`cosine`, `linear` or `constant` after warm-up.")
    grad_accum: int = _f(1, "Batches per optimizer step.")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm (0 = off).")
    mixed_precision: str = _f("no", "`no`, `bf16` or `fp16` (accelerate autocast where the hardware has it).")
    seed: int = _f(0, "Seed of initialisation, task schedule and dropout.")
    save_every: int = _f(0, "Save a checkpoint every N optimizer steps (0: only at the end).")
    keep_last: int = _f(2, "Checkpoints kept on disk (older ones are deleted).")
    log_every: int = _f(10, "Log the mean loss per task every N steps.")
    log_with: list = _f([], "Experiment trackers that get the logged losses and learning rate, through accelerate's tracker support: any of `tensorboard`, `wandb`, `trackio` (each needs its package: `pip install emoreason[tensorboard]` or `wandb` or `trackio`). Their files go to `<output_dir>/trackers/`.")

    def __post_init__(self) -> None:
        if self.lr_schedule not in ("cosine", "linear", "constant"):
            raise RecipeError(f"train.lr_schedule: {self.lr_schedule!r} is not one of cosine, linear, constant.")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise RecipeError(f"train.mixed_precision: {self.mixed_precision!r} is not one of no, bf16, fp16.")
        if self.grad_accum < 1:
            raise RecipeError("train.grad_accum must be at least 1.")
        unknown = [t for t in self.log_with if t not in TRACKERS]
        if unknown:
            raise RecipeError(f"train.log_with: {unknown} are not trackers; choose from {', '.join(TRACKERS)}.")


@dataclass
class EvalConfig:
    protocol: str | None = _f(None, "`emoreason benchmark` protocol: iemocap4 (or its alias iemocap4-loso), meld7, meld-sentiment, msp-podcast or loso (leave-one-speaker-out on any corpus).")
    baselines: list = _f(["majority", "egemaps", "tfidf", "probe"], "Baselines computed in the same run on the same folds (tfidf only where every row has a transcript; probe: a linear probe on the recipe's own frozen speech encoder, its layer chosen on each fold's training speakers).")
    dev_speakers: int = _f(0, "Speakers held out of each fold's training rows as a dev set.")


@dataclass
class GrpoConfig:
    checkpoint: str | None = _f(None, "The supervised checkpoint (or run folder: its latest) GRPO starts from and whose model it refines; null: train.output_dir. `emoreason grpo --checkpoint` overrides it.")
    output_dir: str = _f("runs/grpo", "Run folder of the GRPO stage: resolved recipe, losses.jsonl (rewards, KL, lengths per step), rewards.png, the checkpoint.")
    rewards: dict = _f({"label": 1.0, "grounding": 1.0, "format": 0.5}, "Reward name -> weight; the reward of a completion is the weighted sum. Names: label, votes, grounding, format (reasoning/training/rewards.py says what each scores). `grounding` needs measured evidence on every training row (`emoreason evidence`).")
    clips_per_step: int = _f(4, "Clips per optimizer step; each gets `num_generations` completions.")
    num_generations: int = _f(4, "Completions sampled per clip: the group whose rewards give each other's advantages (TRL's num_generations).")
    max_steps: int = _f(100, "Optimizer steps of the GRPO stage.")
    lr: float = _f(1.0e-5, "Learning rate of the LoRA adapter (constant; nothing else trains).")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm (0 = off).")
    beta: float = _f(0.04, "Weight of the KL term to the starting policy (TRL's beta; 0: no reference pass).")
    epsilon: float = _f(0.2, "Lower clipping range of the importance ratio (TRL's epsilon).")
    epsilon_high: float | None = _f(None, "Upper clipping range (TRL's epsilon_high); null: `epsilon`.")
    loss_type: str = _f("grpo", "How per-token losses are averaged, as TRL's loss_type: `grpo` (per sequence, then over sequences), `bnpo` (over all tokens of the batch), `dr_grpo` (over batch size x max_completion_tokens).")
    scale_rewards: str = _f("group", "Advantages are reward - group mean, divided by the std of the `group`, of the `batch`, or `none` (TRL's scale_rewards). A group whose rewards are all equal has advantage 0.")
    temperature: float = _f(1.0, "Sampling temperature of the completions; their log-probabilities are taken at the same temperature, as TRL does.")
    max_completion_tokens: int = _f(48, "Length limit of a completion (TRL's max_completion_length); one cut there earns no `format` reward.")
    sft_weight: float = _f(0.0, "Weight of the supervised emotion loss of the step's clips, added to the GRPO loss (InstructGPT's PPO-ptx). GRPO trains on the rationale prompt; the label scoring of the emotion prompt, which predicts, drifts with it unless anchored. 0: TRL's objective alone.")
    iterations: int = _f(1, "Optimizer steps on each sampled batch (TRL's num_iterations); above 1 the importance ratio to the sampling policy departs from 1 and the clipping acts.")
    seed: int = _f(0, "Seed of the clip order and of the sampling.")
    benchmark: bool = _f(False, "`emoreason benchmark`: refine each fold's supervised model (train.output_dir/<fold>, trained first when not there) with GRPO into grpo.output_dir/<fold>, and evaluate those, into grpo.output_dir/eval.")

    def __post_init__(self) -> None:
        check_weights(self.rewards)
        if self.loss_type not in GRPO_LOSSES:
            raise RecipeError(f"grpo.loss_type: {self.loss_type!r} is not one of {', '.join(GRPO_LOSSES)}.")
        if self.scale_rewards not in GRPO_SCALES:
            raise RecipeError(f"grpo.scale_rewards: {self.scale_rewards!r} is not one of {', '.join(GRPO_SCALES)}.")
        if self.num_generations < 2:
            raise RecipeError("grpo.num_generations must be at least 2: advantages compare the completions of a clip.")
        for name in ("clips_per_step", "max_steps", "max_completion_tokens", "iterations"):
            if getattr(self, name) < 1:
                raise RecipeError(f"grpo.{name} must be at least 1.")
        if self.temperature <= 0:
            raise RecipeError("grpo.temperature must be above 0 (GRPO samples its completions).")
        if self.sft_weight < 0:
            raise RecipeError("grpo.sft_weight must be 0 (off) or above.")


@dataclass
class Recipe:
    model: ModelConfig = _f(None, "Encoders, LLM and fusion.")
    lora: LoraConfig = _f(None, "LoRA adapter of the LLM.")
    heads: HeadsConfig = _f(None, "VA, gender and emotion-loss settings.")
    data: DataConfig = _f(None, "Manifests, labels, tasks and schedule.")
    prompt: PromptConfig = _f(None, "What the prompts hold besides the audio: transcript, predicted VA; rationale order.")
    augment: AugmentConfig = _f(None, "Audio augmentation of training examples.")
    train: TrainConfig = _f(None, "Optimisation and checkpoints.")
    eval: EvalConfig = _f(None, "Benchmark protocol and baselines.")
    grpo: GrpoConfig = _f(None, "The GRPO stage after supervised training (`emoreason grpo`).")

    def __post_init__(self) -> None:
        if "emotion" in self.data.tasks and not self.data.labels and self.eval.protocol is None:
            raise RecipeError("data.labels is empty but the emotion task is on: list the label set, "
                              "e.g. [neutral, happy, angry, sad] (a benchmark takes it from eval.protocol).")
        if self.model.fusion == "feature" and self.model.paralinguistic.kind != "none" \
                and self.model.paralinguistic.num_tokens != self.model.speech.num_tokens:
            raise RecipeError("model.fusion is `feature`, so model.paralinguistic.num_tokens must equal "
                              f"model.speech.num_tokens ({self.model.speech.num_tokens}).")
        for name, part in (("speech", self.model.speech), ("paralinguistic", self.model.paralinguistic),
                           ("llm", self.model.llm)):
            if name == "paralinguistic" and part.kind != "ssl":
                continue
            if part.path is None and part.config is None:
                raise RecipeError(f"model.{name}: set `path` (hub id or local folder) or `config`.")
        if self.model.llm.path is None and self.model.llm.tokenizer is None:
            raise RecipeError("model.llm.tokenizer must be set when the LLM is built from `config`.")
        if self.prompt.transcript == "asr" and "asr" not in self.data.tasks:
            raise RecipeError("prompt.transcript is `asr`, so the model must learn to transcribe: add asr to "
                              "data.tasks, or use prompt.transcript: gold.")
        trains_va = "va" in self.data.tasks or (self.heads.va_in_emotion and "emotion" in self.data.tasks)
        if self.prompt.two_step and not trains_va:
            raise RecipeError("prompt.two_step writes the VA head's prediction into the prompt, so the head must "
                              "be trained: add va to data.tasks (or set heads.va_in_emotion with the emotion "
                              "task), or set prompt.two_step: false.")


# Sections whose fields are themselves dataclasses, for building from nested maps.
_NESTED = {Recipe: {"model": ModelConfig, "lora": LoraConfig, "heads": HeadsConfig, "data": DataConfig,
                    "prompt": PromptConfig, "augment": AugmentConfig, "train": TrainConfig, "eval": EvalConfig,
                    "grpo": GrpoConfig},
           ModelConfig: {"speech": SpeechEncoderConfig, "paralinguistic": ParalinguisticConfig,
                         "llm": LLMConfig}}


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a field's type. PyYAML reads ``1e-4`` as a string (YAML 1.1
    wants ``1.0e-4``), so numeric strings are accepted for float fields."""
    hint = eval(annotation, vars(typing), {}) if isinstance(annotation, str) else annotation  # noqa: S307
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for option in options:
        if option is type(None) and value is None:
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is float and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if option in (int, str, bool, list, dict) and type(value) is option:
            return value
    raise RecipeError(f"`{where}`: {value!r} is not of type {annotation}.")


def _build(cls: type, data: dict | None, where: str) -> Any:
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise RecipeError(f"{where or 'recipe'}: expected a map of fields, got {type(data).__name__}.")
    names = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" Did you mean `{where}{close[0]}`?" if close else ""
            raise RecipeError(f"unknown key `{where}{key}`.{hint} Valid keys here: {', '.join(names)}.")
    kwargs = {}
    for name, f in names.items():
        sub = _NESTED.get(cls, {}).get(name)
        if sub is not None:
            kwargs[name] = _build(sub, data.get(name), f"{where}{name}.")
        elif name in data:
            value = data[name]
            if cls is TrainConfig and name == "mixed_precision" and value is False:
                value = "no"  # YAML 1.1 reads an unquoted `no` as False
            kwargs[name] = _coerce(value, f.type, where + name)
    return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise RecipeError(f"override {dotted}: `{key}` is not a section.")
    node[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """``["train.lr=1e-4"]`` -> ``[("train.lr", 1e-4)]`` (values parsed as YAML)."""
    parsed = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"override {item!r} must look like section.field=value, e.g. train.lr=1e-4.")
        parsed.append((key.strip(), yaml.safe_load(value)))
    return parsed


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None,
                tree: dict | None = None) -> Recipe:
    """Load a recipe from YAML (or an already parsed ``tree``) with dotted overrides."""
    if tree is None:
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"{path}: no such recipe. Shipped recipes are in recipes/.")
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise RecipeError(f"{path}: not valid YAML ({err}).") from err
    tree = json.loads(json.dumps(tree))  # a deep copy that also rejects non-JSON values early
    for key, value in parse_overrides(overrides or []):
        _set_dotted(tree, key, value)
    try:
        return _build(Recipe, tree, "")
    except RecipeError as err:
        raise RecipeError(f"{path}: {err}" if path else str(err)) from None


def recipe_to_dict(recipe: Recipe) -> dict:
    return dataclasses.asdict(recipe)


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False))


def recipe_hash(recipe: Recipe) -> str:
    """A short stable hash of the resolved recipe, for reports."""
    return hashlib.sha256(json.dumps(recipe_to_dict(recipe), sort_keys=True).encode()).hexdigest()[:12]


def describe_fields(cls: type = Recipe, prefix: str = "") -> list[str]:
    """One line per dotted key with its default and help, for ``--help``."""
    lines = []
    for f in dataclasses.fields(cls):
        sub = _NESTED.get(cls, {}).get(f.name)
        if sub is not None:
            lines += describe_fields(sub, f"{prefix}{f.name}.")
        else:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            lines.append(f"  {prefix}{f.name} = {json.dumps(default)}\n      {f.metadata['help']}")
    return lines
