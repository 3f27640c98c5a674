"""Folds side by side on a CPU: one training process on every core against one process per core.

    python benchmarks/fold_jobs.py [--steps 4] [--repeats 2]

What ``emoreason benchmark --jobs N`` relies on. The training step is that of
``benchmarks/label_scoring.py`` (real SmolLM2-135M with LoRA, batch 8, ~85-token emotion
prompts, EmoDB's 7 labels scored in the packed pass). Two sides, alternated ``--repeats``
times, each in fresh processes:

* ``one process``: one process, as many torch threads as cores;
* ``side by side``: one process per core, one thread each, all stepping at once (as the folds
  of ``--jobs`` do).

Printed: seconds per step of each process, and the steps per second of the whole machine;
the ratio of the latter is what ``--jobs`` gains.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def worker(threads: int, steps: int) -> None:
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, str(ROOT))
    from label_scoring import setup, step_time

    model, batch, opt = setup(checkpointing=False)
    step_time(model, batch, opt, 1)  # warm-up: CPU kernels are chosen per shape
    print(json.dumps({"s_per_step": step_time(model, batch, opt, steps)}))


def run_side(processes: int, threads: int, steps: int) -> list[float]:
    """Start ``processes`` workers at once; their seconds per step."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1")
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(threads), "--steps", str(steps)],
                              stdout=subprocess.PIPE, text=True, env=env) for _ in range(processes)]
    out = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a worker failed: {out}")
    return [json.loads(o.strip().splitlines()[-1])["s_per_step"] for o in out]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed training steps per process")
    parser.add_argument("--repeats", type=int, default=2, help="alternations of the two sides")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        return worker(args.worker, args.steps)
    cores = len(os.sched_getaffinity(0))
    sides = {"one process": (1, cores), "side by side": (cores, 1)}
    per_step: dict[str, list[float]] = {name: [] for name in sides}
    rate: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, (processes, threads) in sides.items():
            times = run_side(processes, threads, args.steps)
            per_step[name] += times
            rate[name].append(sum(1 / t for t in times))
    print(f"{cores} cores; SmolLM2-135M emotion step, batch 8; {args.steps} steps x {args.repeats} repeats")
    for name, (processes, threads) in sides.items():
        print(f"{name:13s} {processes} x {threads} thread(s): {statistics.median(per_step[name]):7.3f} s/step "
              f"per process, {statistics.median(rate[name]):.3f} steps/s in all "
              f"({', '.join(f'{t:.2f}' for t in per_step[name])})")
    gain = statistics.median(rate["side by side"]) / statistics.median(rate["one process"])
    print(f"steps/s, side by side / one process: {gain:.2f}")


if __name__ == "__main__":
    main()
