"""Checkpoints: trainable weights only, written atomically.

Layout of ``<output_dir>/checkpoint-<step>/``::

    adapter/                 the LoRA adapter (peft: adapter_config.json + adapter_model.safetensors);
                             loads with ``peft.PeftModel.from_pretrained(base_llm, "adapter")``
    modules.safetensors      every other trainable tensor: projectors, heads, SSL layer weights,
                             trainable encoder weights and their buffers
    recipe.yaml              the resolved recipe (base models are named by path in it)
    trainer_state.json       step, epoch, position in the epoch's task plan, loss history
    optimizer.pt, scheduler.pt, rng.safetensors, scaler.pt   what --resume needs (tensors and
                             plain containers only: loaded with ``weights_only=True``, no pickled
                             code). rng.safetensors holds each process's random state (torch's CPU
                             generator and, when CUDA is in use, its GPU's: ``torch.<rank>``,
                             ``cuda.<rank>``); scaler.pt the fp16 GradScaler's, when there is one
    complete.json            written last: the path and size of every other file

A checkpoint is written into a temporary folder and renamed into place
(:func:`reasoning.files.atomic_dir`), so a run killed while saving leaves the previous
checkpoint whole; the next save or resume cleans up what the kill left. The latest checkpoint
is the newest *whole* one: a folder whose files do not all match ``complete.json`` (cut short,
half deleted, half copied) is skipped with a warning, and a file that does not load is a
:class:`~reasoning.errors.CheckpointError` that names it, not a loader's traceback.

An *export* folder (``emoreason export``, :mod:`reasoning.export`) loads like a checkpoint:
it has ``recipe.yaml``, ``modules.safetensors``, ``complete.json`` and either ``adapter/`` or,
merged, no adapter and the merged LLM in its own folder. Its ``export.json`` says which
(``merged``) and which recipe fields name folders inside the export (``local_paths``,
dotted field -> path relative to the export), so the folder can be moved or published.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from reasoning.training.config import RECIPE_NAME, Recipe, load_recipe, save_recipe
from reasoning.errors import CheckpointError, RecipeError, UserError
from reasoning.files import atomic_dir, clean_leftovers, remove_dir

log = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
ADAPTER_WEIGHTS = f"{ADAPTER_DIR}/adapter_model.safetensors"
ADAPTER_CONFIG = f"{ADAPTER_DIR}/adapter_config.json"  # what peft.PeftModel.from_pretrained reads
MODULES_FILE = "modules.safetensors"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
RNG_FILE = "rng.safetensors"
SCALER_FILE = "scaler.pt"  # only when training in fp16 with a GradScaler
COMPLETE_FILE = "complete.json"
EXPORT_FILE = "export.json"  # only in an export folder (reasoning.export)
# What a checkpoint written before COMPLETE_FILE existed must hold to be used.
REQUIRED_FILES = (ADAPTER_WEIGHTS, ADAPTER_CONFIG, MODULES_FILE, RECIPE_NAME, STATE_FILE)
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
# How a checkpoint file fails to load: missing, cut short, garbled, or holding pickled code.
READ_ERRORS = (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError, SafetensorError, RecipeError)


def module_state(model, state_dict: dict | None = None) -> dict[str, torch.Tensor]:
    """Trainable non-LLM tensors: everything outside the LLM and the frozen encoders (of
    ``state_dict`` when given, else of ``model.state_dict()``)."""
    frozen = [name + "." for name, mod in model.named_modules() if getattr(mod, "_frozen", False)]
    state_dict = model.state_dict() if state_dict is None else state_dict
    return {k: v.detach().contiguous().cpu() for k, v in state_dict.items()
            if not k.startswith("llm.") and not any(k.startswith(f) for f in frozen)}


@contextmanager
def without_fsdp_units(model):
    """Show ``model``'s module tree without FSDP's nested wrappers while in the context.

    peft finds an adapter's weights by module path and strips FSDP's wrapper name only at
    the start of a path, so LoRA layers inside an FSDP unit (``layers.0._fsdp_wrapped_module.
    self_attn...``) would be left out of the saved adapter. The state dict saved is the
    gathered one, with clean names; nothing else is touched.
    """
    swapped = []
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            inner = getattr(child, "_fsdp_wrapped_module", None)
            if inner is not None:
                parent._modules[name] = inner
                swapped.append((parent, name, child))
    try:
        yield model
    finally:
        for parent, name, child in reversed(swapped):
            parent._modules[name] = child


def rng_state() -> dict[str, torch.Tensor]:
    """This process's random state: torch's CPU generator and, once CUDA is in use, the
    current GPU's (dropout on a GPU draws from it). Augmentation and the task schedule are
    seeded per example and per epoch, so they hold no state."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(saved: dict[str, torch.Tensor], rank: int = 0, world: int = 1, ckpt: Path | None = None) -> None:
    """Give process ``rank`` of ``world`` the random state it had when ``saved`` (a checkpoint's
    ``rng.safetensors``) was written. A checkpoint saved by another number of processes (or
    before each process's state was kept: one ``torch`` state) cannot give every process its
    own: then the draws after the resume differ from the uninterrupted run's, with a warning."""
    if "torch" in saved:  # one state, the main process's (older checkpoints)
        saved_world, mine = 1, {"torch": saved["torch"]}
    else:
        saved_world = len({k.rsplit(".", 1)[1] for k in saved})
        mine = {k.rsplit(".", 1)[0]: v for k, v in saved.items() if k.rsplit(".", 1)[1] == str(rank)}
    if saved_world != world:
        log.warning("%s holds the random state of %d process(es), and the run resumes on %d: random draws "
                    "(dropout) after the resume are not those of an uninterrupted run", ckpt, saved_world, world)
    if "torch" in mine:
        torch.set_rng_state(mine["torch"])
    if "cuda" in mine and torch.cuda.is_available():
        torch.cuda.set_rng_state(mine["cuda"])


