"""Sparsity schedules: pure callables ``step -> target sparsity`` evaluated per optimizer step.

A schedule is *any* callable ``(step: int) -> float`` returning the fraction of weights that should be zero
after the optimizer step ``step`` has been taken into account. The classes here additionally expose
``should_update(step)``: the steps at which masks are recomputed (TF-MOT's rule,
``begin_step <= step <= end_step and (step - begin_step) % frequency == 0``). Between update steps their
value is held, so ``schedule(step)`` is always the sparsity the model actually has at ``step``.

Plain callables without ``should_update`` are applied at every step (each update prunes to an *absolute*
target, so re-applying the same value is idempotent for magnitude pruning).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@runtime_checkable
class SparsitySchedule(Protocol):
    """Anything that maps an optimizer step to a target sparsity in ``[0, 1)``."""

    def __call__(self, step: int) -> float: ...


def _check_sparsity(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ValueError(
            f"{name}={value!r} is not a sparsity: pass the fraction of weights to zero, a number in [0, 1) "
            f"(e.g. 0.8 for 80% zeros; 1.0 would remove every weight)."
        )


def _check_steps(begin_step: int, end_step: int | None, frequency: int, *, end_required: bool) -> None:
    if not isinstance(begin_step, int) or begin_step < 0:
        raise ValueError(f"begin_step={begin_step!r} must be a non-negative integer (an optimizer step).")
    if end_step is None:
        if end_required:
            raise ValueError("end_step is required: the optimizer step at which the final sparsity is reached.")
    elif not isinstance(end_step, int) or end_step < begin_step or (end_required and end_step == begin_step):
        relation = ">" if end_required else ">="
        raise ValueError(
            f"end_step={end_step!r} must be an integer {relation} begin_step={begin_step}; compute it as "
            f"begin_step + steps_per_epoch * pruning_epochs."
        )
    if not isinstance(frequency, int) or frequency < 1:
        raise ValueError(f"frequency={frequency!r} must be a positive integer (update masks every N steps).")


class _SteppedSchedule:
    """Shared update rule: recompute on ``begin + k * frequency <= end``; hold the value in between."""

    begin_step: int
    end_step: int | None
    frequency: int

    def sparsity_at(self, step: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def should_update(self, step: int) -> bool:
        """Whether masks are recomputed at ``step`` (TF-MOT's ``_should_prune_in_step``)."""
        in_range = self.begin_step <= step and (self.end_step is None or step <= self.end_step)
        return in_range and (step - self.begin_step) % self.frequency == 0

    def last_update_step(self, step: int) -> int | None:
        """The latest update step ``<= step``, or ``None`` before ``begin_step``."""
        if step < self.begin_step:
            return None
        last = step if self.end_step is None else min(step, self.end_step)
        return self.begin_step + (last - self.begin_step) // self.frequency * self.frequency

    def __call__(self, step: int) -> float:
        """Target sparsity in force at ``step`` (0 before ``begin_step``, held between updates)."""
        update = self.last_update_step(step)
        return 0.0 if update is None else self.sparsity_at(update)


@dataclass(frozen=True)
class ConstantSparsity(_SteppedSchedule):
    """Prune to a fixed ``sparsity`` on every update step from ``begin_step`` (to ``end_step``, if given).

    Args:
        sparsity: Fraction of weights to zero, in ``[0, 1)``.
        begin_step: First optimizer step that prunes.
        end_step: Last step that may update masks; ``None`` keeps updating for the whole run.
        frequency: Update masks every ``frequency`` steps.
    """

    sparsity: float
    begin_step: int = 0
    end_step: int | None = None
    frequency: int = 1

    def __post_init__(self) -> None:
        _check_sparsity("sparsity", self.sparsity)
        _check_steps(self.begin_step, self.end_step, self.frequency, end_required=False)

    def sparsity_at(self, step: int) -> float:
        return float(self.sparsity)


@dataclass(frozen=True)
class PolynomialDecay(_SteppedSchedule):
    """Polynomial sparsity ramp of Zhu & Gupta (2017), "To prune, or not to prune"; TF-MOT's ``PolynomialDecay``.

    ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** power`` with ``t0 = begin_step``,
    ``n * dt = end_step - begin_step`` and ``dt = frequency``; ``power=3`` is the paper's cubic schedule,
    which prunes fast early (while redundancy is high) and slowly near the end. Pick ``end_step - begin_step``
    divisible by ``frequency`` so that ``end_step`` itself is an update step and ``s_f`` is reached.

    Args:
        initial_sparsity: ``s_i``, applied at ``begin_step``.
        final_sparsity: ``s_f``, reached at ``end_step``.
        begin_step: ``t0``.
        end_step: ``t0 + n * dt``.
        power: Exponent (3 = cubic, 1 = linear).
        frequency: ``dt``, steps between mask updates.
    """

    initial_sparsity: float
    final_sparsity: float
    begin_step: int = 0
    end_step: int | None = None
    power: float = 3.0
    frequency: int = 1

    def __post_init__(self) -> None:
        _check_sparsity("initial_sparsity", self.initial_sparsity)
        _check_sparsity("final_sparsity", self.final_sparsity)
        _check_steps(self.begin_step, self.end_step, self.frequency, end_required=True)
        if not isinstance(self.power, (int, float)) or not math.isfinite(self.power) or self.power <= 0:
            raise ValueError(f"power={self.power!r} must be a positive number (3 for Zhu & Gupta's cubic ramp).")

    @classmethod
    def over_fraction(cls, final_sparsity: float, total_steps: int, end_fraction: float, *, updates: int = 50,
                      initial_sparsity: float = 0.0, power: float = 3.0) -> PolynomialDecay:  # fmt: skip
        """The ramp from step 0 that reaches ``final_sparsity`` after ``end_fraction`` of ``total_steps``.

        Masks update every ``max(1, total_steps // updates)`` steps, and ``end_step`` is rounded down to a
        multiple of that frequency (at least one update interval), so the final sparsity is reached on an update
        step. ``total_steps`` is the stage's optimizer steps (``trainer.estimated_stepping_batches``); the
        rest of the stage after ``end_step`` recovers accuracy at the final sparsity.

        Args:
            final_sparsity: ``s_f``.
            total_steps: Optimizer steps of the run the schedule is for.
            end_fraction: Fraction of ``total_steps`` at which ``s_f`` is reached, in ``(0, 1]``.
            updates: Mask updates over the whole run (sets the frequency).
            initial_sparsity: ``s_i`` at step 0.
            power: Exponent (3: Zhu & Gupta's cubic ramp).
        """
        if not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"total_steps={total_steps!r} must be a positive integer (the run's optimizer steps).")
        if not 0.0 < end_fraction <= 1.0:
            raise ValueError(f"end_fraction={end_fraction!r} must be in (0, 1]: the share of the run that ramps.")
        if not isinstance(updates, int) or updates < 1:
            raise ValueError(f"updates={updates!r} must be a positive integer (mask updates over the run).")
        every = max(1, total_steps // updates)
        end = max(1, int(end_fraction * total_steps))
        end = max(end - end % every, every)
        return cls(initial_sparsity, final_sparsity, begin_step=0, end_step=end, power=power, frequency=every)

    def sparsity_at(self, step: int) -> float:
        assert self.end_step is not None  # checked in __post_init__
        progress = min(1.0, max(0.0, (step - self.begin_step) / (self.end_step - self.begin_step)))
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1.0 - progress) ** self.power


