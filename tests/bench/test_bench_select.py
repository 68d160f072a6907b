"""select_final and pareto_front on hand-made rows: the rule, its tie-breaks and its edge cases."""

from __future__ import annotations

import json

import pytest

from lit_compress.bench import Selection, pareto_front, select_final


def row(name: str, val: float, p50: float, size: int = 1_000, **extra: float) -> dict:
    return {"name": name, "val_accuracy": val, "latency_p50_ms": p50, "size_bytes": size, **extra}


TEACHER = row("teacher", 0.950, 40.0, 90_000_000)
ROWS = [
    TEACHER,
    row("student fp32", 0.945, 12.0, 40_000_000),
    row("QAT static Q/DQ", 0.930, 5.0, 6_000_000),  # fastest, but 2 points below the teacher
    row("PTQ dynamic int8", 0.942, 6.0, 7_000_000),  # fastest within 1 point
    row("QAT dynamic int8", 0.948, 7.5, 7_000_000),
    row("ORT fp32", 0.945, 13.0, 40_000_000),  # dominated by the student
]


def test_fastest_within_the_budget_wins():
    chosen = select_final(ROWS, teacher="teacher", budget_pts=1.0)
    assert chosen.chosen == "PTQ dynamic int8" and chosen.within_budget
    assert chosen.threshold == pytest.approx(0.94) and chosen.teacher_val_accuracy == 0.95
    assert chosen.eligible == ("PTQ dynamic int8", "QAT dynamic int8", "student fp32", "ORT fp32")
    assert chosen.chosen_latency_ms == 6.0 and chosen.chosen_val_accuracy == 0.942
    assert chosen.chosen_size_bytes == 7_000_000
    assert chosen.reason == "fastest within 1.0 points of the teacher on validation (val acc 94.20%, p50 6.00 ms)"


def test_the_budget_moves_the_choice():
    assert select_final(ROWS, teacher="teacher", budget_pts=2.0).chosen == "QAT static Q/DQ"
    assert select_final(ROWS, teacher="teacher", budget_pts=0.25).chosen == "QAT dynamic int8"
    assert select_final(ROWS, teacher="teacher", budget_pts=0.0).eligible == ()


def test_the_budget_boundary_is_inclusive_despite_float_rounding():
    rows = [row("teacher", 0.07, 10.0), row("at the edge", 0.06, 1.0)]  # 0.07 - 0.01 > 0.06 in floats
    assert select_final(rows, teacher="teacher", budget_pts=1.0).within_budget


def test_the_teacher_is_never_chosen_even_when_fastest_and_most_accurate():
    rows = [row("teacher", 0.99, 1.0), row("student", 0.90, 5.0)]
    chosen = select_final(rows, teacher="teacher", budget_pts=1.0)
    assert chosen.chosen == "student" and not chosen.within_budget
    assert chosen.pareto == ("teacher",), "the teacher dominates the student"


def test_nothing_within_budget_chooses_the_most_accurate_and_says_so():
    rows = [TEACHER, row("a", 0.90, 3.0), row("b", 0.92, 9.0), row("c", 0.92, 8.0)]
    chosen = select_final(rows, teacher="teacher", budget_pts=1.0)
    assert chosen.chosen == "c" and not chosen.within_budget and chosen.eligible == ()
    assert chosen.reason.startswith("no variant within 1.0 points of the teacher on validation (teacher val acc "
                                    "95.00%, threshold 94.00%); chose the most accurate instead")  # fmt: skip
    assert "val acc 92.00%, p50 8.00 ms" in chosen.reason


def test_latency_ties_go_to_the_smaller_then_the_more_accurate():
    rows = [TEACHER, row("big", 0.949, 5.0, 9_000), row("small", 0.945, 5.0, 7_000),
            row("small, better", 0.948, 5.0, 7_000), row("slow", 0.95, 6.0, 1)]  # fmt: skip
    chosen = select_final(rows, teacher="teacher")
    assert chosen.chosen == "small, better"
    assert "tied on latency with small, big, broken by size on disk then val acc" in chosen.reason


def test_a_single_variant_is_chosen_either_way():
    inside = select_final([TEACHER, row("only", 0.945, 9.0)], teacher="teacher")
    outside = select_final([TEACHER, row("only", 0.5, 9.0)], teacher="teacher")
    assert inside.chosen == outside.chosen == "only"
    assert inside.within_budget and not outside.within_budget


def test_another_latency_figure_can_be_chosen_by():
    rows = [row("teacher", 0.9, 9.0, latency_mean_ms=9.0), row("a", 0.9, 1.0, latency_mean_ms=5.0),
            row("b", 0.9, 2.0, latency_mean_ms=3.0)]  # fmt: skip
    assert select_final(rows, teacher="teacher").chosen == "a"
    by_mean = select_final(rows, teacher="teacher", latency_key="latency_mean_ms")
    assert by_mean.chosen == "b" and "mean 3.00 ms" in by_mean.reason


def test_pareto_front_on_validation_accuracy_and_latency():
    assert pareto_front(ROWS) == ["QAT static Q/DQ", "PTQ dynamic int8", "QAT dynamic int8", "teacher"]
    assert select_final(ROWS, teacher="teacher").pareto == tuple(pareto_front(ROWS))


def test_pareto_front_keeps_identical_points_and_skips_missing_figures():
    rows = [row("a", 0.9, 2.0), row("twin of a", 0.9, 2.0), row("worse", 0.9, 3.0),
            {"name": "unmeasured", "latency_p50_ms": 0.1}, row("nan", float("nan"), 0.1)]  # fmt: skip
    assert pareto_front(rows) == ["a", "twin of a"]
    assert pareto_front([]) == []


def test_selection_round_trips_through_json():
    chosen = select_final(ROWS, teacher="teacher")
    block = json.loads(json.dumps(chosen.as_dict()))
    assert block["pareto"] == list(chosen.pareto) and block["chosen"] == "PTQ dynamic int8"
    assert Selection.from_dict(block) == chosen


def test_misuse_is_explained():
    with pytest.raises(ValueError, match="teacher 'bert' is not a benchmarked variant"):
        select_final(ROWS, teacher="bert")
    with pytest.raises(ValueError, match="only the teacher 'teacher' was benchmarked"):
        select_final([TEACHER], teacher="teacher")
    with pytest.raises(ValueError, match=r"rows \['test only'\] lack 'val_accuracy'"):
        select_final([TEACHER, {"name": "test only", "accuracy": 0.9, "latency_p50_ms": 1.0}], teacher="teacher")
    with pytest.raises(ValueError, match="accuracy budget must be a finite number of points >= 0"):
        select_final(ROWS, teacher="teacher", budget_pts=-1.0)
