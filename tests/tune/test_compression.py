"""The search's pure core: the space, layer spreading, Pareto front, the budget rule, Pareto pruning, Spearman."""

import math

import pytest

from lit_compress.tune.compression import (
    Candidate,
    CompressionSpace,
    Scored,
    budget_threshold,
    choose,
    dominated_early,
    pareto_front,
    spearman,
    spread_layers,
)


@pytest.mark.parametrize(("depth", "layers"), [(1, (5,)), (2, (0, 5)), (3, (0, 2, 5)), (4, (0, 2, 3, 5)), (6, tuple(range(6)))])
def test_layers_are_spread_from_first_to_last(depth, layers) -> None:
    # round(i * 5 / (depth - 1)): depth 3 -> 0, 2.5 -> 2 (banker's rounding), 5
    assert spread_layers(depth, 6) == layers


def test_a_student_cannot_be_deeper_than_its_teacher() -> None:
    with pytest.raises(ValueError, match="cannot be taken from a teacher of 2"):
        spread_layers(3, 2)


def test_the_space_validates_and_drops_depths_beyond_the_teacher() -> None:
    space = CompressionSpace(depths=(1, 2, 8))
    assert space.choices(6)["depth"] == (1, 2)
    assert space.reference(6) == {"depth": 2, "head_ratio": 0.0, "ffn_ratio": 0.5, "hidden_ratio": 0.0,
                                  "temperature": 1.0, "alpha": 0.0, "augment": False}
    with pytest.raises(ValueError, match="head_ratios must lie in"):
        CompressionSpace(head_ratios=(1.0,))
    with pytest.raises(ValueError, match="needs at least one choice"):
        CompressionSpace(alphas=())


def cand(depth: int, heads: float, ffn: float) -> Candidate:
    return Candidate(spread_layers(depth, 6), heads, ffn, 2.0, 0.5)


def test_pareto_front_and_the_fastest_within_budget() -> None:
    a = Scored(0, cand(3, 0.0, 0.5), accuracy=0.97, latency_ms=3.0, size_mb=20.0)
    b = Scored(1, cand(2, 0.5, 0.75), accuracy=0.96, latency_ms=1.0, size_mb=8.0)
    c = Scored(2, cand(2, 0.25, 0.5), accuracy=0.955, latency_ms=1.5, size_mb=10.0)  # dominated by b
    d = Scored(3, cand(1, 0.75, 0.875), accuracy=0.90, latency_ms=0.4, size_mb=4.0)
    assert [s.number for s in pareto_front([a, b, c, d])] == [3, 1, 0]
    # reference (trial 0) at 0.97 below a teacher at 0.98: threshold 0.97 - 0.01
    threshold = budget_threshold(0.98, 0.97, 1.0)
    assert threshold == pytest.approx(0.96)
    pick = choose([a, b, c, d], threshold)
    assert pick.chosen is b and pick.within_budget
    nothing = choose([c, d], budget_threshold(0.99, None, 0.5))
    assert nothing.chosen is c and not nothing.within_budget and "most accurate" in nothing.reason


def test_a_running_trial_is_pruned_only_by_a_more_compressed_and_more_accurate_one() -> None:
    running = cand(2, 0.25, 0.5)
    faster_better = (cand(2, 0.5, 0.75), [0.90, 0.95])
    slower_better = (cand(3, 0.0, 0.5), [0.99, 0.99])
    assert dominated_early(running, 0.80, 0, [faster_better], margin=0.05)
    assert not dominated_early(running, 0.86, 0, [faster_better], margin=0.05), "within the margin"
    assert not dominated_early(running, 0.50, 0, [slower_better]), "a slower trial never prunes a faster one"
    assert not dominated_early(running, 0.50, 2, [faster_better]), "no check 2 in that curve"


def test_spearman_against_hand_computed_ranks() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks x = 1,2,3,4 ; y = 2,1,4,3 -> d = -1,1,-1,1 ; rho = 1 - 6*4/(4*15) = 0.6
    assert spearman([1, 2, 3, 4], [0.2, 0.1, 0.4, 0.3]) == pytest.approx(0.6)
    # ties share their mean rank: y ranks 1.5, 1.5, 3 -> Pearson of (1,2,3) and (1.5,1.5,3)
    assert spearman([1, 2, 3], [5, 5, 7]) == pytest.approx(math.sqrt(3) / 2)
    assert math.isnan(spearman([1, 2], [1, 2]))


def test_a_candidate_round_trips_through_its_record() -> None:
    c = cand(2, 0.5, 0.75)
    assert c.as_dict()["layers"] == [0, 5] and Candidate.from_dict(c.as_dict()) == c
