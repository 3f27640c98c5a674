"""``emoreason quickstart``: the whole flow, offline, on a CPU, in a few minutes.

Measures the evidence of the bundled synthesised clips (``data/samples/``) and writes
verified template rationales from it, trains ``recipes/quickstart.yaml`` (real Whisper
tiny.en and SmolLM2-135M-Instruct, from ``emoreason models fetch``) on three voices,
evaluates it on the fourth, and explains two clips.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from reasoning.evaluation.benchmark import EVAL_DIR
from reasoning.training.config import load_recipe
from reasoning.errors import UserError
from reasoning.evaluation.evaluate import evaluate_rows
from reasoning.evidence import measure_manifest
from reasoning.explain import Explainer, format_summary, verified_predictions
from reasoning.manifest import read_manifest, write_manifest
from reasoning.rationales import write_rationales
from reasoning.training.train import TrainRecipe, rows_in_splits

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "quickstart.yaml"


def loss_curve(history: list[dict], n: int = 5) -> dict[str, tuple[float, float]]:
    """Per task, the mean loss of its first and of its last ``n`` batches; ``va`` is the VA
    loss wherever the head learns it (``va`` batches, and emotion batches with
    ``heads.va_in_emotion``)."""
    by_task: dict[str, list[float]] = {}
    for h in history:
        by_task.setdefault(h["task"], []).append(h["loss"])
        if h["task"] != "va" and "va" in h:
            by_task.setdefault("va", []).append(h["va"])
    return {t: (float(np.mean(v[:n])), float(np.mean(v[-n:]))) for t, v in by_task.items()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/quickstart", help="run folder")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="recipe overrides, e.g. train.epochs=2 for a shorter run")


def run(args: argparse.Namespace) -> int:
    if not RECIPE.is_file():
        raise UserError(f"{RECIPE}: missing. The quickstart runs from a source checkout of emoreason.")
    out = Path(args.out).resolve()
    # The recipe's relative paths are relative to the repository root.
    recipe = load_recipe(RECIPE, [f"train.output_dir={out}", *args.overrides])
    d = recipe.data
    d.train_manifest = str(REPO / d.train_manifest)
    out.mkdir(parents=True, exist_ok=True)

    print("== 1/4 evidence and rationales for the bundled clips")
    rows, ev = measure_manifest(read_manifest(d.train_manifest))
    rows, rs = write_rationales(rows, "template", force=True)
    manifest = write_manifest(rows, out / "manifest.jsonl")
    d.train_manifest = d.eval_manifest = str(manifest)
    print(f"  measured {ev['measured']} clips; {rs['final_pass']}/{rs['rationales']} template rationales "
          f"pass the verifier, e.g. {rows[0]['id']}: \"{rows[0]['rationale']['text']}\"")

    print(f"== 2/4 train: {RECIPE.relative_to(REPO)} -> {out}")
    trainer = TrainRecipe(recipe)
    trainer.setup()
    history = trainer.train()
    trainer.cleanup()
    curve = loss_curve(history)
    print("loss per task (mean of the first 5 -> last 5 batches):")
    for task, (first, last) in curve.items():
        print(f"  {task:10s} {first:8.4f} -> {last:8.4f}")
    if not all(last < first for first, last in curve.values()):
        log.warning("the loss did not fall for every task: %s", curve)

    print("== 3/4 evaluate on the held-out speaker (split: test)")
    test = rows_in_splits(read_manifest(d.eval_manifest or d.train_manifest), d.eval_split)
    explainer = Explainer(out)

    def predict(fold: str, rows: list[dict]) -> dict:
        return verified_predictions(explainer, rows, progress=False)

    # The held-out speaker is that speaker's leave-one-speaker-out fold, so `emoreason eval`'s
    # own code scores it beside the majority baseline and writes metrics.json, report.md
    # and the plots into the run folder.
    (speaker,) = {r["speaker"] for r in test}
    result = evaluate_rows(read_manifest(d.eval_manifest), "loso", out / EVAL_DIR, baselines=["majority"],
                           predictor=predict, fold=f"speaker-{speaker}")
    metrics = result["systems"]["model"]["pooled"]
    va = metrics["va"]["annotated"]
    scores = {"clips": len(test), "UA": metrics["ua"], "WA": metrics["wa"], "macro_F1": metrics["macro_f1"],
              "top2": metrics["k_best"]["top2"], "CCC_valence": va["valence"]["ccc"],
              "CCC_arousal": va["arousal"]["ccc"],
              "rationale_pass": metrics["rationales"]["pass_rate"]}
    print("  " + "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in scores.items()))

    print("== 4/4 explain two clips")
    clips = [r for r in test if r["emotion"] in ("angry", "sad")][::3][:2]
    explained = explainer.predict(clips, progress=False)
    print("\n\n".join(format_summary(p) for p in explained))
    summary = {"loss_curve": curve, "eval": scores, "explain": explained}
    (out / "quickstart.json").write_text(json.dumps(summary, indent=2))
    print(f"\nsummary written to {out / 'quickstart.json'}; the evaluation's metrics.json, report.md and "
          f"plots to {out / EVAL_DIR}")
    return 0
