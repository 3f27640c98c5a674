"""``emoreason benchmark RECIPE``: train and evaluate every fold of a protocol.

For each fold of ``eval.protocol`` (IEMOCAP: train on four sessions, test on the fifth;
any corpus: leave one speaker out; MELD: the official split), the recipe is trained on the
fold's training rows only, into ``<train.output_dir>/<fold>/``. Where every fold trains on
the same rows (MSP-Podcast: Development and each test set), one model is trained, into
``<train.output_dir>/model/``, and tested on every fold. Then :mod:`reasoning.evaluation.evaluate`
scores the fold models and the baselines on the same test rows and writes the report
(mean ± std across folds) to ``<train.output_dir>/eval/``.

A fold whose run folder already holds its final checkpoint is not trained again, so an
interrupted benchmark resumes where it stopped.

With ``grpo.benchmark: true``, each fold's supervised model is then refined by GRPO
(:mod:`reasoning.training.grpo`) into ``<grpo.output_dir>/<fold>/``, and the refined models are the
ones evaluated, into ``<grpo.output_dir>/eval/``. Pointing ``train.output_dir`` at a
finished supervised benchmark reuses its fold models, so ``emoreason compare`` then sets
supervised and supervised + GRPO side by side on the same folds.

Under ``accelerate launch`` every process trains every fold, in one process group that
lives from the first fold to the last (a fold's cleanup keeps it); then the main process
evaluates alone.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
from pathlib import Path

from reasoning.training.checkpoint import (add_device_argument, list_checkpoints, read_state, recover_checkpoints,
                                  resolve_device)
from reasoning.training.config import RECIPE_NAME, load_recipe
from reasoning.errors import RecipeError, UserError
from reasoning.evaluation.evaluate import PROBE_NAME, checkpoint_predictor, evaluate_rows
from reasoning.evaluation.folds import get_protocol, iter_folds, select_rows
from reasoning.manifest import read_manifest, write_manifest
from reasoning.evaluation.report import TABLE_NAME
from reasoning.training.train import TrainRecipe

log = logging.getLogger(__name__)

FOLD_MANIFEST = "train.jsonl"
EVAL_DIR = "eval"
SHARED_RUN = "model"  # the one run of a protocol whose folds share their training rows


def _finished(run_dir: Path) -> bool:
    """Whether a fold's run reached its last step (its latest checkpoint says so)."""
    found = list_checkpoints(run_dir)
    if not found:
        return False
    return bool(read_state(found[-1]).get("finished"))


