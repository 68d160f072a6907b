from __future__ import annotations

import pytest

from lit_compress.prune.schedules import (
    ConstantSparsity,
    IterativeSparsity,
    LinearSparsity,
    PolynomialDecay,
    SparsitySchedule,
    as_schedule,
    should_update,
)


def test_polynomial_decay_matches_zhu_gupta_cubic_by_hand() -> None:
    s = PolynomialDecay(initial_sparsity=0.5, final_sparsity=0.8, begin_step=0, end_step=10)
    # s_t = 0.8 + (0.5 - 0.8) * (1 - t / 10) ** 3
    assert s(0) == pytest.approx(0.5)
    assert s(5) == pytest.approx(0.8 - 0.3 * 0.125)  # 0.7625
    assert s(9) == pytest.approx(0.8 - 0.3 * 0.001)  # 0.7997
    assert s(10) == pytest.approx(0.8)
    assert s(1000) == pytest.approx(0.8)
    assert isinstance(s, SparsitySchedule)


def test_polynomial_decay_holds_value_between_update_steps_and_is_zero_before_begin() -> None:
    s = PolynomialDecay(0.5, 0.8, begin_step=2, end_step=12, frequency=5)
    assert [t for t in range(20) if s.should_update(t)] == [2, 7, 12]
    assert s(0) == s(1) == 0.0
    assert s(2) == s(6) == pytest.approx(0.5)
    assert s(7) == s(11) == pytest.approx(0.7625)  # (7 - 2) / 10 = 0.5 of the ramp
    assert s(12) == s(50) == pytest.approx(0.8)


def test_tf_rule_misses_final_sparsity_when_frequency_does_not_divide_the_ramp() -> None:
    s = PolynomialDecay(0.5, 0.8, begin_step=0, end_step=10, frequency=4)
    assert [t for t in range(20) if s.should_update(t)] == [0, 4, 8]
    assert s(10) == pytest.approx(0.8 - 0.3 * 0.2**3)  # held at the step-8 value, as TF-MOT does


def test_power_one_and_linear_sparsity_agree() -> None:
    lin = LinearSparsity(0.2, 0.6, begin_step=10, end_step=20)
    poly = PolynomialDecay(0.2, 0.6, begin_step=10, end_step=20, power=1.0)
    assert lin(15) == pytest.approx(0.4) == poly(15)
    assert lin(13) == pytest.approx(0.2 + 0.4 * 0.3)


def test_constant_sparsity_updates_every_frequency_steps_forever() -> None:
    s = ConstantSparsity(0.3, begin_step=3, frequency=2)
    assert s(2) == 0.0 and s(3) == 0.3 and s(10**6) == 0.3
    assert [t for t in range(10) if s.should_update(t)] == [3, 5, 7, 9]
    one_shot = ConstantSparsity(0.2, begin_step=4, end_step=4)
    assert [t for t in range(10) if one_shot.should_update(t)] == [4]


def test_iterative_sparsity_is_frankle_carbin_geometric() -> None:
    s = IterativeSparsity(prune_fraction=0.2, round_length=5, rounds=3)
    assert [t for t in range(30) if s.should_update(t)] == [5, 10, 15]
    assert s(4) == 0.0
    assert s(5) == pytest.approx(0.2)
    assert s(10) == pytest.approx(0.36)
    assert s(15) == pytest.approx(1 - 0.8**3)
    assert s(29) == pytest.approx(0.488)


def test_as_schedule_and_plain_callables() -> None:
    assert as_schedule(0.4) == ConstantSparsity(0.4)
    custom = lambda step: min(0.5, step / 100)  # noqa: E731
    assert as_schedule(custom) is custom
    assert should_update(custom, 17) is True
    with pytest.raises(TypeError, match="neither a sparsity nor a callable"):
        as_schedule("0.5")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a bool"):
        as_schedule(True)


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: PolynomialDecay(0.5, 1.0, end_step=10), "final_sparsity=1.0 is not a sparsity"),
        (lambda: PolynomialDecay(-0.1, 0.5, end_step=10), "initial_sparsity=-0.1"),
        (lambda: PolynomialDecay(0.5, 0.8), "end_step is required"),
        (lambda: PolynomialDecay(0.5, 0.8, begin_step=5, end_step=5), "must be an integer > begin_step=5"),
        (lambda: PolynomialDecay(0.5, 0.8, end_step=10, frequency=0), "frequency=0 must be a positive"),
        (lambda: PolynomialDecay(0.5, 0.8, end_step=10, power=0), "power=0 must be a positive"),
        (lambda: PolynomialDecay(0.5, 0.8, begin_step=-1, end_step=10), "begin_step=-1"),
        (lambda: LinearSparsity(0.1, 0.5, end_step=10, power=3.0), "use PolynomialDecay"),
        (lambda: ConstantSparsity(0.5, begin_step=4, end_step=3), "end_step=3 must be an integer >= begin_step"),
        (lambda: IterativeSparsity(0.2, round_length=0, rounds=3), "round_length=0"),
        (lambda: IterativeSparsity(1.5, round_length=3, rounds=3), "prune_fraction=1.5"),
    ],
)
def test_invalid_schedules_give_actionable_errors(factory, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        factory()


@pytest.mark.parametrize(("steps", "fraction", "end", "every"), [(600, 0.6, 360, 12), (6, 0.6, 3, 1), (1, 1.0, 1, 1),
                                                                   (1000, 0.6, 600, 20), (137, 0.6, 82, 2), (139, 0.6, 82, 2)])
def test_over_fraction_resolves_the_ramp_from_the_runs_steps(steps, fraction, end, every) -> None:
    """end = int(fraction * steps) rounded down to a multiple of steps // 50 (at least one interval)."""
    s = PolynomialDecay.over_fraction(0.5, steps, fraction)
    assert (s.begin_step, s.end_step, s.frequency, s.power) == (0, end, every, 3.0)
    assert s.should_update(end) and s(end) == pytest.approx(0.5) and s(steps) == pytest.approx(0.5)


@pytest.mark.parametrize(("kwargs", "match"), [({"total_steps": 0}, "total_steps=0 must be a positive integer"),
                                               ({"end_fraction": 0.0}, r"end_fraction=0.0 must be in \(0, 1\]"),
                                               ({"updates": 0}, "updates=0 must be a positive integer")])
def test_over_fraction_rejects_bad_arguments(kwargs, match) -> None:
    args = {"final_sparsity": 0.5, "total_steps": 100, "end_fraction": 0.6, **kwargs}
    with pytest.raises(ValueError, match=match):
        PolynomialDecay.over_fraction(**args)
