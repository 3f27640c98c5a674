from collections import Counter

from reasoning.tasks.schedule import TaskSchedule

EXAMPLES = {"asr": list(range(20)), "emotion": list(range(20)), "va": list(range(10)), "rationale": list(range(5))}
WEIGHTS = dict.fromkeys(EXAMPLES, 1.0)


def test_same_seed_same_order_and_other_seed_other_order():
    a = TaskSchedule(EXAMPLES, WEIGHTS, 4, "weighted", seed=1, epochs=2)
    b = TaskSchedule(EXAMPLES, WEIGHTS, 4, "weighted", seed=1, epochs=2)
    c = TaskSchedule(EXAMPLES, WEIGHTS, 4, "weighted", seed=2, epochs=2)
    assert a.plan(0) == b.plan(0) and a.plan(1) == b.plan(1)
    assert a.plan(0) != c.plan(0)
    assert a.plan(0) != a.plan(1), "each epoch reshuffles"


def test_round_robin_alternates_and_uses_every_example_once():
    plan = TaskSchedule(EXAMPLES, WEIGHTS, 4, "round_robin").plan(0)
    assert [t for t, _ in plan[:4]] == ["asr", "emotion", "va", "rationale"]
    for task, idx in EXAMPLES.items():
        used = sorted(i for t, b in plan if t == task for i in b)
        assert used == idx


def test_weighted_follows_example_counts_and_temperature():
    big = {"asr": list(range(400)), "va": list(range(100))}
    counts = Counter(t for t, _ in TaskSchedule(big, {"asr": 1, "va": 1}, 2, "weighted").plan(0))
    assert 3.0 < counts["asr"] / counts["va"] < 5.5  # about 4:1
    flat = Counter(t for t, _ in TaskSchedule(big, {"asr": 1, "va": 1}, 2, "weighted", temperature=100).plan(0))
    assert 0.7 < flat["asr"] / flat["va"] < 1.4  # a high temperature evens the tasks out


def test_phased_epochs_then_a_joint_one():
    phases = [{"tasks": ["asr"], "train": ["speech"]}, {"tasks": ["emotion", "va"], "train": ["heads"]}]
    s = TaskSchedule(EXAMPLES, WEIGHTS, 4, "phased", phases=phases, epochs=3)
    assert {t for t, _ in s.plan(0)} == {"asr"} and s.phase(0)["train"] == ["speech"]
    assert {t for t, _ in s.plan(1)} == {"emotion", "va"}
    assert {t for t, _ in s.plan(2)} == set(EXAMPLES) and s.phase(2)["train"] is None


def test_ranks_get_equal_disjoint_shares_of_every_batch():
    s = TaskSchedule({"emotion": list(range(11))}, {"emotion": 1}, 2, world_size=2)
    seen = []
    for _, batch in s.plan(0):
        r0, r1 = s.shard(batch, 0, 2), s.shard(batch, 1, 2)
        assert len(r0) == len(r1) == 2 and not set(r0) & set(r1)
        seen += batch
    # 11 examples in global batches of 4: the last batch is filled up with earlier examples
    assert set(seen) == set(range(11)) and len(seen) == 12


def test_class_balanced_undersampling_and_weighted_sampling():
    labels = {i: ("neutral" if i < 15 else "sad") for i in range(20)}
    s = TaskSchedule({"emotion": list(range(20))}, {"emotion": 1}, 4, labels=labels, balance="undersample")
    used = [i for _, b in s.plan(0) for i in b]
    assert Counter(labels[i] for i in used) == {"neutral": 5, "sad": 5}
    assert used != [i for _, b in s.plan(1) for i in b], "a new draw each epoch"

    big = {i: ("neutral" if i < 900 else "sad") for i in range(1000)}
    w = TaskSchedule({"emotion": list(range(1000))}, {"emotion": 1}, 10, labels=big, balance="weighted")
    drawn = Counter(big[i] for _, b in w.plan(0) for i in b)
    assert sum(drawn.values()) == 1000 and 0.8 < drawn["sad"] / drawn["neutral"] < 1.25


def iemocap_like_durations(n: int, seed: int = 0) -> list[float]:
    """Utterance durations like IEMOCAP's: 0.6-30 s, median about 3 s (log-normal)."""
    import numpy as np

    return np.clip(np.random.default_rng(seed).lognormal(np.log(3.0), 0.75, n), 0.6, 30.0).tolist()


def padded_over_real(schedule: TaskSchedule, durations: list[float]) -> float:
    """(real + padded) / real audio positions over an epoch."""
    total = real = 0.0
    for _, batch in schedule.plan(0):
        total += max(durations[i] for i in batch) * len(batch)
        real += sum(durations[i] for i in batch)
    return total / real


def test_length_grouping_cuts_padding_and_keeps_every_example():
    durations = iemocap_like_durations(2000)
    examples = {"emotion": list(range(2000))}
    plain = TaskSchedule(examples, {"emotion": 1}, 16)
    grouped = TaskSchedule(examples, {"emotion": 1}, 16, durations=durations)
    assert sorted(i for _, b in grouped.plan(0) for i in b) == list(range(2000))
    assert padded_over_real(grouped, durations) <= 1.15 < padded_over_real(plain, durations)
    assert grouped.plan(0) != grouped.plan(1) and grouped.plan(0) == TaskSchedule(
        examples, {"emotion": 1}, 16, durations=durations).plan(0)
