"""``emoreason compare RUN [RUN ...]``: several benchmarks of one protocol in one table.

Each RUN is what ``emoreason benchmark`` wrote (its ``train.output_dir``, the ``eval/``
folder in it, or the ``metrics.json`` itself), optionally named ``NAME=RUN``; the name
defaults to the run folder's name. Every model system of every run becomes a row (a
two-step run adds its oracle-VA row), followed by the baselines of the first run. Runs
are comparable only when they scored the same protocol on the same test utterances; any
other pair is refused.

Columns: UA, WA and macro-F1 (mean ± std over folds), speakers with UAR >= 0.5, CCC of
valence and arousal (and of dominance when a model predicts it; pooled), the verifier's
pass rate of the generated rationales, their clip-specific grounding (pass rate against the
clip's own evidence minus against another clip of the same speaker: 0 for a rationale that
fits any clip) and the share whose stated emotion equals the predicted label, and what the
prompts held.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Mapping

from reasoning.evaluation.benchmark import EVAL_DIR
from reasoning.errors import UserError
from reasoning.evaluation.evaluate import MODEL_NAME, ORACLE_NAME
from reasoning.prepare.protocols import ALIASES
from reasoning.evaluation.report import METRICS_NAME, _dec, _get, _pct, _va_dimensions, _va_source


def find_metrics(path: str | Path) -> Path:
    """The ``metrics.json`` of a benchmark folder, its ``eval/`` folder, or the file itself."""
    path = Path(path)
    for candidate in (path, path / METRICS_NAME, path / EVAL_DIR / METRICS_NAME):
        if candidate.is_file():
            return candidate
    raise UserError(f"{path}: no {METRICS_NAME} here or in {path / EVAL_DIR}; "
                    "run `emoreason benchmark RECIPE` into this folder first.")


def load_runs(specs: list[str]) -> dict[str, dict]:
    """``[NAME=]RUN`` arguments -> {name: metrics.json contents}, checked to be comparable."""
    runs: dict[str, dict] = {}
    for spec in specs:
        name, _, path = spec.rpartition("=")
        metrics = find_metrics(path)
        name = name or (metrics.parent.parent.name if metrics.parent.name == EVAL_DIR else metrics.parent.name)
        if name in runs:
            raise UserError(f"two runs are named {name!r}: name them, e.g. {name}-b={path}")
        runs[name] = json.loads(metrics.read_text(encoding="utf-8"))
        runs[name]["_path"] = str(metrics)
    first = next(iter(runs.values()))
    for result in runs.values():
        if _test_sets(result) != _test_sets(first):
            raise UserError(
                f"{result['_path']} and {first['_path']} were not scored on the same folds and test rows "
                f"(protocol {result['protocol']['name']} vs {first['protocol']['name']}): compare runs of "
                "one protocol on one manifest.")
    return runs


def _test_sets(result: Mapping) -> tuple:
    # A run scored before the two registries became one names iemocap4 by its alias.
    return (ALIASES.get(result["protocol"]["name"], result["protocol"]["name"]), result["rows"]["kept"],
            [(fold["name"], fold["test"]) for fold in result.get("folds", [])])


def _describe_prompt(prompt) -> str:
    if not isinstance(prompt, Mapping):
        return "–" if not prompt else " / ".join(map(_describe_prompt, prompt))
    return (f"transcript {prompt.get('transcript')}, VA {prompt.get('va_in_prompt')}, "
            f"cues {prompt.get('evidence', 'none')}, {prompt.get('rationale_order')}")


def compare_table(runs: Mapping[str, Mapping]) -> str:
    """The Markdown table of :mod:`reasoning.evaluation.compare`'s docstring."""
    dims = ["valence", "arousal"]
    if any("dominance" in _va_dimensions(r["systems"]) for r in runs.values()):  # a VAD head
        dims.append("dominance")
    header = ["run", "system", "UA %", "WA %", "macro-F1 %", "speakers UAR ≥ .5", *[f"CCC {d}" for d in dims],
              "rationale pass %", "clip-specific grounding",
              "stated = predicted %", "prompt"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def row(run: str, system: str, result: Mapping) -> str:
        sysres = result["systems"][system]
        summary, pooled = sysres.get("summary", {}), sysres["pooled"]

        def folded(key: str) -> str:
            agg = summary.get(key)
            return _pct(agg["mean"], agg["std"]) if agg else _pct(_get(pooled, key))

        spk = pooled.get("speakers") or {}
        share = spk.get("share_uar_ge_0.5")
        source = _va_source(pooled)
        ccc = [_dec(_get(pooled, f"va.{source}.{d}.ccc")) if source else "–" for d in dims]
        prompt = (result.get("prompt") or {}).get(system)
        cells = [run, system, folded("ua"), folded("wa"), folded("macro_f1"),
                 "–" if share is None else f"{round(share * spk['speakers'])}/{spk['speakers']}", *ccc,
                 _pct(_get(pooled, "rationales.pass_rate")), _dec(_get(pooled, "rationales.clip_specific_grounding")),
                 _pct(_get(pooled, "rationales.emotion_match_rate")),
                 _describe_prompt(prompt)]
        return "| " + " | ".join(cells) + " |"

    for name, result in runs.items():
        for system in result["systems"]:
            if system in (MODEL_NAME, ORACLE_NAME):
                lines.append(row(name, system, result))
    first_name, first = next(iter(runs.items()))
    for system in first["systems"]:
        if system not in (MODEL_NAME, ORACLE_NAME):
            lines.append(row(first_name, system, first))
    n_folds = len(first.get("folds", []))
    return "\n".join([
        f"## {first['protocol']['name']}: {len(runs)} runs compared",
        "",
        f"{first['rows']['kept']} utterances, {n_folds} fold{'s' * (n_folds != 1)}. UA, WA and macro-F1: mean ± "
        "sample std over folds; speakers, CCC and rationales: pooled test predictions. Baselines are "
        f"those of `{first_name}`.",
        "",
        *lines,
    ]) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="[NAME=]RUN",
                        help="benchmark output folders (train.output_dir), their eval/ folders or metrics.json files")
    parser.add_argument("--out", help="also write the table to this Markdown file")


def run(args: argparse.Namespace) -> int:
    table = compare_table(load_runs(args.runs))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table, encoding="utf-8")
    print(table, end="")
    return 0
