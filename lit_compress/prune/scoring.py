"""Importance scores for unstructured pruning: higher score = more important = kept.

Pure tensor functions; the masking in :mod:`lit_compress.prune.functional` keeps the top-k scores.

- magnitude (L1): ``S = |W|`` (Han et al. 2015; TF-MOT ``prune_low_magnitude``;
  ``torch.nn.utils.prune.l1_unstructured``).
- movement: ``S <- S - W * dL/dW`` accumulated every optimizer step (Sanh, Wolf & Rush 2020, "Movement
  Pruning"): weights moving *away* from zero during fine-tuning score high, whatever their magnitude.
- random: a fixed, seeded ranking -- the baseline any criterion has to beat.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Criterion = Literal["magnitude", "movement", "random"]
CRITERIA: tuple[str, ...] = ("magnitude", "movement", "random")


def magnitude_scores(weight: Tensor) -> Tensor:
    """L1 importance ``|W|`` (a detached copy)."""
    return weight.detach().abs()


def random_scores(weight: Tensor, generator: torch.Generator) -> Tensor:
    """Uniform random scores shaped like ``weight``, drawn on CPU from ``generator`` (same on every rank)."""
    return torch.rand(weight.shape, generator=generator, dtype=torch.float32)


def movement_update(scores: Tensor, weight: Tensor, grad: Tensor) -> Tensor:
    """Accumulate one step of movement scores in place: ``S <- S - W * dL/dW``; returns ``scores``.

    This is the first-order (straight-through) score of Sanh et al. (2020), eq. 5 with learning rate 1:
    ``S_T = -sum_t (dL/dW)^(t) * W^(t)``. Weights that are already masked to zero stop accumulating.

    Args:
        scores: Running scores, updated in place.
        weight: Current weights ``W``.
        grad: ``dL/dW`` of the step (after any gradient all-reduce, so that every rank agrees).
    """
    scores.sub_(weight.detach().to(scores.dtype) * grad.detach().to(scores.dtype))
    return scores


def check_criterion(criterion: str) -> Criterion:
    """Validate a criterion name with an actionable message."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion={criterion!r} is unknown; choose one of {', '.join(CRITERIA)}.")
    return criterion  # type: ignore[return-value]