def _processes():
    """The launch's processes (accelerate's state, shared with every fold's Accelerator), set
    up before the first fold: all of them decide together which folds are left to train."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def _use_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def train_fold(recipe, rows: list[dict], threads: int | None = None) -> None:
    """Train one fold: ``recipe`` (its output_dir the fold's run folder) on its training ``rows``,
    resuming from the folder's last checkpoint. ``threads``: torch's CPU threads (a fold of
    :func:`side_by_side`)."""
    _use_threads(threads)
    recipe.data.train_manifest = str(write_manifest(rows, Path(recipe.train.output_dir) / FOLD_MANIFEST))
    trainer = TrainRecipe(recipe, resume=bool(list_checkpoints(recipe.train.output_dir)))
    trainer.setup()
    trainer.train()
    trainer.cleanup(end_process_group=False)


def refine_fold(recipe, checkpoint: Path, device: str | None, threads: int | None = None) -> None:
    """GRPO on one fold's supervised model ``checkpoint`` into ``recipe.grpo.output_dir``."""
    from reasoning.training.grpo import GrpoRecipe

    _use_threads(threads)
    trainer = GrpoRecipe(recipe, checkpoint=checkpoint, device=device)
    trainer.setup()
    trainer.train()


def fold_pool(jobs: int):
    """``jobs`` spawned processes, each set up as the command's own (its log, its warnings)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from reasoning.cli import configure_process

    verbose = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    return ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=configure_process, initargs=(verbose,))


def side_by_side(work, folds: list[tuple[str, tuple]], jobs: int, doing: str) -> None:
    """Run ``work(*args, threads=...)`` for each ``(fold name, args)``, ``jobs`` folds at a time,
    each in its own process with an equal share of this process's CPU cores as threads: on a
    2-core CPU two one-thread SmolLM2 folds each kept 7-8 s a step side by side
    (eval/results.md; ``benchmarks/fold_jobs.py`` sets this against one process on both
    cores). A fold that fails does not stop the others; then a UserError names the failed ones."""
    import traceback

    jobs = min(jobs, len(folds))
    threads = max(1, len(os.sched_getaffinity(0)) // jobs)
    log.info("%s %d folds, %d at a time, %d CPU thread(s) each", doing, len(folds), jobs, threads)
    failed = []
    with fold_pool(jobs) as pool:
        futures = {name: pool.submit(work, *args, threads=threads) for name, args in folds}
        for name, future in futures.items():
            err = future.exception()
            if err is None:
                log.info("fold %s: done", name)
                continue
            log.error("fold %s failed:\n%s", name, "".join(traceback.format_exception(err)))
            failed.append(f"fold {name} failed: {err}")
    if failed:
        raise UserError("; ".join(failed) + ". The folds that finished are kept: fix the cause and run "
                        "the same command again to do the rest.")


def run_benchmark(recipe, only_fold: str | None = None, device: str | None = None, jobs: int = 1) -> dict:
    """Train each fold's model (``jobs`` folds side by side, :func:`side_by_side`), then
    evaluate all folds with the baselines. Returns the evaluation result (what
    ``metrics.json`` holds)."""
    if recipe.eval.protocol is None:
        raise RecipeError("eval.protocol is not set: choose iemocap4, meld7, meld-sentiment, loso or "
                          "msp-podcast.")
    protocol = get_protocol(recipe.eval.protocol)
    rows = read_manifest(recipe.data.train_manifest)
    kept, label_set, _ = select_rows(rows, protocol)
    if recipe.data.labels and set(recipe.data.labels) != set(label_set):
        raise RecipeError(f"data.labels {recipe.data.labels} differ from protocol {protocol.name}'s labels "
                          f"{label_set}: set data.labels to the protocol's, or leave it empty.")
    root = Path(recipe.train.output_dir)
    state = _processes()
    folds = list(iter_folds(kept, protocol, recipe.eval.dev_speakers, only_fold))
    runs = [(f.name, f) for f in folds]
    if protocol.separate_folds:  # MELD's one official fold keeps its folder name
        runs = [(SHARED_RUN, folds[0])]
    if jobs > 1 and state.num_processes > 1:
        raise UserError("--jobs trains folds side by side in one launch of one process; under "
                        "accelerate launch every process trains every fold: drop --jobs or the launcher.")
    pending = []
    for i, (name, fold) in enumerate(runs, 1):
        run_dir = root / name
        if state.is_main_process:  # the one process that writes the run folders cleans them
            recover_checkpoints(run_dir)
        state.wait_for_everyone()  # and every process then finds the same checkpoints
        if _finished(run_dir):
            log.info("fold %s (%d/%d): already trained in %s", name, i, len(runs), run_dir)
            continue
        log.info("fold %s (%d/%d): training on %d rows, testing on %d", name, i, len(runs),
                 len(fold.train), len(fold.test))
        fold_recipe = copy.deepcopy(recipe)
        fold_recipe.data.labels = list(recipe.data.labels or label_set)
        fold_recipe.data.train_split = []
        fold_recipe.train.output_dir = str(run_dir)
        if jobs > 1:
            pending.append((name, (fold_recipe, fold.train)))
        else:
            train_fold(fold_recipe, fold.train)
    if pending:
        side_by_side(train_fold, pending, jobs, "training")
    # Under `accelerate launch` (or torchrun) the main process evaluates alone: the group ends.
    state.wait_for_everyone()
    state.destroy_process_group()
    if not state.is_main_process:
        return {}
    if recipe.grpo.benchmark:
        root = refine_folds(recipe, root, [name for name, _ in runs], device, jobs)
    trained = root / SHARED_RUN if protocol.separate_folds else root
    predictor, hashes = checkpoint_predictor(trained, [f.name for f in folds], device,
                                             shared=protocol.one_training_set)
    meta = {"manifest": str(Path(recipe.data.train_manifest).resolve()), "checkpoint": str(root.resolve()),
            "recipe_hash": hashes}
    probe_speech = None
    if PROBE_NAME in recipe.eval.baselines:
        # An encoder built from `config` exists only as the folds' materialised copies (the
        # same seed, so the same weights): take the first fold's resolved recipe.
        probe_speech = (recipe.model.speech if recipe.model.speech.path is not None
                        else load_recipe(root / runs[0][0] / RECIPE_NAME).model.speech)
    result = evaluate_rows(rows, protocol, root / EVAL_DIR, baselines=recipe.eval.baselines, predictor=predictor,
                           fold=only_fold, dev_speakers=recipe.eval.dev_speakers, meta=meta,
                           probe_speech=probe_speech)
    if recipe.grpo.benchmark:  # each fold's reward curves beside the evaluation's plots
        from reasoning.training.grpo import plot_run

        for name, _ in runs:
            plot_run(root / name, root / EVAL_DIR / "plots" / f"rewards_{name}.png")
    return result


def refine_folds(recipe, root: Path, names: list[str], device: str | None, jobs: int = 1) -> Path:
    """GRPO on each fold's supervised model ``root/<fold>`` into ``<grpo.output_dir>/<fold>``
    (a fold already refined is skipped; ``jobs`` folds side by side); returns
    ``grpo.output_dir``, where they now are."""
    out = Path(recipe.grpo.output_dir)
    pending = []
    for i, name in enumerate(names, 1):
        if _finished(out / name):
            log.info("fold %s (%d/%d): already refined by GRPO in %s", name, i, len(names), out / name)
            continue
        log.info("fold %s (%d/%d): GRPO from %s", name, i, len(names), root / name)
        fold_recipe = copy.deepcopy(recipe)
        fold_recipe.grpo.output_dir = str(out / name)
        if jobs > 1:
            pending.append((name, (fold_recipe, root / name, device)))
        else:
            refine_fold(fold_recipe, root / name, device)
    if pending:
        side_by_side(refine_fold, pending, jobs, "refining")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="a recipe YAML with eval.protocol set")
    parser.add_argument("--fold", default=None, help="run only this fold (e.g. speaker-03, session5)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="folds trained (and refined by GRPO) side by side, each in its own process "
                             "with its share of the CPU cores (default 1); the evaluation then runs "
                             "here, as one run")
    add_device_argument(parser)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted recipe overrides")


def run(args: argparse.Namespace) -> int:
    resolve_device(args.device)
    recipe = load_recipe(args.recipe, args.overrides)
    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: give the number of folds to train at once, 1 or more.")
    result = run_benchmark(recipe, args.fold, args.device, args.jobs)
    if not result:  # another process of the launch evaluated and prints
        return 0
    out = Path(recipe.grpo.output_dir if recipe.grpo.benchmark else recipe.train.output_dir) / EVAL_DIR
    print((out / TABLE_NAME).read_text(encoding="utf-8"))
    print(f"wrote {result['report']['metrics']} and the plots in {out / 'plots'}")
    return 0