def save_checkpoint(output_dir: str | Path, step: int, model, recipe: Recipe, state: dict,
                    optimizer=None, scheduler=None, keep_last: int = 0, state_dict: dict | None = None,
                    rng_states: list[dict] | None = None, scaler=None) -> Path:
    """Write ``checkpoint-<step>`` atomically and prune older ones beyond ``keep_last``.

    ``state_dict``: the model's full state dict when the weights are sharded over processes
    (FSDP, DeepSpeed ZeRO-3), gathered by the caller; ``model.state_dict()`` there would hold
    only this process's shards. ``rng_states``: every process's :func:`rng_state`, in rank
    order, gathered by the caller (default: this process's only). ``scaler``: the fp16
    GradScaler, when the run has one."""
    output_dir = Path(output_dir)
    recover_checkpoints(output_dir)
    final = output_dir / f"checkpoint-{step:06d}"
    llm_state = None if state_dict is None else \
        {k.removeprefix("llm."): v for k, v in state_dict.items() if k.startswith("llm.")}
    # The same step saved again (after a resume) replaces the old copy only once the new one
    # is whole (reasoning.files.atomic_dir).
    with atomic_dir(final) as tmp:
        with without_fsdp_units(model):
            model.llm.save_pretrained(tmp / ADAPTER_DIR, state_dict=llm_state)
            save_file(module_state(model, state_dict), tmp / MODULES_FILE)
        save_recipe(recipe, tmp / RECIPE_NAME)
        (tmp / STATE_FILE).write_text(json.dumps({**state, "step": step}, indent=1))
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
            torch.save(scheduler.state_dict(), tmp / SCHEDULER_FILE)
            rng_states = [rng_state()] if rng_states is None else rng_states
            save_file({f"{kind}.{rank}": t.contiguous() for rank, states in enumerate(rng_states)
                       for kind, t in states.items()}, tmp / RNG_FILE)
            if scaler is not None:
                torch.save(scaler.state_dict(), tmp / SCALER_FILE)
        write_complete(tmp)
    log.info("saved %s", final)
    if keep_last > 0:
        # Never the one just saved: after --resume-from an earlier step, the newest folder
        # name may be a broken checkpoint, or one of the abandoned steps.
        others = [p for p in list_checkpoints(output_dir) if p != final]
        for old in others[:max(len(others) - keep_last + 1, 0)]:
            remove_dir(old)
    return final


def write_complete(folder: Path) -> None:
    """Write ``COMPLETE_FILE``, the path and size of every file of ``folder``: the last file a
    checkpoint (or export) gets, which :func:`find_damage` checks it against."""
    sizes = {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}
    (folder / COMPLETE_FILE).write_text(json.dumps({"files": sizes}, indent=1))


