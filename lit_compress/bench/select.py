"""Choosing the final artifact from benchmark rows, and the accuracy/latency Pareto front (pure functions).

The rule, on the **validation** split (the test split is only reported, never used to choose):

1. Candidates are every row except the teacher's (the teacher is the reference, not a deployable result).
2. A candidate is *within budget* when ``val_accuracy >= teacher_val_accuracy - budget_pts / 100``.
3. Among those, the fastest by single-query **p50** latency wins; exact ties go to the smaller size on disk,
   then to the higher validation accuracy, then to the earlier row.
4. When no candidate is within budget, the most accurate on validation wins (ties: faster p50, smaller size,
   earlier row) and the result says so (``within_budget=False``).

Why p50 and not the mean: on a shared CPU a few preempted calls (a GC pause, another process) inflate the
mean of 100 single-query timings by whole milliseconds while the median of the same timings barely moves;
the median is the latency a typical request sees, and it ranks variants the same way from one run to the next.

The Pareto front is drawn on two axes only, validation accuracy (higher is better) and p50 latency (lower is
better): those are the two the rule trades off. Size is a tie-breaker, not a third axis, because a third axis
puts almost every variant on the front (each int8 flavour is smallest, fastest or most accurate at something)
and the front stops telling the reader anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

VAL_ACCURACY = "val_accuracy"
LATENCY = "latency_p50_ms"
SIZE = "size_bytes"
#: slack on the budget comparison: accuracies are k/n, so 1e-9 only absorbs float rounding of ``acc - budget``
_EPS = 1e-9


@dataclass(frozen=True)
class Selection:
    """The chosen final artifact and why.

    Attributes:
        chosen: Name of the chosen row.
        reason: One human-readable sentence (printed by the main job, stored in ``stage.json``).
        within_budget: ``False`` when no candidate came within the budget and the most accurate was chosen.
        budget_pts: Allowed validation-accuracy loss against the teacher, in accuracy points.
        teacher: Name of the reference row (never chosen).
        teacher_val_accuracy: Its validation accuracy (a fraction).
        threshold: ``teacher_val_accuracy - budget_pts / 100``: the lowest validation accuracy within budget.
        chosen_val_accuracy: Validation accuracy of the chosen row.
        chosen_latency_ms: Its latency under ``latency_key``.
        chosen_size_bytes: Its size on disk.
        latency_key: Row key the latency was read from (``latency_p50_ms``).
        accuracy_key: Row key the validation accuracy was read from (``val_accuracy``).
        eligible: Candidates within budget, fastest first.
        pareto: Rows (the teacher included) on the validation-accuracy / latency Pareto front, fastest first.
    """

    chosen: str
    reason: str
    within_budget: bool
    budget_pts: float
    teacher: str
    teacher_val_accuracy: float
    threshold: float
    chosen_val_accuracy: float
    chosen_latency_ms: float
    chosen_size_bytes: int | None
    latency_key: str = LATENCY
    accuracy_key: str = VAL_ACCURACY
    eligible: tuple[str, ...] = field(default_factory=tuple)
    pareto: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        """Plain-JSON form (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Selection:
        """Inverse of :meth:`as_dict` (e.g. the ``selection`` block of ``benchmark.json``)."""
        values = dict(data)
        for key in ("eligible", "pareto"):
            values[key] = tuple(values.get(key, ()))
        return cls(**values)


def pareto_front(
    rows: Sequence[Mapping[str, Any]], *, accuracy_key: str = VAL_ACCURACY, latency_key: str = LATENCY
) -> list[str]:
    """Names of the rows no other row dominates, fastest first.

    Row ``a`` dominates ``b`` when ``a`` is at least as accurate and at least as fast, and strictly better on
    one of the two. Rows with identical figures do not dominate each other (both stay on the front). Rows
    missing either figure (or with a NaN) are left out.
    """
    points = [(r["name"], float(r[accuracy_key]), float(r[latency_key])) for r in rows if _has(r, accuracy_key)
              and _has(r, latency_key)]  # fmt: skip

    def dominated(acc: float, lat: float) -> bool:
        return any(a >= acc and t <= lat and (a > acc or t < lat) for _, a, t in points)

    front = [(lat, -acc, name) for name, acc, lat in points if not dominated(acc, lat)]
    return [name for _, _, name in sorted(front)]


def select_final(
    rows: Sequence[Mapping[str, Any]],
    *,
    teacher: str,
    budget_pts: float = 1.0,
    accuracy_key: str = VAL_ACCURACY,
    latency_key: str = LATENCY,
    size_key: str = SIZE,
) -> Selection:
    """Choose the final artifact among ``rows`` (see the module docstring for the rule).

    Args:
        rows: Benchmark rows with ``name``, ``accuracy_key``, ``latency_key`` and (for ties) ``size_key``.
        teacher: Name of the reference row; it is never chosen.
        budget_pts: Allowed validation-accuracy loss against the teacher, in points (1.0: one point, 0.01).
        accuracy_key: Validation accuracy column (a fraction).
        latency_key: Single-query latency column in milliseconds.
        size_key: Size on disk, the first tie-breaker.

    Raises:
        ValueError: ``teacher`` is not a row, there is no other row, a row lacks the validation accuracy or
            the latency, or ``budget_pts`` is negative.
    """
    if budget_pts < 0 or not math.isfinite(budget_pts):
        raise ValueError(f"accuracy budget must be a finite number of points >= 0, got {budget_pts}.")
    names = [r["name"] for r in rows]
    if teacher not in names:
        raise ValueError(f"teacher {teacher!r} is not a benchmarked variant; choose one of {names}.")
    missing = [r["name"] for r in rows if not (_has(r, accuracy_key) and _has(r, latency_key))]
    if missing:
        raise ValueError(f"rows {missing} lack {accuracy_key!r} or {latency_key!r}; benchmark with selection texts "
                         "and labels (the validation split) to choose a final artifact.")  # fmt: skip
    candidates = [r for r in rows if r["name"] != teacher]
    if not candidates:
        raise ValueError(f"nothing to choose from: only the teacher {teacher!r} was benchmarked.")
    reference = float(rows[names.index(teacher)][accuracy_key])
    threshold = reference - budget_pts / 100.0
    order = {r["name"]: i for i, r in enumerate(rows)}

    def acc(r: Mapping[str, Any]) -> float:
        return float(r[accuracy_key])

    def lat(r: Mapping[str, Any]) -> float:
        return float(r[latency_key])

    def size(r: Mapping[str, Any]) -> float:
        return float(r[size_key]) if _has(r, size_key) else math.inf

    eligible = sorted((r for r in candidates if acc(r) >= threshold - _EPS),
                      key=lambda r: (lat(r), size(r), -acc(r), order[r["name"]]))  # fmt: skip
    if eligible:
        best = eligible[0]
        reason = (f"fastest within {_points(budget_pts)} points of the teacher on validation "
                  f"(val acc {acc(best):.2%}, {_latency_label(latency_key)} {lat(best):.2f} ms)")  # fmt: skip
        tied = [r["name"] for r in eligible[1:] if lat(r) == lat(best)]
        if tied:
            reason += f"; tied on latency with {', '.join(tied)}, broken by size on disk then val acc"
    else:
        best = min(candidates, key=lambda r: (-acc(r), lat(r), size(r), order[r["name"]]))
        reason = (f"no variant within {_points(budget_pts)} points of the teacher on validation (teacher val acc "
                  f"{reference:.2%}, threshold {threshold:.2%}); chose the most accurate instead "
                  f"(val acc {acc(best):.2%}, {_latency_label(latency_key)} {lat(best):.2f} ms)")  # fmt: skip
    return Selection(
        chosen=best["name"], reason=reason, within_budget=bool(eligible), budget_pts=float(budget_pts),
        teacher=teacher, teacher_val_accuracy=reference, threshold=threshold, chosen_val_accuracy=acc(best),
        chosen_latency_ms=lat(best), chosen_size_bytes=int(best[size_key]) if _has(best, size_key) else None,
        latency_key=latency_key, accuracy_key=accuracy_key, eligible=tuple(r["name"] for r in eligible),
        pareto=tuple(pareto_front(rows, accuracy_key=accuracy_key, latency_key=latency_key)),
    )  # fmt: skip


def _has(row: Mapping[str, Any], key: str) -> bool:
    value = row.get(key)
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _points(budget: float) -> str:
    text = f"{budget:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _latency_label(key: str) -> str:
    return key.removeprefix("latency_").removesuffix("_ms")
