"""Launch configs under recipes/accelerate/, FSDP wrap units, and FSDP training on two CPU
processes checked against DDP."""

import json
import os
import subprocess
import sys
from unittest import mock

import pytest
import torch
import yaml
from safetensors.torch import load_file

from reasoning.model import memory
from reasoning.training.checkpoint import ADAPTER_DIR, MODULES_FILE, load_for_inference, without_fsdp_units
from reasoning.training.config import load_recipe
from reasoning.training.distributed import layer_classes

from conftest import ROOT, TINY, tiny_recipe_tree

CONFIGS = sorted((ROOT / "recipes" / "accelerate").glob("*.yaml"))
EXPECTED = {"single_gpu": "NO", "ddp": "MULTI_GPU", "fsdp": "FSDP",
            "deepspeed_zero2": "DEEPSPEED", "deepspeed_zero3": "DEEPSPEED"}


def test_the_five_launch_configs_are_shipped():
    assert {p.stem for p in CONFIGS} == set(EXPECTED)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_launch_config_parses_with_accelerates_own_loaders(path):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    first = path.read_text().splitlines()[0]
    assert first.startswith(f"# accelerate launch --config_file recipes/accelerate/{path.name} ")
    config = load_config_from_file(str(path))
    assert isinstance(config, ClusterConfig) and config.distributed_type.value == EXPECTED[path.stem]

    # what `accelerate launch --config_file PATH` makes of it
    parser = launch_command_parser()
    args, defaults, _ = _validate_launch_command(parser.parse_args(["--config_file", str(path), "train.py"]))
    assert (args.use_fsdp, args.use_deepspeed, args.multi_gpu) == (
        path.stem == "fsdp", path.stem.startswith("deepspeed"), path.stem == "ddp")
    # accelerate copies the sub-sections' keys onto its arguments without checking them
    dests = {a.dest for a in parser._actions}
    for key in config.fsdp_config:
        assert key in dests, f"{path.name}: fsdp_config.{key} is not an accelerate launch option"
    for key in config.deepspeed_config:
        assert key in dests, f"{path.name}: deepspeed_config.{key} is not an accelerate launch option"

    # the plugins accelerate builds in the training processes from the launcher's environment
    if args.use_fsdp:
        env = prepare_multi_gpu_env(args)
        env["FSDP_SYNC_MODULE_STATES"] = "false"  # true asks for a GPU (see test_fsdp_... below)
        with mock.patch.dict(os.environ, env):
            plugin = FullyShardedDataParallelPlugin()
        assert plugin.fsdp_version == 1 and plugin.use_orig_params
        assert plugin.transformer_cls_names_to_wrap is None  # the model names its layers
        assert plugin.state_dict_type.name == "FULL_STATE_DICT"
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        _, env = prepare_deepspeed_cmd_env(args)
        with mock.patch.dict(os.environ, env):
            plugin = DeepSpeedPlugin()  # deepspeed itself is not needed to build the plugin
        assert plugin.zero_stage == int(path.stem[-1])
        assert plugin.deepspeed_config["gradient_accumulation_steps"] == 1


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_the_command_at_the_top_of_every_launch_config_passes_the_launch_checks(path):
    """The first line is what a user copies: its recipe and overrides, under that config's
    distributed type, must not be refused (small_lora.yaml's grad_accum 2 under DeepSpeed was)."""
    from accelerate.utils import DistributedType

    from reasoning.training.train import check_launch

    words = path.read_text().splitlines()[0].split()
    recipe_path, *overrides = words[words.index("--config") + 1:]
    recipe = load_recipe(ROOT / recipe_path, overrides)
    config = yaml.safe_load(path.read_text())
    check_launch(recipe, DistributedType[EXPECTED[path.stem]], resume=False,
                 deepspeed_config=config.get("deepspeed_config"))


def test_fsdp_wraps_every_transformer_layer_present_and_nothing_else(tmp_path):
    large = memory.build_skeleton(load_recipe(ROOT / "recipes/large_qlora.yaml")).model
    assert layer_classes(large) == ["Qwen2DecoderLayer", "WavLMEncoderLayerStableLayerNorm", "WhisperEncoderLayer"]
    recipe = load_recipe(tree=tiny_recipe_tree(tmp_path))
    tiny = memory.build_skeleton(recipe, tokenizer=memory.local_tokenizer(recipe)).model
    # Whisper declares WhisperDecoderLayer too, but the model holds no decoder: accelerate
    # rejects a class it cannot find
    assert layer_classes(tiny) == ["Qwen2DecoderLayer", "WavLMEncoderLayer", "WhisperEncoderLayer"]


