from __future__ import annotations

import pytest

from vgg_deploy.timing.stats import TimingPolicy, measure, summarize


class FakeClock:
    """Each step advances time by the next scripted duration; reading the clock costs nothing."""

    def __init__(self, durations):
        self.now, self.durations, self.calls = 0.0, list(durations), 0

    def __call__(self):
        return self.now

    def step(self):
        self.now += self.durations[self.calls % len(self.durations)]
        self.calls += 1


def test_warmup_runs_for_iterations_and_seconds_then_stops_at_the_budget():
    clock = FakeClock([0.1])
    policy = TimingPolicy(warmup_iterations=2, warmup_seconds=0.5, min_iterations=3, max_iterations=100,
                          time_budget_s=1.0)
    durations = measure(clock.step, policy, clock=clock)
    assert clock.calls - len(durations) == 5  # 0.5 s of 0.1 s steps outlasts 2 iterations
    assert len(durations) == 10 and durations == pytest.approx([0.1] * 10)


def test_min_and_max_iterations_bound_the_run():
    slow = FakeClock([5.0])
    assert len(measure(slow.step, TimingPolicy(0, 0.0, 3, 10, 1.0), clock=slow)) == 3
    fast = FakeClock([0.001])
    assert len(measure(fast.step, TimingPolicy(0, 0.0, 1, 7, 100.0), clock=fast)) == 7


def test_percentiles_mean_and_throughput():
    durations = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    stats, ips = summarize(durations, batch_size=8)
    assert stats["p50"] == pytest.approx(50.5)
    assert stats["p90"] == pytest.approx(90.1)
    assert stats["p99"] == pytest.approx(99.01)
    assert stats["mean"] == pytest.approx(50.5)
    assert stats["iterations"] == 100 and stats["too_few_samples_for"] == []
    assert ips == pytest.approx(8 / 0.0505)


def test_tail_percentiles_need_enough_samples():
    stats, _ = summarize([i / 1000 for i in range(1, 21)], batch_size=1)  # 20 samples
    assert stats["p50"] == pytest.approx(10.5) and stats["p90"] == pytest.approx(18.1)
    assert stats["p99"] is None and stats["too_few_samples_for"] == ["p99"]
    stats, _ = summarize([0.001] * 5, batch_size=1)
    assert stats["p90"] is None and stats["p99"] is None and stats["p50"] == pytest.approx(1.0)
    stats, _ = summarize([0.001] * 99, batch_size=1)
    assert stats["p99"] is None
    stats, _ = summarize([0.001] * 100, batch_size=1)
    assert stats["p99"] == pytest.approx(1.0)
