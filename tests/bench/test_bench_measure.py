"""Pure measurements against hand computation: latency statistics, timing loops, throughput, F1."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from lit_compress.bench import (
    classification_metrics,
    fixed_threads,
    interleaved_timings,
    latency_stats,
    machine_load,
    throughput,
    time_calls,
)


def test_latency_stats_match_numpy():
    rng = np.random.default_rng(0)
    seconds = rng.gamma(2.0, 0.004, size=137)
    stats = latency_stats(seconds)
    ms = seconds * 1000
    assert stats["mean_ms"] == pytest.approx(ms.sum() / ms.size)
    assert stats["std_ms"] == pytest.approx(np.sqrt(((ms - ms.mean()) ** 2).mean()))
    order = np.sort(ms)
    for q in (50, 90, 95, 99):  # linear interpolation between order statistics at rank q/100 * (n - 1)
        rank = q / 100 * (ms.size - 1)
        lo, frac = int(rank), rank - int(rank)
        expected = order[lo] + frac * (order[min(lo + 1, ms.size - 1)] - order[lo])
        assert stats[f"p{q}_ms"] == pytest.approx(expected)
    assert stats["runs"] == 137 and stats["min_ms"] == pytest.approx(ms.min())


def test_latency_stats_of_known_timings():
    stats = latency_stats([0.001, 0.002, 0.003, 0.004])
    assert stats["mean_ms"] == pytest.approx(2.5) and stats["std_ms"] == pytest.approx(np.sqrt(1.25))
    assert stats["p50_ms"] == pytest.approx(2.5) and stats["p95_ms"] == pytest.approx(3.85)
    with pytest.raises(ValueError, match="at least one timing"):
        latency_stats([])


class FakeClock:
    """Each call to the timed function advances time by the next duration."""

    def __init__(self, durations):
        self.now, self.durations, self.calls = 0.0, itertools.cycle(durations), 0

    def __call__(self):
        return self.now

    def work(self, *args):
        self.calls += 1
        self.now += next(self.durations)


def test_time_calls_times_only_the_runs_after_warmup():
    clock = FakeClock([0.5, 0.5, 0.001, 0.002, 0.003])  # the first two calls are the warm-up
    timings = time_calls(clock.work, runs=3, warmup=2, clock=clock)
    assert clock.calls == 5
    assert timings == pytest.approx([0.001, 0.002, 0.003])
    with pytest.raises(ValueError, match="runs must be >= 1"):
        time_calls(clock.work, runs=0)


def test_interleaved_timings_alternate_rounds():
    clock, order = FakeClock([0.001]), []

    def make(name):
        return lambda: (order.append(name), clock.work())

    timings = interleaved_timings([make("a"), make("b")], runs=5, warmup=1, rounds=2, block_warmup=0, clock=clock)
    assert order == ["a", "b"] + ["a"] * 3 + ["b"] * 3 + ["a"] * 2 + ["b"] * 2  # warm-up, then blocks of 3, 2
    assert [len(t) for t in timings] == [5, 5] and timings[0] == pytest.approx([0.001] * 5)
    with pytest.raises(ValueError, match="runs and rounds must be >= 1"):
        interleaved_timings([make("a")], rounds=0)


def test_each_block_starts_with_untimed_calls():
    """A block's first calls (cold after the other callable's block) are run but not timed."""
    durations = {"a": iter([9.0, 0.001, 0.002, 9.0, 0.003]), "b": iter([9.0, 0.004, 0.005, 9.0, 0.006])}
    clock = FakeClock([0.0])
    order = []

    def make(name):
        def call():
            order.append(name)
            clock.now += next(durations[name])
        return call

    timings = interleaved_timings([make("a"), make("b")], runs=3, warmup=0, rounds=2, block_warmup=1, clock=clock)
    assert order == ["a"] * 3 + ["b"] * 3 + ["a"] * 2 + ["b"] * 2  # 1 untimed + 2 timed, then 1 untimed + 1 timed
    assert timings[0] == pytest.approx([0.001, 0.002, 0.003]) and timings[1] == pytest.approx([0.004, 0.005, 0.006])


def test_throughput_is_samples_over_time():
    clock = FakeClock([0.01])
    seen = []
    result = throughput(lambda batch: (seen.append(len(batch)), clock.work()), ["a", "b", "c"], batch_sizes=(1, 8),
                        runs=4, warmup=1, clock=clock)  # fmt: skip
    assert result == {1: pytest.approx(1 / 0.01), 8: pytest.approx(8 / 0.01)}
    assert set(seen) == {1, 8}, "batches larger than the text list are filled by cycling"


def test_classification_metrics_by_hand():
    labels = [0, 0, 0, 1, 1, 2]
    preds = [0, 0, 1, 1, 2, 2]
    # class 0: tp 2 fp 0 fn 1 -> 4/5; class 1: tp 1 fp 1 fn 1 -> 2/4; class 2: tp 1 fp 1 fn 0 -> 2/3
    metrics = classification_metrics(preds, labels)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["macro_f1"] == pytest.approx((4 / 5 + 2 / 4 + 2 / 3) / 3)
    with pytest.raises(ValueError, match="same shape"):
        classification_metrics([0], [0, 1])


def test_fixed_threads_restores_the_setting():
    before = torch.get_num_threads()
    with fixed_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be >= 1"), fixed_threads(0):
        pass


def test_machine_load_is_recorded():
    load = machine_load()
    assert load["cpus"] >= 1 and load["load_1m"] is not None and load["load_1m"] >= 0


def test_median_query_is_the_median_length_text_or_the_middle_example():
    from lit_compress.bench.measure import median_query

    assert median_query(["ccc", "a", "bbbbb", "dd", "eeee"]) == "ccc"
    images = [torch.full((1, 2, 2), float(i)) for i in range(5)]
    assert median_query(images) is images[2]
    with pytest.raises(ValueError, match="No examples"):
        median_query([])
