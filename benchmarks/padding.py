"""(c) Padding with and without length-grouped batches, on an IEMOCAP-like duration
distribution (0.6-30 s, median about 3 s), for the batch sizes of the shipped recipes.

    python benchmarks/padding.py

Prints (real + padded) / real audio positions over an epoch (target with grouping: at
most 1.15), and the same for Whisper's pad-to-30 s policy, which every clip pays without
the `trim` mel policy.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_schedule import iemocap_like_durations, padded_over_real  # noqa: E402

from reasoning.tasks.schedule import TaskSchedule  # noqa: E402


def main() -> None:
    durations = iemocap_like_durations(5000)
    examples = {"emotion": list(range(len(durations)))}
    pad30 = 30.0 * len(durations) / sum(durations)
    print(f"{len(durations)} utterances, median {sorted(durations)[len(durations) // 2]:.2f} s")
    print(f"{'batch':>5s} {'random batches':>15s} {'length-grouped':>15s} {'pad to 30 s':>12s}  target <= 1.15")
    for batch in (4, 8, 16, 32):
        plain = padded_over_real(TaskSchedule(examples, {"emotion": 1}, batch), durations)
        grouped = padded_over_real(TaskSchedule(examples, {"emotion": 1}, batch, durations=durations), durations)
        print(f"{batch:5d} {plain:15.3f} {grouped:15.3f} {pad30:12.2f}")


if __name__ == "__main__":
    main()