def recover_checkpoints(output_dir: str | Path) -> None:
    """Clean up what a killed save left in a run folder (:func:`reasoning.files.clean_leftovers`).
    Only the process that trains into ``output_dir`` may call it."""
    clean_leftovers(output_dir, "checkpoint-*")


def find_damage(ckpt: Path) -> str | None:
    """What keeps ``ckpt`` from being a whole checkpoint, or None when it is one.

    A checkpoint written before COMPLETE_FILE existed counts as whole when it holds the
    REQUIRED_FILES (their sizes cannot be checked), so that older runs still load."""
    marker = ckpt / COMPLETE_FILE
    if not marker.is_file() and (ckpt / EXPORT_FILE).is_file():
        return f"{COMPLETE_FILE} is missing (an export writes it last)"
    if not marker.is_file():
        missing = [name for name in REQUIRED_FILES if not (ckpt / name).is_file()]
        return f"{missing[0]} is missing (and so is {COMPLETE_FILE})" if missing else None
    try:
        sizes = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError) as err:
        return f"{COMPLETE_FILE} does not parse ({type(err).__name__}: {err})"
    for name, size in sizes.items():
        if not (ckpt / name).is_file():
            return f"{name} is missing"
        if (ckpt / name).stat().st_size != size:
            return f"{name} is {(ckpt / name).stat().st_size} bytes, {size} were written"
    return None


def checkpoint_dirs(output_dir: str | Path) -> list[Path]:
    """Every ``checkpoint-<step>`` folder of a run, whole or not, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if (m := CHECKPOINT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """The whole checkpoints of a run, oldest first. A damaged one is left out with a warning
    that names it; the temporary folders of a killed save are not checkpoints."""
    whole, unmarked = [], 0
    for ckpt in checkpoint_dirs(output_dir):
        damage = find_damage(ckpt)
        if damage is not None:
            log.warning("%s is skipped, it is not a whole checkpoint: %s. Delete it once you no longer "
                        "need what is left of it.", ckpt, damage)
            continue
        whole.append(ckpt)
        unmarked += not (ckpt / COMPLETE_FILE).is_file()
    if unmarked:
        log.warning("%s: %d checkpoint(s) without %s (written by an older emoreason) are used without "
                    "checking their files", output_dir, unmarked, COMPLETE_FILE)
    return whole


def _fix(ckpt: Path) -> str:
    if (ckpt / EXPORT_FILE).is_file():
        return (f"Export it again (emoreason export --checkpoint RUN --out {ckpt} --force), or copy the "
                "whole export folder again.")
    return (f"Resume from an earlier checkpoint with --resume-from PATH (explain and eval: --checkpoint PATH), "
            f"or delete {ckpt} so that the run's previous whole checkpoint is used.")


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint or export folder (which must be whole), or a run folder (its latest whole
    checkpoint)."""
    path = Path(path)
    if (path / STATE_FILE).is_file() or (path / COMPLETE_FILE).is_file() or (path / EXPORT_FILE).is_file() or \
            (CHECKPOINT_RE.match(path.name) and path.is_dir()):
        damage = find_damage(path)
        if damage is not None:
            raise CheckpointError(f"{path}: not a whole checkpoint, {damage}. {_fix(path)}")
        return path
    found = list_checkpoints(path)
    if not found:
        damaged = " (the damaged ones are named in the warnings above)" if checkpoint_dirs(path) else ""
        raise UserError(f"{path}: no whole checkpoint here{damaged}. Pass a run folder that holds checkpoint-* "
                        "folders (train.output_dir) or one checkpoint folder.")
    return found[-1]


def _read(ckpt: Path, name: str, load):
    """``load(ckpt / name)``, with a file that does not load turned into a CheckpointError that
    names it and the fix (torch's own advice, to load with ``weights_only=False``, is wrong
    for a damaged file)."""
    try:
        return load(ckpt / name)
    except READ_ERRORS as err:
        reason = "garbled, or more than tensors" if isinstance(err, pickle.UnpicklingError) \
            else str(err).splitlines()[0][:200]
        raise CheckpointError(f"{ckpt / name}: does not load ({type(err).__name__}: {reason}). "
                              f"{_fix(ckpt)}") from err


def _load_json(path: Path):
    return json.loads(path.read_text())


def read_state(ckpt: Path) -> dict:
    """The trainer state of a checkpoint: step, epoch, batch, ``finished``, loss history."""
    return _read(ckpt, STATE_FILE, _load_json)


def read_export(ckpt: Path) -> dict | None:
    """The ``export.json`` of an export folder; None for a training checkpoint."""
    return _read(ckpt, EXPORT_FILE, _load_json) if (ckpt / EXPORT_FILE).is_file() else None


def read_recipe(ckpt: Path) -> Recipe:
    """The recipe of a checkpoint or export folder. In an export, the fields that name the
    export's own folders (``local_paths``) become absolute paths inside it."""
    recipe = _read(ckpt, RECIPE_NAME, load_recipe)
    info = read_export(ckpt)
    for dotted, rel in (info or {}).get("local_paths", {}).items():
        *parents, name = dotted.split(".")
        section = recipe
        for part in parents:
            section = getattr(section, part)
        setattr(section, name, str((ckpt / rel).resolve()))
    return recipe


def load_trainable(model, ckpt: Path, adapter: bool = True) -> None:
    """Load the adapter and module weights of ``ckpt`` into an already built model;
    ``adapter`` False: the module weights only (the LLM holds a merged adapter)."""
    from peft import set_peft_model_state_dict

    if adapter:
        _read(ckpt, ADAPTER_CONFIG, _load_json)  # unused here, but peft.PeftModel.from_pretrained reads it
        set_peft_model_state_dict(model.llm, _read(ckpt, ADAPTER_WEIGHTS, load_file))
    missing, unexpected = model.load_state_dict(_read(ckpt, MODULES_FILE, load_file), strict=False)
    expected = module_state(model).keys()
    absent = [k for k in missing if k in expected]
    if absent or unexpected:
        raise UserError(f"{ckpt}: weights do not match the recipe's model (missing {absent[:5]}, "
                        f"unexpected {unexpected[:5]}). Was the recipe edited after training?")


def resolve_device(device: str | None) -> torch.device:
    """The device of ``--device``: by default the GPU when there is one, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as err:
        raise UserError(f"--device {device}: not a device ({err}); use cpu, cuda or cuda:N.") from err
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no GPU is visible to torch here (torch.cuda.is_available() "
                        "is False); use --device cpu, or a CUDA build of torch on a GPU machine.")
    return chosen


def add_device_argument(parser) -> None:
    """``--device`` of the commands that predict (explain, eval, benchmark)."""
    parser.add_argument("--device", default=None,
                        help="where the model predicts: cpu, cuda or cuda:N (default: the GPU when there is one)")


def load_for_inference(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild the model of a checkpoint (or run folder) for prediction, on ``device``.

    Returns ``(model, tokenizer, recipe, checkpoint_path)`` with the model in eval mode. A
    4-bit (QLoRA) LLM is loaded straight onto the device by bitsandbytes, which cannot
    move it afterwards; the other parts follow it there. An export folder loads the same
    way; a merged one without LoRA around its LLM.
    """
    from reasoning.model.builders import build_model

    device = torch.device(device)
    ckpt = resolve_checkpoint(path)
    recipe = read_recipe(ckpt)
    adapter = not (read_export(ckpt) or {}).get("merged", False)
    model, tokenizer = build_model(recipe, caches=False, device=device, adapter=adapter)
    load_trainable(model, ckpt, adapter)
    for name, part in model.named_children():
        if not (name == "llm" and recipe.model.llm.quantization == "4bit"):
            part.to(device)
    model.eval()
    return model, tokenizer, recipe, ckpt


def load_training_state(ckpt: Path, optimizer, scheduler, rank: int = 0, world: int = 1, scaler=None) -> dict:
    """Restore optimizer, scheduler, the GradScaler (``scaler``, when the run has one) and the
    random state of process ``rank`` of ``world``; return the trainer state."""
    load_tensors = partial(torch.load, weights_only=True)
    optimizer.load_state_dict(_read(ckpt, OPTIMIZER_FILE, load_tensors))
    scheduler.load_state_dict(_read(ckpt, SCHEDULER_FILE, load_tensors))
    restore_rng_state(_read(ckpt, RNG_FILE, load_file), rank, world, ckpt)
    if scaler is not None:
        if (ckpt / SCALER_FILE).is_file():
            scaler.load_state_dict(_read(ckpt, SCALER_FILE, load_tensors))
        else:
            log.warning("%s holds no GradScaler state (it was not trained in fp16): the loss scale starts "
                        "anew", ckpt)
    return read_state(ckpt)
