"""The first GPU run, prepared and short: peak memory of real-size models against the estimate.

    benchmarks/gpu_check.sh                   # on one GPU, at most 10 minutes
    benchmarks/gpu_check.sh --cpu --tiny      # the same steps on the CPU with data/tiny/ (the test)

With the real model configs of ``data/configs/`` and random weights (no hub, no weights
on disk), it runs, each stage in a process of its own:

* ``small_lora``: a few training steps of ``recipes/small_lora.yaml`` (LoRA, bf16);
* ``large_qlora``: a few of ``recipes/large_qlora.yaml`` (QLoRA, gradient checkpointing);
* ``explain``: ``explain`` of the small_lora checkpoint on the device;

and prints one table: each stage's peak memory (CUDA ``max_memory_allocated``; on the CPU the
growth of the peak resident set, not comparable) beside what ``emoreason estimate-memory``
predicts for the same recipe, batch and clip length. Explain is compared with the
estimate's weights: estimate-memory predicts training only.

Both recipes train on the bundled clips (``data/samples``), every row, with the
``round_robin`` schedule so that a few steps see every task (``large_qlora``'s ``phased``
schedule would spend them all on asr), the LLM tokenizer of ``data/tiny/tokenizer`` (the
Qwen vocabulary size stays the config's) and ``train.max_steps`` of ``--steps``. The
estimate is asked for the longest clip of those rows.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data" / "samples" / "manifest.jsonl"
TINY = {"speech": "whisper.json", "paralinguistic": "wavlm.json", "llm": "llm.json"}
STAGES = ("small_lora", "large_qlora", "explain")
# What the stages import, by the name pip knows it under.
REQUIRED = {"torch": "torch", "transformers": "transformers", "peft": "peft", "accelerate": "accelerate",
            "bitsandbytes": "bitsandbytes", "safetensors": "safetensors", "yaml": "pyyaml", "numpy": "numpy",
            "scipy": "scipy", "soundfile": "soundfile", "tqdm": "tqdm"}
GIB = 1024 ** 3


def missing_requirements(cpu: bool) -> list[str]:
    """What this machine lacks to run the check, one line each (empty: nothing)."""
    missing, failed = [], set()
    for module, package in REQUIRED.items():
        try:
            importlib.import_module(module)
        except ImportError as err:
            missing.append(f"{package} (import {module}: {err})")
            failed.add(module)
    if "torch" not in failed and not cpu:
        import torch

        if not torch.cuda.is_available():
            missing.append(f"a GPU visible to torch {torch.__version__} (CUDA build: {torch.version.cuda}); "
                           "or run with --cpu")
    if not missing:
        for module in ("reasoning.training.train", "reasoning.explain", "reasoning.model.memory"):
            try:
                importlib.import_module(module)
            except ImportError as err:
                missing.append(f"{err.name or err} (needed by {module}; pip install it, or the project with "
                               "`pip install --no-deps -e .` and its dependencies)")
    return missing


def stage_tree(name: str, work: Path, steps: int, tiny: bool, cpu: bool) -> dict:
    """The recipe tree of training stage ``name``: its shipped recipe with every part built
    from its config (random weights), trained for ``steps`` steps on the bundled clips."""
    import yaml

    tree = yaml.safe_load((ROOT / "recipes" / f"{name}.yaml").read_text())
    for part in ("speech", "paralinguistic", "llm"):
        section = tree["model"][part]
        hub_id = section.pop("path")
        section["config"] = str(ROOT / "data" / "tiny" / TINY[part]) if tiny else \
            str(ROOT / "data" / "configs" / hub_id.replace("/", "--") / "config.json")
    tree["model"]["llm"]["tokenizer"] = str(ROOT / "data" / "tiny" / "tokenizer")
    rows = [json.loads(x) for x in SAMPLES.read_text().splitlines() if x.strip()]
    for r in rows:
        r["audio"] = str(SAMPLES.parent / r["audio"])
    manifest = work / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tree["data"].update(train_manifest=str(manifest), train_split=[], eval_split=[], schedule="round_robin",
                        phases=[])
    tree["train"].update(output_dir=str(work / name / "run"), max_steps=steps, grad_accum=2, warmup_steps=0,
                         save_every=0, log_every=1)
    if cpu:  # bf16 autocast on a CPU is slow and not what the GPU does anyway
        tree["train"]["mixed_precision"] = "no"
    return tree


def longest_clip(recipe) -> float:
    """Seconds of the longest training clip: the length the estimate is asked for."""
    from reasoning.audio import duration
    from reasoning.manifest import read_manifest

    return max(duration(r) for r in read_manifest(recipe.data.train_manifest))


class Peak:
    """Peak memory of what runs inside: CUDA's allocator peak, or the growth of the peak
    resident set of this process on the CPU."""

    def __init__(self, cpu: bool):
        self.cpu = cpu

    def __enter__(self):
        import torch

        if self.cpu:
            self.start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        else:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc):
        import torch

        if self.cpu:
            self.bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self.start
        else:
            torch.cuda.synchronize()
            self.bytes = torch.cuda.max_memory_allocated()
        return False


def run_training(name: str, args) -> dict:
    import torch

    from reasoning.model.builders import materialize
    from reasoning.training.config import load_recipe
    from reasoning.model.memory import VARIANTS, estimate_memory, recipe_variant
    from reasoning.training.train import TrainRecipe

    work = Path(args.work)
    recipe = load_recipe(tree=stage_tree(name, work, args.steps, args.tiny, args.cpu))
    variant = recipe_variant(recipe)
    t0 = time.perf_counter()
    est = estimate_memory(recipe, clip_seconds=min(longest_clip(recipe), 30.0),
                          variants=[v for v in VARIANTS if v[0] == variant], recipe_name=name)
    estimate_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    # random weights drawn on the GPU and saved in their load dtype, before the peak is measured
    materialize(recipe, recipe.train.output_dir, seed=recipe.train.seed, device="cpu" if args.cpu else "cuda")
    if not args.cpu:
        torch.cuda.empty_cache()
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with Peak(args.cpu) as peak:
        trainer = TrainRecipe(recipe)
        trainer.setup()
        history = trainer.train()
        trainer.cleanup()
    v = est.variants[0]
    precision = {"no": "fp32"}.get(recipe.train.mixed_precision, recipe.train.mixed_precision)
    return {"stage": name, "settings": f"{variant}, {precision}, batch {recipe.data.batch_size}, "
                                       f"{len(history)} batches, clips <= {est.lengths.clip_seconds:.1f} s",
            "peak": peak.bytes, "estimate": v.total, "estimate_what": f"total ({v.heaviest_task} step)",
            "clip_s": est.lengths.clip_seconds, "tasks": sorted({h["task"] for h in history}),
            "losses_finite": all(h["loss"] == h["loss"] for h in history),
            "seconds": {"estimate": estimate_s, "build": build_s, "train": time.perf_counter() - t0}}


def run_explain(args) -> dict:
    from reasoning.training.config import RECIPE_NAME, load_recipe
    from reasoning.explain import Explainer
    from reasoning.manifest import read_manifest
    from reasoning.model.memory import VARIANTS, estimate_memory, recipe_variant

    run = Path(args.work) / "small_lora" / "run"
    if not run.is_dir():
        raise RuntimeError(f"{run}: no small_lora run to explain (its stage failed)")
    recipe = load_recipe(run / RECIPE_NAME)
    rows = read_manifest(recipe.data.train_manifest)[:8]
    t0 = time.perf_counter()
    with Peak(args.cpu) as peak:
        explainer = Explainer(run, batch_size=8, device="cpu" if args.cpu else "cuda")
        preds = explainer.predict(rows, progress=False)
    est = estimate_memory(recipe, clip_seconds=min(longest_clip(recipe), 30.0),
                          variants=[v for v in VARIANTS if v[0] == recipe_variant(recipe)])
    device = str(next(explainer.model.llm.parameters()).device)
    return {"stage": "explain", "settings": f"small_lora checkpoint, {len(preds)} clips, batch 8, on {device}",
            "peak": peak.bytes, "estimate": est.variants[0].weights, "estimate_what": "weights only",
            "seconds": {"explain": time.perf_counter() - t0}}


def format_table(results: list[dict], cpu: bool, device: str) -> str:
    unit, scale = ("MiB", 1024 ** 2) if cpu or max((r.get("peak") or 0) for r in results) < GIB else ("GiB", GIB)
    what = "peak RSS growth" if cpu else "peak allocated"
    head = (f"{'stage':<12} {'settings':<58} {what + ' ' + unit:>20} {'estimate ' + unit:>14} {'estimate of':<26} "
            f"{'meas/est':>8} {'seconds':>8}  status")
    lines = [f"GPU check on {device}", head, "-" * len(head)]
    for r in results:
        if r.get("error"):
            lines.append(f"{r['stage']:<12} {r.get('settings', ''):<58} {'-':>20} {'-':>14} {'':<26} {'-':>8} "
                         f"{r.get('wall', 0):>8.0f}  FAILED: {r['error']}")
            continue
        ratio = r["peak"] / r["estimate"] if r["estimate"] else float("nan")
        lines.append(f"{r['stage']:<12} {r['settings']:<58} {r['peak'] / scale:>20.2f} {r['estimate'] / scale:>14.2f} "
                     f"{r['estimate_what']:<26} {ratio:>8.2f} {r['wall']:>8.0f}  ok")
    if cpu:
        lines.append("(CPU: the resident set also holds the Python heap and libraries; only the GPU figures "
                     "compare with the estimate)")
    return "\n".join(lines)


def device_name(cpu: bool) -> str:
    import torch

    if cpu:
        return f"CPU ({os.cpu_count()} cores), torch {torch.__version__}"
    return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (no bf16, peak RSS instead of CUDA)")
    parser.add_argument("--tiny", action="store_true", help="the models of data/tiny/ instead of data/configs/")
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps per training stage (2 batches each)")
    parser.add_argument("--work", default=None, help="folder for the random models and runs (default: a new one in /tmp)")
    parser.add_argument("--budget", type=float, default=570, help="seconds for all stages together")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # one stage, in a child process
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.cpu:
        os.environ["ACCELERATE_USE_CPU"] = "true"

    if args.stage:  # a child: run one stage, write its result
        result = run_explain(args) if args.stage == "explain" else run_training(args.stage, args)
        Path(args.result).write_text(json.dumps(result))
        return 0

    missing = missing_requirements(args.cpu)
    if missing:
        print("gpu_check: cannot run here; missing:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 2
    import tempfile

    work = Path(args.work or tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    start, results = time.perf_counter(), []
    flags = [f"--steps={args.steps}", f"--work={work}", *(["--cpu"] if args.cpu else []),
             *(["--tiny"] if args.tiny else [])]
    for stage in STAGES:
        left = args.budget - (time.perf_counter() - start)
        out = work / f"{stage}.json"
        t0 = time.perf_counter()
        if left < 10:
            results.append({"stage": stage, "error": "no time left in --budget", "wall": 0})
            continue
        try:
            proc = subprocess.run([sys.executable, __file__, f"--stage={stage}", f"--result={out}", *flags],
                                  timeout=left, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            results.append({"stage": stage, "error": f"ran past the budget ({left:.0f} s left)",
                            "wall": time.perf_counter() - t0})
            continue
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()
            sys.stderr.write(f"--- {stage} failed, its last lines:\n" + "\n".join(tail[-25:]) + "\n")
            results.append({"stage": stage, "error": tail[-1][:200] if tail else f"exit {proc.returncode}",
                            "wall": time.perf_counter() - t0})
            continue
        results.append({**json.loads(out.read_text()), "wall": time.perf_counter() - t0})
    print(format_table(results, args.cpu, device_name(args.cpu)))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0 if all(not r.get("error") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
