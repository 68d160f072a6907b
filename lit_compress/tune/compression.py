"""The compression recipe as a search space, and how the search judges candidates (pure, no Optuna, no Trainer).

A candidate is a student built from teacher layers (which ones), the share of its attention heads, FFN
channels and hidden (residual-stream) channels that structured pruning removes, the distillation temperature and CE weight, and whether training text
is augmented. Candidates are scored on three objectives: validation accuracy (maximise), measured latency and
size (minimise). The search returns the Pareto front and the fastest candidate within the accuracy budget.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


def spread_layers(depth: int, num_layers: int) -> tuple[int, ...]:
    """``depth`` of ``num_layers`` layers spread evenly from the first to the last: ``round(i · (L − 1) / (depth − 1))``.

    Two keep the first and the last (the fixed recipe's ``[0, 5]`` of six layers). One keeps the last: the layer
    the classifier was trained on (measured on the distilled 3-layer BBC student: its last layer alone classifies
    73 % of the validation articles before any training, its first alone 19 %, which one epoch did not repair).
    """
    if not 1 <= depth <= num_layers:
        raise ValueError(f"a student of {depth} layers cannot be taken from a teacher of {num_layers}.")
    if depth == 1:
        return (num_layers - 1,)
    return tuple(sorted({round(i * (num_layers - 1) / (depth - 1)) for i in range(depth)}))


@dataclass(frozen=True)
class CompressionSpace:
    """What the search may choose (each a list of choices; a single choice fixes it).

    Attributes:
        depths: Student depths. The main job distils a student of the deepest (teacher layers spread by
            :func:`spread_layers`); a candidate keeps that many of its layers, spread the same way.
        head_ratios: Fractions of each layer's attention heads pruned.
        ffn_ratios: Fractions of each layer's FFN channels pruned.
        hidden_ratios: Fractions of the hidden channels pruned (``StructuredPruning(hidden_pruning_ratio)``; one cut
            at the start of the prune stage, kept width a multiple of 32).
        temperatures: Distillation temperatures ``T``.
        alphas: Weights of the hard-label CE (``alpha·CE + (1−alpha)·T²·KL``).
        augment: Whether training text is augmented (``data.init_args.augment`` of the distillation stages);
            ``[false]`` never, ``[false, true]`` lets the search decide.
        augmentation: The augmentation used when ``augment`` is chosen (the datamodule's ``augment`` argument).
    """

    depths: tuple[int, ...] = (1, 2, 3)
    head_ratios: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)
    ffn_ratios: tuple[float, ...] = (0.5, 0.75, 0.875)
    hidden_ratios: tuple[float, ...] = (0.0,)
    temperatures: tuple[float, ...] = (1.0, 2.0, 4.0)
    alphas: tuple[float, ...] = (0.0, 0.5)
    augment: tuple[bool, ...] = (False,)
    augmentation: Mapping[str, Any] = field(default_factory=lambda: {"methods": ["replace", "mask"], "copies": 1})

    def __post_init__(self) -> None:
        for name in ("depths", "head_ratios", "ffn_ratios", "hidden_ratios", "temperatures", "alphas", "augment"):
            values = tuple(getattr(self, name))
            object.__setattr__(self, name, values)
            if not values:
                raise ValueError(f"search.space.{name} needs at least one choice.")
        for name in ("head_ratios", "ffn_ratios", "hidden_ratios"):
            if any(not 0.0 <= r < 1.0 for r in getattr(self, name)):
                raise ValueError(f"search.space.{name} must lie in [0, 1) (a fraction removed), got {getattr(self, name)}.")
        if any(d < 1 for d in self.depths) or any(t <= 0 for t in self.temperatures):
            raise ValueError("search.space: depths must be >= 1 and temperatures > 0.")
        if any(not 0.0 <= a <= 1.0 for a in self.alphas):
            raise ValueError(f"search.space.alphas must lie in [0, 1], got {self.alphas}.")

    def choices(self, num_layers: int) -> dict[str, tuple[Any, ...]]:
        """Optuna categorical choices per parameter (depths beyond the teacher's are dropped)."""
        depths = tuple(d for d in self.depths if d <= num_layers)
        if not depths:
            raise ValueError(f"search.space.depths {self.depths} are all deeper than the teacher ({num_layers} layers).")
        return {"depth": depths, "head_ratio": self.head_ratios, "ffn_ratio": self.ffn_ratios,
                "hidden_ratio": self.hidden_ratios, "temperature": self.temperatures, "alpha": self.alphas,
                "augment": self.augment}  # fmt: skip

    def reference(self, num_layers: int) -> dict[str, Any]:
        """The least compressed candidate (deepest, least pruned): the search's first trial, whose accuracy at the
        proxy's length measures how far the short trials fall below what the full stages reach."""
        c = self.choices(num_layers)
        return {"depth": max(c["depth"]), "head_ratio": min(c["head_ratio"]), "ffn_ratio": min(c["ffn_ratio"]),
                "hidden_ratio": min(c["hidden_ratio"]), "temperature": c["temperature"][0], "alpha": c["alpha"][0], "augment": c["augment"][0]}  # fmt: skip


@dataclass(frozen=True)
class Candidate:
    """One compression recipe (a point of :class:`CompressionSpace`)."""

    layers: tuple[int, ...]
    head_ratio: float
    ffn_ratio: float
    temperature: float
    alpha: float
    augment: bool = False
    hidden_ratio: float = 0.0

    @classmethod
    def from_params(cls, params: Mapping[str, Any], num_layers: int) -> Candidate:
        return cls(spread_layers(int(params["depth"]), num_layers), float(params["head_ratio"]),
                   float(params["ffn_ratio"]), float(params["temperature"]), float(params["alpha"]),
                   bool(params.get("augment", False)), float(params.get("hidden_ratio", 0.0)))  # fmt: skip

    def at_least_as_compressed_as(self, other: Candidate) -> bool:
        """No more layers and no smaller pruning ratios: by construction no slower and no larger."""
        return (len(self.layers) <= len(other.layers) and self.head_ratio >= other.head_ratio
                and self.ffn_ratio >= other.ffn_ratio and self.hidden_ratio >= other.hidden_ratio)  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["layers"] = list(self.layers)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Candidate:
        """The inverse of :meth:`as_dict` (a trial's ``candidate`` attribute, a ``stage.json`` record)."""
        return cls(**{**data, "layers": tuple(data["layers"])})


@dataclass(frozen=True)
class Scored:
    """A finished trial: its candidate and objective values (accuracy in [0, 1], latency ms, size MB)."""

    number: int
    candidate: Candidate
    accuracy: float
    latency_ms: float
    size_mb: float

    def dominates(self, other: Scored) -> bool:
        """At least as good on all three objectives and better on one."""
        mine, theirs = (self.accuracy, -self.latency_ms, -self.size_mb), (other.accuracy, -other.latency_ms, -other.size_mb)
        return all(a >= b for a, b in zip(mine, theirs)) and mine != theirs


def pareto_front(scored: Sequence[Scored]) -> list[Scored]:
    """The non-dominated trials, fastest first."""
    front = [s for s in scored if not any(o.dominates(s) for o in scored)]
    return sorted(front, key=lambda s: (s.latency_ms, s.size_mb, -s.accuracy))


@dataclass(frozen=True)
class Choice:
    """What the search picked, and why (``within_budget`` false: nothing was, the most accurate was taken)."""

    chosen: Scored
    threshold: float
    within_budget: bool
    reason: str


def budget_threshold(teacher_accuracy: float, reference_accuracy: float | None, budget_points: float) -> float:
    """The least proxy accuracy within budget: ``min(teacher, reference) − budget/100``.

    Proxy trials are short, so they under-estimate what the full stages reach; the reference trial (the least
    compressed candidate, trained as briefly) measures by how much, and the budget is applied to the gap to it.
    """
    base = teacher_accuracy if reference_accuracy is None else min(teacher_accuracy, reference_accuracy)
    return base - budget_points / 100.0


def choose(scored: Sequence[Scored], threshold: float) -> Choice:
    """The fastest (then smallest) trial with accuracy ≥ ``threshold``; else the most accurate one."""
    if not scored:
        raise ValueError("the search finished no trial; give it more search_minutes or a smaller space.")
    within = [s for s in scored if s.accuracy >= threshold - 1e-9]
    if within:
        best = min(within, key=lambda s: (s.latency_ms, s.size_mb, -s.accuracy))
        return Choice(best, threshold, True, f"fastest of {len(within)} trial(s) with validation accuracy >= "
                                             f"{threshold:.4f} (p50 {best.latency_ms:.3f} ms)")
    best = max(scored, key=lambda s: (s.accuracy, -s.latency_ms))
    return Choice(best, threshold, False, f"no trial reached {threshold:.4f}; the most accurate ({best.accuracy:.4f}) "
                                          "was taken")  # fmt: skip


def dominated_early(candidate: Candidate, accuracy: float, check: int, others: Sequence[tuple[Candidate, Sequence[float]]],
                    margin: float = 0.005) -> bool:  # fmt: skip
    """Pareto pruning of a running trial: some earlier trial, at least as compressed (so no slower, no larger),
    was more accurate by ``margin`` at the same validation check ``check`` (0-based) of its run."""
    return any(c.at_least_as_compressed_as(candidate) and len(curve) > check and curve[check] >= accuracy + margin
               for c, curve in others)  # fmt: skip


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rank correlation ``ρ`` (Pearson's r of the ranks, ties sharing their mean rank); NaN below 3 points."""
    if len(xs) != len(ys):
        raise ValueError("spearman needs two sequences of one length.")
    if len(xs) < 3:
        return math.nan
    rx, ry = _ranks(xs), _ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return cov / var if var else math.nan


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks
