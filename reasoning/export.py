"""``emoreason export --checkpoint RUN --out DIR [--merge]``: a model folder to share.

Layout of ``DIR``::

    README.md            the model card: parts, label set, training data, protocol, the metrics
                         of the run's evaluation, intended use (written from the run)
    recipe.yaml          the resolved recipe; the fields listed in export.json's ``local_paths``
                         name folders inside DIR (the loader makes them absolute)
    export.json          format, merged or not, the source checkpoint and step, local_paths,
                         package versions
    modules.safetensors  projectors, heads and layer weights, as in the checkpoint
    adapter/             the LoRA adapter (peft), without --merge
    llm/                 with --merge: the LLM with the adapter merged in (safetensors) and its
                         tokenizer; no adapter/ then
    base/<part>/         each base model given as a local folder, copied (speech, paralinguistic,
                         llm without --merge, tokenizer); a hub id is named in recipe.yaml instead
    baseline.jsonl       measured evidence of the training rows: the corpus baseline that
                         ``emoreason demo`` z-scores an uploaded clip against (when the training
                         manifest has evidence)
    complete.json        written last: every file and its size (as in a checkpoint)

``emoreason explain`` and ``emoreason demo`` take DIR as ``--checkpoint``
(:func:`reasoning.training.checkpoint.load_for_inference`). The folder is written beside its final
place and renamed into it, so a killed export leaves no half folder under that name.

Merging: the base LLM is loaded in the recipe's dtype, unquantised, the adapter is applied with
``peft.PeftModel.from_pretrained`` and merged (``merge_and_unload``). A QLoRA adapter was
trained against NF4 weights, so its merge into the full-precision LLM is close to, not
the same as, the 4-bit model. Where the LLM ties its output layer to its input embeddings
but training changed one of them (``lora.modules_to_save: [lm_head]``), the merged LLM must
be saved untied, or it would reload with the untrained output layer: peft's merge sets
``tie_word_embeddings: false`` itself, and a test checks the reloaded export.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from collections import Counter
from pathlib import Path

from reasoning.training.checkpoint import (
    ADAPTER_DIR,
    EXPORT_FILE,
    MODULES_FILE,
    read_export,
    read_recipe,
    read_state,
    resolve_checkpoint,
    write_complete,
)
from reasoning.training.config import RECIPE_NAME, Recipe, save_recipe
from reasoning.errors import UserError
from reasoning.files import atomic_dir
from reasoning.manifest import read_manifest, write_manifest
from reasoning.pretrained import resolve_model_path
from reasoning.evaluation.report import METRICS_NAME, package_versions

log = logging.getLogger(__name__)

EXPORT_FORMAT = "emoreason-export-1"
CARD_NAME = "README.md"  # the name the hub shows as the model card
BASELINE_FILE = "baseline.jsonl"
MERGED_LLM_DIR = "llm"
BASE_DIR = "base"
# Where a run's evaluation may be, relative to its run folder: `emoreason eval --out RUN/eval`,
# the quickstart's summary, and a benchmark's eval/ beside the fold folders.
QUICKSTART_SUMMARY = "quickstart.json"
INTENDED_USE = (
    "Research on speech emotion recognition and on explanations grounded in measured acoustic evidence: "
    "comparing models, inspecting what a model attends to, teaching. Not for decisions about people, and not "
    "for inferring the emotions of people at work or in education. Emotion labels are acted or annotated "
    "categories of one corpus; a model transfers poorly to other speakers, languages and recording "
    "conditions than its training data. A rationale is generated text: only the claims the verifier parses "
    "(cues, quoted words, the stated emotion) are checked against the clip's measured evidence.")


def _is_local(path: str | None) -> bool:
    return path is not None and Path(resolve_model_path(path)).is_dir()


def check_out_dir(out: Path, ckpt: Path, force: bool) -> None:
    """Refuse an ``--out`` that is a file, a non-empty folder (without ``force``), or one that
    holds or lies inside the checkpoint (``--force`` would delete the source)."""
    out, src = out.resolve(), ckpt.resolve()
    if out == src or src.is_relative_to(out) or out.is_relative_to(src):
        raise UserError(f"--out {out}: overlaps the checkpoint {src}; export into a folder outside it.")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file; give a folder path.")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise UserError(f"--out {out}: the folder is not empty ({sum(1 for _ in out.iterdir())} entries). "
                            "Pass --force to replace it, or choose another --out.")
        log.warning("--force: %s will be replaced", out)


def merge_llm(ckpt: Path, recipe: Recipe):
    """The recipe's LLM with the checkpoint's adapter merged in, and its tokenizer."""
    import dataclasses

    from peft import PeftModel

    from reasoning.model.builders import build_llm

    cfg = dataclasses.replace(recipe.model.llm, quantization="none", gradient_checkpointing=False)
    base, tokenizer = build_llm(cfg, None)
    merged = PeftModel.from_pretrained(base, str(ckpt / ADAPTER_DIR)).merge_and_unload()
    merged.eval()
    return merged, tokenizer


def training_rows(recipe: Recipe) -> tuple[list[dict], str | None]:
    """The rows of the recipe's training manifest and split, and why there are none (the
    manifest is not on this machine or does not load)."""
    from reasoning.training.train import rows_in_splits

    d = recipe.data
    if not d.train_manifest or not Path(d.train_manifest).is_file():
        return [], f"the training manifest {d.train_manifest or '(none)'} is not on this machine"
    try:
        rows = read_manifest(d.train_manifest)
    except UserError as err:
        return [], str(err)
    return rows_in_splits(rows, d.train_split), None


def baseline_rows(rows: list[dict]) -> list[dict]:
    """The measured rows of ``rows`` cut down to what a z-score baseline needs
    (:func:`reasoning.evidence.zscores_against`): id, dataset, speaker, gender, label and
    the measured values; ``audio`` keeps only the file name, as provenance."""
    keep = ("id", "dataset", "speaker", "gender", "emotion", "split")
    out = []
    for r in rows:
        ev = r.get("evidence")
        if isinstance(ev, dict) and not ev.get("error") and isinstance(ev.get("values"), dict):
            out.append({**{k: r.get(k) for k in keep}, "audio": Path(r["audio"]).name,
                        "evidence": {"version": ev.get("version"), "values": ev["values"],
                                     "flags": ev.get("flags", []), "error": None}})
    return out


def training_evidence(ckpt: Path, recipe: Recipe) -> tuple[list[dict], str]:
    """Measured evidence of the rows the model was trained on, and where it came from: an
    export's ``baseline.jsonl``, else the recipe's training manifest (training split). With
    none, ``([], why)``."""
    if (ckpt / BASELINE_FILE).is_file():
        return read_manifest(ckpt / BASELINE_FILE, resolve_audio=False), str(ckpt / BASELINE_FILE)
    rows, why = training_rows(recipe)
    if why:
        return [], why
    reference, manifest = baseline_rows(rows), recipe.data.train_manifest
    if not reference:
        return [], (f"the training manifest {manifest} has no measured evidence "
                    f"(`emoreason evidence --manifest {manifest}` measures it)")
    return reference, manifest


def _figures(m: dict) -> dict:
    """The headline figures of one ``score_prediction`` result (reasoning.evaluation.evaluate)."""
    out = {"clips": m.get("n"), "UA": m.get("ua"), "WA": m.get("wa"), "macro-F1": m.get("macro_f1")}
    top2 = (m.get("k_best") or {}).get("top2")
    if top2 is not None:
        out["top-2"] = top2
    for source, dims in (m.get("va") or {}).items():
        for dim, v in dims.items():
            out[f"CCC {dim} ({source} VA)"] = v.get("ccc")
    if m.get("rationales"):
        out["rationale pass rate"] = m["rationales"].get("pass_rate")
    return out


def find_evaluation(ckpt: Path, metrics: str | Path | None = None) -> dict | None:
    """The evaluation of the run ``ckpt`` belongs to, for the model card: ``{"source",
    "protocol", "scope", "model": figures, "baselines": {name: UA}}``; None when none is found.

    ``metrics``: an ``emoreason eval`` / ``benchmark`` ``metrics.json`` or a quickstart summary.
    Otherwise looked for beside the checkpoint: ``RUN/eval/metrics.json``, ``RUN/metrics.json``,
    ``RUN/quickstart.json``, and a benchmark's ``ROOT/eval/metrics.json`` (its fold ``RUN``).
    """
    run = ckpt.parent
    if metrics and not Path(metrics).is_file():
        raise UserError(f"--metrics {metrics}: no such file (give an eval's metrics.json or a quickstart.json).")
    # (path, whether it must have this run as one of its folds: a benchmark's eval of all folds)
    candidates = [(Path(metrics), False)] if metrics else [
        (run / "eval" / METRICS_NAME, False), (run / METRICS_NAME, False), (run / QUICKSTART_SUMMARY, False),
        (run.parent / "eval" / METRICS_NAME, True)]
    for path, fold_only in candidates:
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except ValueError as err:
            if metrics:
                raise UserError(f"--metrics {path}: not JSON ({err}).") from err
            log.warning("%s is not JSON (%s): the model card leaves it out", path, err)
            continue
        if "systems" not in data and "eval" in data:  # a quickstart summary
            e = data["eval"]
            return {"source": str(path), "protocol": "quickstart: the bundled clips, one held-out speaker",
                    "scope": "held-out speaker (split: test)",
                    "model": {"clips": e.get("clips"), "UA": e.get("UA"), "WA": e.get("WA"),
                              "macro-F1": e.get("macro_F1"), "top-2": e.get("top2"),
                              "CCC valence": e.get("CCC_valence"), "CCC arousal": e.get("CCC_arousal"),
                              "rationale pass rate": e.get("rationale_pass")},
                    "baselines": {}}
        model = data.get("systems", {}).get("model")
        if model is None and metrics:
            raise UserError(f"--metrics {path}: holds neither a model's evaluation (`systems.model`, from "
                            "`emoreason eval --checkpoint`) nor a quickstart summary (`eval`).")
        per_fold = (model or {}).get("per_fold", {})
        if model is None or fold_only and run.name not in per_fold:
            continue
        if run.name in per_fold and len(per_fold) > 1:  # a benchmark: this run is one of its folds
            scores, scope = per_fold[run.name], f"fold {run.name} (its test speakers were not trained on)"
        else:
            scores, scope = model["pooled"], f"{len(per_fold)} fold(s), pooled: {', '.join(per_fold)}"
        baselines = {name: s["pooled"].get("ua") for name, s in data["systems"].items() if name != "model"}
        return {"source": str(path), "protocol": data.get("protocol", {}).get("name"),
                "description": data.get("protocol", {}).get("description"), "scope": scope,
                "model": _figures(scores), "baselines": baselines}
    return None


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "n/a" if value is None else str(value)


def model_card(recipe: Recipe, info: dict, rows: list[dict], rows_why: str | None,
               evaluation: dict | None, state: dict) -> str:
    """The model card (``README.md``, with the hub's metadata block) of an export."""
    import yaml

    m, d, v = recipe.model, recipe.data, info["versions"]
    hub_ids = sorted({p for p in info["bases"].values() if not _is_local(p)})
    meta = {"library_name": "peft" if not info["merged"] else "transformers",
            "pipeline_tag": "audio-classification",
            "tags": ["emoreason", "speech-emotion-recognition", "audio", "explanation"]}
    if hub_ids:
        meta["base_model"] = hub_ids
    name = Path(info["source"]).parent.name if Path(info["source"]).name.startswith("checkpoint-") \
        else Path(info["source"]).name
    para = {"ssl": f"`{info['bases'].get('model.paralinguistic.path')}` (layer {m.paralinguistic.layer})",
            "opensmile": "openSMILE eGeMAPS descriptors through a small trained encoder",
            "none": "none"}[m.paralinguistic.kind]
    adapter = (f"LoRA r={recipe.lora.r}, alpha={recipe.lora.alpha} on {', '.join(recipe.lora.target_modules)}"
               + (", merged into the LLM weights (`llm/`)" if info["merged"] else " (`adapter/`)"))
    lines = [f"---\n{yaml.safe_dump(meta, sort_keys=False)}---", "",
             f"# {name}: speech emotion recognition that explains itself", "",
             ("Trained with emoreason. For each clip it scores every label of its label set under the LLM "
              "(never by parsing text), predicts valence and arousal in [-1, 1] with a head on the LLM's "
              "hidden states, and writes a rationale that cites acoustic cues; `emoreason demo` checks "
              "each claim of it against cues measured in the clip."), "",
             "## Model", "",
             "| part | what |", "|---|---|",
             (f"| speech encoder | `{info['bases'].get('model.speech.path')}` (Whisper, layer {m.speech.layer}, "
              f"{m.speech.num_tokens} tokens, {'frozen' if m.speech.freeze else 'trained'}) |"),
             f"| paralinguistic encoder | {para} ({m.paralinguistic.num_tokens} tokens) |",
             f"| LLM | `{info['bases'].get('model.llm.path')}` ({m.llm.dtype}"
             + (", trained in 4-bit NF4 (QLoRA)" if info["quantization"] == "4bit" else "")
             + (", the adapter merged in" if info["merged"] else "") + ") |",
             f"| adapter | {adapter} |",
             f"| heads | valence/arousal ({recipe.heads.va_pooling} pooling, layer {recipe.heads.va_layer})"
             + (", gender (auxiliary)" if recipe.heads.gender_weight > 0 else "") + " |", "",
             (f"Base models given as local folders were copied into `base/`; a hub id is named as it is. "
              f"The prompts hold: transcript `{recipe.prompt.transcript}`, VA in the prompt "
              f"`{'predicted' if recipe.prompt.two_step else 'none'}`, rationale order "
              f"`{recipe.prompt.rationale_order}`."), "",
             "## Label set", "", ", ".join(f"`{label}`" for label in d.labels), "",
             "## Training data", ""]
    lines.append(f"- Manifest: `{d.train_manifest}`, split(s) {', '.join(d.train_split) or 'all rows'}.")
    if rows:
        labels = Counter(r.get("emotion") for r in rows)
        speakers = len({(r.get("dataset"), r.get("speaker")) for r in rows})
        datasets = ", ".join(f"{k} ({v})" for k, v in Counter(r.get("dataset") for r in rows).items())
        lines += [f"- {len(rows)} utterances from {speakers} speakers; dataset(s): {datasets}.",
                  "- Labels: " + ", ".join(f"{k} {v}" for k, v in labels.most_common()) + "."]
        card = Path(d.train_manifest).parent / "card.md"
        if card.is_file():
            lines.append(f"- Dataset card: `{card}`.")
        if {r.get("dataset") for r in rows} == {"samples"}:
            lines.append("- These are the toolkit's bundled synthesised clips (espeak-ng voices acting four "
                         "emotions): the model says nothing about real emotional speech.")
    else:
        lines.append(f"- Not summarised here: {rows_why}.")
    tasks = ", ".join(f"{t} ({w:g})" for t, w in d.tasks.items())
    lines += [(f"- Tasks {tasks}, `{d.schedule}` schedule; {state.get('step', 'n/a')} optimizer steps, "
               f"learning rate {recipe.train.lr:g}, seed {recipe.train.seed}."), "", "## Evaluation", ""]
    if evaluation is None:
        lines.append("No evaluation was found beside this run. Evaluate it with `emoreason eval --manifest M "
                     "--protocol P --checkpoint DIR --out DIR/eval` and export again (or pass `--metrics`).")
    else:
        lines += [f"Protocol: `{evaluation['protocol']}`"
                  + (f" ({evaluation['description']})" if evaluation.get("description") else "")
                  + f"; {evaluation['scope']}. From `{evaluation['source']}`.", "",
                  "| metric | model |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in evaluation["model"].items()]
        if evaluation["baselines"]:
            lines += ["", "Baselines on the same rows (UA): "
                      + ", ".join(f"{k} {_fmt(v)}" for k, v in evaluation["baselines"].items()) + "."]
    lines += ["", "## Intended use", "",
              INTENDED_USE, "",
              "## How to use", "", "```bash",
              "emoreason explain clip.wav --checkpoint THIS_FOLDER        # label probabilities, VA, rationale",
              "emoreason demo --checkpoint THIS_FOLDER                    # the web page, on 127.0.0.1:7860",
              "```", "",
              (f"Exported from `{info['source']}` (step {state.get('step', 'n/a')}) on {info['created']} with "
               f"emoreason {v.get('emoreason')}, torch {v.get('torch')}, transformers {v.get('transformers')}, "
               f"peft {v.get('peft')}."), ""]
    return "\n".join(lines)


def export_model(checkpoint: str | Path, out: str | Path, merge: bool = False, force: bool = False,
                 metrics: str | Path | None = None) -> Path:
    """Write the export folder of ``checkpoint`` (a checkpoint or run folder) to ``out``
    (layout in the module docstring). Returns ``out``."""
    ckpt = resolve_checkpoint(checkpoint)
    if read_export(ckpt) is not None:
        raise UserError(f"{ckpt}: is already an export; copy the folder instead of exporting it again.")
    out = Path(out)
    check_out_dir(out, ckpt, force)
    recipe = read_recipe(ckpt)
    state = read_state(ckpt)
    evaluation = find_evaluation(ckpt, metrics)
    rows, rows_why = training_rows(recipe)
    m = recipe.model
    fields = {"model.speech.path": m.speech, "model.paralinguistic.path": m.paralinguistic,
              "model.llm.path": m.llm, "model.llm.tokenizer": m.llm}
    info = {"format": EXPORT_FORMAT, "merged": merge, "source": str(ckpt.resolve()), "step": state.get("step"),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": package_versions(),
            "local_paths": {}, "quantization": m.llm.quantization,
            "bases": {dotted: getattr(section, dotted.rsplit(".", 1)[-1]) for dotted, section in fields.items()
                      if getattr(section, dotted.rsplit(".", 1)[-1]) is not None}}
    with atomic_dir(out) as tmp:
        shutil.copyfile(ckpt / MODULES_FILE, tmp / MODULES_FILE)  # the mode of a new file, not the run's
        if merge:
            llm, tokenizer = merge_llm(ckpt, recipe)
            llm.save_pretrained(tmp / MERGED_LLM_DIR)
            tokenizer.save_pretrained(tmp / MERGED_LLM_DIR)
            m.llm.path = m.llm.tokenizer = MERGED_LLM_DIR
            m.llm.quantization = "none"
            info["local_paths"].update({"model.llm.path": MERGED_LLM_DIR, "model.llm.tokenizer": MERGED_LLM_DIR})
        else:
            shutil.copytree(ckpt / ADAPTER_DIR, tmp / ADAPTER_DIR)
        copied: dict[str, str] = {}  # source folder -> its copy, so the LLM and its tokenizer share one
        for dotted, section in fields.items():
            name = dotted.rsplit(".", 1)[-1]
            path = getattr(section, name)
            if dotted in info["local_paths"] or path is None:
                continue
            if not _is_local(path):
                continue  # a hub id: named, as it is
            src = str(Path(resolve_model_path(path)).resolve())
            if src not in copied:
                copied[src] = f"{BASE_DIR}/{dotted.split('.')[1]}" + ("_tokenizer" if name == "tokenizer" else "")
                log.info("copying %s -> %s", src, copied[src])
                shutil.copytree(src, tmp / copied[src])
            setattr(section, name, copied[src])
            info["local_paths"][dotted] = copied[src]
        m.encoder_cache = None  # the run's cache folder means nothing elsewhere
        save_recipe(recipe, tmp / RECIPE_NAME)
        reference = baseline_rows(rows)
        if reference:
            write_manifest(reference, tmp / BASELINE_FILE)
        info["baseline_rows"] = len(reference)
        (tmp / EXPORT_FILE).write_text(json.dumps(info, indent=1))
        (tmp / CARD_NAME).write_text(model_card(recipe, info, rows, rows_why, evaluation, state))
        write_complete(tmp)
    log.info("exported %s -> %s (%s)", ckpt, out, "merged" if merge else "adapter")
    return out


def check_hub(repo_id: str, folder: Path) -> None:
    """Refuse ``--push-to-hub`` at once where the hub is switched off (``HF_HUB_OFFLINE``)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise UserError(f"--push-to-hub {repo_id}: the hub is offline here (HF_HUB_OFFLINE=1). Unset it on a "
                        f"machine with a network, or upload the folder later: `hf upload {repo_id} {folder}`.")


def push_to_hub(folder: Path, repo_id: str, private: bool = False) -> str:
    """Upload an export folder to the hub as a model repository; returns its URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    check_hub(repo_id, folder)
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                          commit_message="emoreason export")
    except (HfHubHTTPError, OSError) as err:
        raise UserError(f"--push-to-hub {repo_id}: the upload failed ({err}). Log in with `hf auth login` "
                        f"(or set HF_TOKEN) with write access to {repo_id}, then run "
                        f"`hf upload {repo_id} {folder}`.") from err
    return f"https://huggingface.co/{repo_id}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Two modes: a model (``--checkpoint RUN --out DIR``) or a prepared manifest as a
    Hugging Face dataset (``--manifest M --to hf OUT``, :func:`reasoning.prepare.hf.export_manifest`)."""
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", help="a checkpoint folder, or a run folder (its latest)")
    what.add_argument("--manifest", help="a prepared manifest.jsonl to export as a dataset, with its evidence "
                                         "and rationales (with --to hf OUT)")
    parser.add_argument("--out", help="with --checkpoint: the export folder (must be empty or absent)")
    parser.add_argument("--to", choices=("hf",), help="with --manifest: hf, a `datasets` dataset saved with "
                                                      "save_to_disk (read back by `emoreason prepare hf`)")
    parser.add_argument("dataset_out", nargs="?", metavar="OUT", help="with --manifest --to hf: the dataset folder "
                                                                       "(replaced whole)")
    parser.add_argument("--merge", action="store_true",
                        help="merge the LoRA adapter into the LLM and save the merged LLM instead of the adapter")
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    parser.add_argument("--metrics", default=None,
                        help="the run's evaluation for the model card (an eval's metrics.json or quickstart.json); "
                             "default: looked for beside the checkpoint")
    parser.add_argument("--push-to-hub", default=None, metavar="REPO_ID",
                        help="then upload the model folder or the dataset to this hub repository (needs a network "
                             "and a login: `hf auth login`)")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create the repository private")


def _export_dataset(args: argparse.Namespace) -> int:
    from reasoning.prepare.hf import export_manifest

    if args.to is None or args.dataset_out is None:
        raise UserError("export --manifest needs a format and a folder: emoreason export --manifest M --to hf OUT")
    ds = export_manifest(args.manifest, args.dataset_out, args.push_to_hub, args.private)
    print(f"{args.dataset_out}: {len(ds)} rows, columns {', '.join(ds.column_names)}")
    if args.push_to_hub:
        print(f"pushed to the hub: {args.push_to_hub}")
    print(f"read it back with: emoreason prepare hf --dataset {args.dataset_out} --out DIR")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.manifest is not None:
        return _export_dataset(args)
    if args.out is None or args.to is not None or args.dataset_out is not None:
        raise UserError("export --checkpoint writes a model folder: emoreason export --checkpoint RUN --out DIR "
                        "[--merge] (--to hf OUT is for --manifest)")
    if args.push_to_hub:  # refused before the work, not after it
        check_hub(args.push_to_hub, Path(args.out))
    out = export_model(args.checkpoint, args.out, merge=args.merge, force=args.force, metrics=args.metrics)
    print(f"exported to {out} ({'merged LLM' if args.merge else 'adapter'}); model card: {out / CARD_NAME}")
    if args.push_to_hub:
        print(f"pushed: {push_to_hub(out, args.push_to_hub, args.private)}")
    return 0
