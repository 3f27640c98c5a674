"""Training and explain speed of the toolkit against the bare model, measured side by side.

    python benchmarks/train_speed.py [--steps 8] [--repeats 3] [--tiny] [--workers N]
    python benchmarks/train_speed.py --before OLD_CHECKOUT [--before ...] [--steps 2] [--repeats 2]

A mid-size random configuration (about 100 M parameters: Whisper-base-like encoder,
a WavLM-like SSL encoder, a 12-layer LLM) is trained on the bundled clips. It prints:

(a) the toolkit's training step (``TrainRecipe.train_epoch``: collation, forward, backward,
    clipping, optimizer and scheduler step, loss logging) divided by the bare forward +
    backward + optimizer step of the same model on the same pre-collated batches
    (target: at most 1.10);
(b) epoch time with the encoder-output cache (filled) divided by without it;
(c) padded + real over real audio positions at batch 16, random against length-grouped
    batches, on an IEMOCAP-like duration distribution (``benchmarks/padding.py`` has
    every batch size; target with grouping: at most 1.15);
(d) ``explain`` clips per second at batch 16 divided by one clip at a time, over the
    48 bundled clips, with the CLI's defaults (target: at least 4);
(e) peak resident memory of the process.

``--tiny`` uses the tiny configs of ``data/tiny/`` instead (seconds, not minutes: to
compare two checkouts side by side); ``--workers N`` trains with ``data.num_workers: N``.

Each measurement alternates the two sides ``--repeats`` times and reports medians, since
the machine is shared and noisy.

``--before DIR`` (older code, e.g. ``git archive main | tar -x -C /tmp/main``) prints
instead (f): the time of one training step (forward, backward, optimizer step; encoders
uncached) per kind of batch, for each older tree and for this one, side by side, and the
ratio to the first. Each tree runs in a process of its own (this script with
``EMOREASON_BENCH_CODE`` pointing at it), alternated ``--repeats`` times.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# The tree whose code is timed: this one, or the older checkout of a --before run.
CODE = Path(os.environ.get("EMOREASON_BENCH_CODE", ROOT)).resolve()
sys.path[:0] = [str(CODE), str(CODE / "tests")]

from conftest import SAMPLES, tiny_recipe_tree  # noqa: E402

from reasoning.training.config import load_recipe  # noqa: E402
from reasoning.tasks.schedule import TaskSchedule  # noqa: E402
from reasoning.explain import Explainer  # noqa: E402
from reasoning.manifest import read_manifest  # noqa: E402
from reasoning.training.train import TrainRecipe  # noqa: E402

MID_WHISPER = {"num_mel_bins": 80, "d_model": 512, "encoder_layers": 6, "encoder_attention_heads": 8,
               "encoder_ffn_dim": 2048, "decoder_layers": 1, "decoder_attention_heads": 8,
               "decoder_ffn_dim": 512, "max_source_positions": 1500, "max_target_positions": 32,
               "vocab_size": 64, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
               "decoder_start_token_id": 1}
MID_SSL = {"model_type": "wavlm", "hidden_size": 384, "num_hidden_layers": 4, "num_attention_heads": 6,
           "intermediate_size": 1536, "conv_dim": [256] * 7, "num_conv_pos_embeddings": 32,
           "num_conv_pos_embedding_groups": 8, "num_buckets": 160, "max_bucket_distance": 400,
           "mask_time_prob": 0.0}
MID_LLM = {"model_type": "qwen2", "hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 12,
           "num_attention_heads": 12, "num_key_value_heads": 4, "max_position_embeddings": 1024,
           "tie_word_embeddings": False}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def mid_recipe(tmp: Path, tiny: bool = False, workers: int = 0):
    # enough epochs that no timing reaches the end of training
    tree = tiny_recipe_tree(tmp / "run", SAMPLES, train={"epochs": 1000, "lr": 1e-4})
    # a fixed layer, so that both frozen encoders can be cached for (b)
    tree["model"]["paralinguistic"]["layer"] = 1
    if not tiny:
        tree["model"]["speech"].update(config=MID_WHISPER, num_tokens=64)
        tree["model"]["paralinguistic"].update(config=MID_SSL, num_tokens=8, layer=3)
        tree["model"]["llm"]["config"] = MID_LLM
        tree["model"]["projector_hidden"] = 1024
    tree["model"]["encoder_cache"] = str(tmp / "cache")
    tree["data"].update(batch_size=8, train_split=[])
    if workers:  # a key older checkouts do not know: only set when asked for
        tree["data"]["num_workers"] = workers
    return load_recipe(tree=tree)


def time_toolkit(trainer: TrainRecipe, plan: list) -> float:
    trainer.plans[0] = plan
    trainer.state.update(epoch=0, batch=0)
    step = trainer.state["step"]
    start = time.perf_counter()
    trainer.train_epoch(0)
    elapsed = time.perf_counter() - start
    assert trainer.state["step"] - step == len(plan), "training stopped early: the timing would be wrong"
    return elapsed / len(plan)


def time_bare(trainer: TrainRecipe, batches: list[dict]) -> float:
    model, opt = trainer.model, trainer.optimizer
    start = time.perf_counter()
    for batch in batches:
        model(batch)["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / len(batches)


# (f): kind of batch -> (task, heads.emotion_loss)
STEP_CASES = {"emotion, emotion_loss lm": ("emotion", "lm"), "emotion, emotion_loss both": ("emotion", "both"),
              "va": ("va", "lm"), "rationale": ("rationale", "lm")}


def time_steps_per_case(steps: int) -> dict[str, float]:
    """Seconds per training step of each of STEP_CASES, with the code of CODE."""
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = TrainRecipe(mid_recipe(Path(tmp)))
        trainer.setup()
        trainer.unwrapped.caches = {}  # every step encodes its clips, as in (a)
        rows = trainer.rows[:8]
        times = {}
        for case, (task, emotion_loss) in STEP_CASES.items():
            trainer.unwrapped.emotion_loss = emotion_loss
            batches = [trainer.collate(rows, task)] * (steps + 1)
            time_bare(trainer, batches[:1])  # warm-up: CPU kernels are chosen per shape
            times[case] = time_bare(trainer, batches[1:])
        trainer.cleanup()
    return times


def compare_trees(before: list[str], steps: int, repeats: int) -> None:
    """Print (f): step time per kind of batch of each tree in ``before`` and of this one."""
    trees = [Path(b).resolve() for b in before] + [ROOT]
    runs: dict[Path, list[dict]] = {t: [] for t in trees}
    for _ in range(repeats):
        for tree in trees:
            env = {**os.environ, "EMOREASON_BENCH_CODE": str(tree), "PYTHONPATH": str(tree)}
            out = subprocess.run([sys.executable, __file__, "--time-steps", "--steps", str(steps)], env=env,
                                 check=True, capture_output=True, text=True).stdout
            runs[tree].append(json.loads(out.strip().splitlines()[-1]))
    med = {t: {c: statistics.median(r[c] for r in runs[t]) for c in STEP_CASES} for t in trees}
    names = [t.name for t in trees]
    print(f"(f) seconds per training step, median of {repeats}; {steps} steps each; "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'batch':28s}" + "".join(f"{n:>22s}" for n in names) + "".join(f"{'/ first':>10s}" for _ in trees[1:]))
    for case in STEP_CASES:
        first = med[trees[0]][case]
        print(f"{case:28s}" + "".join(f"{med[t][case]:22.3f}" for t in trees)
              + "".join(f"{med[t][case] / first:10.3f}" for t in trees[1:]))
    print(json.dumps({str(t): med[t] for t in trees}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="training steps per timing")
    parser.add_argument("--repeats", type=int, default=3, help="alternations of the two sides")
    parser.add_argument("--tiny", action="store_true", help="the tiny configs of data/tiny/ instead of the mid-size one")
    parser.add_argument("--workers", type=int, default=0, help="data.num_workers of the training DataLoader")
    parser.add_argument("--before", action="append", default=[],
                        help="a checkout of older code: print (f), its step times beside this tree's (repeatable)")
    parser.add_argument("--time-steps", action="store_true", help=argparse.SUPPRESS)  # one tree of --before
    args = parser.parse_args()
    if args.time_steps:
        print(json.dumps(time_steps_per_case(args.steps)))
        return
    if args.before:
        compare_trees(args.before, args.steps, args.repeats)
        return
    from test_schedule import iemocap_like_durations, padded_over_real

    torch.manual_seed(0)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        trainer = TrainRecipe(mid_recipe(Path(tmp), args.tiny, args.workers))
        trainer.setup()
        caches, trainer.unwrapped.caches = trainer.unwrapped.caches, {}  # (a) without the cache
        n_params = sum(p.numel() for p in trainer.unwrapped.parameters())
        plan = trainer.schedule.plan(0)[: args.steps]
        batches = [trainer._batch(task, idx) for task, idx in plan]  # pre-collated, audio decoded
        # warm-up: each side sees every batch shape once (CPU kernels are chosen per shape)
        time_bare(trainer, batches)
        time_toolkit(trainer, plan)
        toolkit, bare = [], []
        for _ in range(args.repeats):
            toolkit.append(time_toolkit(trainer, plan))
            bare.append(time_bare(trainer, batches))
        results["train_step_s"] = {"toolkit": statistics.median(toolkit), "bare": statistics.median(bare)}

        trainer.unwrapped.caches = caches
        time_toolkit(trainer, plan)  # fills the cache
        cached = [time_toolkit(trainer, plan) for _ in range(args.repeats)]
        results["epoch_s"] = {"cached": statistics.median(cached), "uncached": statistics.median(toolkit)}
        rss_train = peak_rss_mb()
        trainer.save_checkpoint()
        trainer.cleanup()

        rows = read_manifest(SAMPLES)
        explainer = Explainer(trainer.output_dir, batch_size=16)  # the CLI's max_new_tokens
        explainer.predict(rows[:16], progress=False)  # warm-up of both sides
        explainer.batch_size = 1
        explainer.predict(rows[:4], progress=False)
        batched, single = [], []
        for _ in range(args.repeats):
            explainer.batch_size = 16
            t = time.perf_counter()
            explainer.predict(rows, progress=False)
            batched.append(len(rows) / (time.perf_counter() - t))
            explainer.batch_size = 1
            t = time.perf_counter()
            explainer.predict(rows, progress=False)
            single.append(len(rows) / (time.perf_counter() - t))
        results["explain_clips_per_s"] = {"batch16": statistics.median(batched), "batch1": statistics.median(single)}

    durations = iemocap_like_durations(5000)
    examples = {"emotion": list(range(len(durations)))}
    results["padding_b16"] = {
        "random": padded_over_real(TaskSchedule(examples, {"emotion": 1}, 16), durations),
        "grouped": padded_over_real(TaskSchedule(examples, {"emotion": 1}, 16, durations=durations), durations)}

    a = results["train_step_s"]["toolkit"] / results["train_step_s"]["bare"]
    d = results["explain_clips_per_s"]["batch16"] / results["explain_clips_per_s"]["batch1"]
    print(f"model: {n_params / 1e6:.1f} M parameters; {args.steps} steps x {args.repeats} repeats; "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'measure':58s} {'value':>10s} {'target':>8s}")
    print(f"{'(a) train step: toolkit / bare fwd+bwd+opt':58s} {a:10.3f} {'<= 1.10':>8s}"
          f"   ({results['train_step_s']['toolkit']:.3f} s vs {results['train_step_s']['bare']:.3f} s)")
    b = results["epoch_s"]["cached"] / results["epoch_s"]["uncached"]
    print(f"{'(b) epoch time: encoder cache / no cache':58s} {b:10.3f} {'':>8s}"
          f"   ({results['epoch_s']['cached']:.3f} s vs {results['epoch_s']['uncached']:.3f} s per step)")
    c = results["padding_b16"]
    print(f"{'(c) padded+real / real positions, batch 16, length-grouped':58s} {c['grouped']:10.3f} {'<= 1.15':>8s}"
          f"   (random batches {c['random']:.3f})")
    print(f"{'(d) explain clips/s: batch 16 / batch 1':58s} {d:10.2f} {'>= 4':>8s}"
          f"   ({results['explain_clips_per_s']['batch16']:.2f} vs {results['explain_clips_per_s']['batch1']:.2f})")
    print(f"{'(e) peak resident memory, training (MB)':58s} {rss_train:10.0f}")
    print(f"{'(e) peak resident memory, training + explain (MB)':58s} {peak_rss_mb():10.0f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