@dataclass(frozen=True)
class LinearSparsity(PolynomialDecay):
    """Linear ramp ``s_t = s_i + (s_f - s_i) * (t - t0) / (end_step - t0)``: ``PolynomialDecay`` with ``power=1``."""

    power: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.power != 1.0:
            raise ValueError(f"LinearSparsity has power=1 by definition; use PolynomialDecay(power={self.power}).")


@dataclass(frozen=True)
class IterativeSparsity(_SteppedSchedule):
    """Iterative magnitude pruning rounds of Frankle & Carbin (2019), "The Lottery Ticket Hypothesis".

    Each round trains ``round_length`` steps, then removes ``prune_fraction`` of the weights that remain, so
    after ``r`` rounds the sparsity is ``1 - (1 - prune_fraction) ** r``. Updates happen at
    ``begin_step + r * round_length`` for ``r = 1 .. rounds``.

    Args:
        prune_fraction: ``p``, share of the *remaining* weights removed per round (the paper uses 0.2).
        round_length: Optimizer steps per round.
        rounds: Number of pruning rounds.
        begin_step: Step at which the first round starts training.
    """

    prune_fraction: float
    round_length: int
    rounds: int
    begin_step: int = 0

    def __post_init__(self) -> None:
        _check_sparsity("prune_fraction", self.prune_fraction)
        for name in ("round_length", "rounds"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer.")
        _check_steps(self.begin_step, None, self.round_length, end_required=False)

    @property
    def frequency(self) -> int:  # type: ignore[override]
        return self.round_length

    @property
    def end_step(self) -> int:  # type: ignore[override]
        return self.begin_step + self.rounds * self.round_length

    def should_update(self, step: int) -> bool:
        return step > self.begin_step and super().should_update(step)

    def sparsity_at(self, step: int) -> float:
        completed = (step - self.begin_step) // self.round_length
        return 1.0 - (1.0 - self.prune_fraction) ** completed


def as_schedule(schedule: float | SparsitySchedule) -> SparsitySchedule:
    """Turn a bare number into ``ConstantSparsity(number)``; check that anything else is callable."""
    if isinstance(schedule, bool):
        raise TypeError("schedule must be a sparsity in [0, 1) or a callable step -> sparsity, not a bool.")
    if isinstance(schedule, (int, float)):
        return ConstantSparsity(float(schedule))
    if not callable(schedule):
        raise TypeError(
            f"schedule={schedule!r} is neither a sparsity nor a callable; pass e.g. 0.5 or "
            f"PolynomialDecay(initial_sparsity=0.5, final_sparsity=0.8, begin_step=0, end_step=1000)."
        )
    return schedule


def should_update(schedule: SparsitySchedule, step: int) -> bool:
    """Ask ``schedule.should_update(step)`` when it exists; plain callables update at every step."""
    rule = getattr(schedule, "should_update", None)
    return True if rule is None else bool(rule(step))