@pytest.mark.parametrize("quantization", ["none", "4bit"])
def test_gradient_checkpointing_is_non_reentrant_so_ddp_marks_each_weight_ready_once(tmp_path, quantization):
    """peft's prepare_model_for_kbit_training passes torch's reentrant default on unless told;
    under DDP the reentrant backward fails (test_train.py runs QLoRA + checkpointing + DDP)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from reasoning.model.builders import build_llm
    from reasoning.training.config import LLMConfig, LoraConfig

    tokenizer = AutoTokenizer.from_pretrained(TINY / "tokenizer")
    cfg = {**json.loads((TINY / "llm.json").read_text()), "vocab_size": len(tokenizer)}
    AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg)).save_pretrained(tmp_path / "llm")
    llm, _ = build_llm(LLMConfig(path=str(tmp_path / "llm"), tokenizer=str(TINY / "tokenizer"),
                                 quantization=quantization, gradient_checkpointing=True),
                       LoraConfig(r=4, target_modules=["q_proj"]), device=torch.device("cpu"))
    checkpointed = [m for m in llm.modules() if getattr(m, "gradient_checkpointing", False)]
    assert len(checkpointed) >= 2  # the tiny LLM's two decoder layers
    assert all(m._gradient_checkpointing_func.keywords == {"use_reentrant": False} for m in checkpointed)


class _Wrapper(torch.nn.Module):
    """Stands in for an FSDP unit: the wrapped module under `_fsdp_wrapped_module`."""

    def __init__(self, module):
        super().__init__()
        self._fsdp_wrapped_module = module


def test_adapter_saved_from_fsdp_units_keeps_every_lora_weight(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = {**json.loads((ROOT / "data/tiny/llm.json").read_text()), "vocab_size": 64}
    llm = get_peft_model(AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg)),
                         LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    full = llm.state_dict()  # what FSDP's FULL_STATE_DICT gathers: names without wrappers
    layers = llm.base_model.model.model.layers
    for i, layer in enumerate(list(layers)):
        layers[i] = _Wrapper(layer)
    llm.save_pretrained(tmp_path / "plain", state_dict=full)
    with without_fsdp_units(llm):
        llm.save_pretrained(tmp_path / "unwrapped", state_dict=full)
    assert all(isinstance(layer, _Wrapper) for layer in layers)  # restored
    plain = load_file(tmp_path / "plain/adapter_model.safetensors")
    unwrapped = load_file(tmp_path / "unwrapped/adapter_model.safetensors")
    assert len(unwrapped) == 2 * 2 * len(layers)  # lora_A and lora_B of q and v in each layer
    assert len(plain) < len(unwrapped)  # what peft alone would have saved from FSDP units


@pytest.mark.slow
@pytest.mark.slow
def test_fsdp_on_two_cpu_processes_trains_exactly_like_ddp(tmp_path, small_manifest):
    # No VA task and no gender head: parameters a batch does not use get no gradient under
    # DDP (AdamW skips them) but a zero one inside an FSDP unit (AdamW's momentum moves them).
    tree = tiny_recipe_tree(tmp_path / "unused", small_manifest,
                            train={"max_steps": 3, "save_every": 3, "lr": 1e-2},
                            data={"tasks": {"asr": 1.0, "emotion": 1.0, "rationale": 1.0}},
                            heads={"gender_weight": 0.0})
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(tree))
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "recipes/accelerate/fsdp.yaml"), "--num_processes", "2",
           "--fsdp_sync_module_states", "false",  # true raises "no available devices" without a GPU
           str(ROOT / "tests" / "fsdp_train.py"), str(recipe_path), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads((tmp_path / "runs.json").read_text())
    # accelerate alone turns the FSDP config into DDP on CPU
    assert runs["launched"]["distributed_type"] == "MULTI_CPU"
    assert runs["launched"]["wrapper"] == "DistributedDataParallel"
    fsdp = runs["fsdp"]
    assert fsdp["distributed_type"] == "FSDP" and fsdp["world_size"] == 2
    assert sorted(set(fsdp["units"])) == ["DualEncoderLLM", "Qwen2DecoderLayer", "WavLMEncoderLayer",
                                          "WhisperEncoderLayer"]
    assert fsdp["units"].count("Qwen2DecoderLayer") == 2  # the tiny LLM's two layers
    assert fsdp["local_fraction"] == pytest.approx(0.5, abs=0.01)  # each process holds half
    assert fsdp["losses"] == pytest.approx(runs["launched"]["losses"], rel=1e-6)
    # the checkpoint gathered from the shards equals the DDP one, tensor by tensor
    ddp_ckpt, fsdp_ckpt = tmp_path / "ddp/checkpoint-000003", tmp_path / "fsdp/checkpoint-000003"
    for name in (f"{ADAPTER_DIR}/adapter_model.safetensors", MODULES_FILE):
        want, got = load_file(ddp_ckpt / name), load_file(fsdp_ckpt / name)
        assert want.keys() == got.keys() and want
        # DDP all-reduces and FSDP reduce-scatters in other orders; AdamW divides by the root of
        # the squared gradient, which turns that float32 rounding of a near-zero gradient into
        # steps of up to ~3e-6 after three steps at lr 1e-2 (measured; weights are ~0.1).
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-5, msg=key)
    adapter = load_file(fsdp_ckpt / ADAPTER_DIR / "adapter_model.safetensors")
    assert sum("lora_A" in k for k in adapter) == 2 * 7  # two layers, seven projections
    assert all(t.numel() > 0 for t in adapter.values())  # whole tensors, not one process's shard
    # the gathered adapter loads back into the model as it was saved
    model, *_ = load_for_inference(fsdp_ckpt)
    params = {n.replace(".default", ""): p for n, p in model.llm.named_parameters()}
    lora = [k for k in adapter if ".lora_" in k]
    assert lora and all(torch.equal(params[k], adapter[k]) for k in lora)
