"""Seeded, stratified train/validation/test splits (pure functions)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def stratified_split(
    labels: Sequence[int], fractions: Sequence[float], seed: int = 0
) -> list[list[int]]:
    """Split example indices into parts with the same class proportions in each part.

    Per class, indices are shuffled with ``numpy.random.default_rng(seed)`` and cut at the cumulative
    fractions (rounded); every part is then sorted, so the result depends only on labels, fractions and seed.

    Args:
        labels: Integer label of each example.
        fractions: Fraction per part, e.g. ``(0.7, 0.1, 0.2)``; must be positive and sum to 1.
        seed: Seed of the shuffle.

    Returns:
        One sorted index list per part.
    """
    if not fractions or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"Split fractions must be positive and sum to 1, got {list(fractions)}.")
    rng = np.random.default_rng(seed)
    label_arr = np.asarray(labels)
    parts: list[list[int]] = [[] for _ in fractions]
    bounds = np.cumsum([0.0, *fractions])
    for cls in np.unique(label_arr):
        idx = np.flatnonzero(label_arr == cls)
        rng.shuffle(idx)
        cuts = np.rint(bounds * len(idx)).astype(int)
        for p in range(len(fractions)):
            parts[p].extend(idx[cuts[p] : cuts[p + 1]].tolist())
    return [sorted(p) for p in parts]
