from __future__ import annotations

import pytest
import torch
from torch import nn

from lit_compress.prune.scoring import check_criterion, magnitude_scores, movement_update, random_scores


def test_magnitude_is_absolute_value_detached() -> None:
    w = torch.tensor([[-3.0, 0.5], [0.0, -0.25]], requires_grad=True)
    s = magnitude_scores(w)
    assert torch.equal(s, torch.tensor([[3.0, 0.5], [0.0, 0.25]]))
    assert not s.requires_grad


def test_movement_scores_accumulate_minus_w_times_grad_by_hand() -> None:
    # y = W x with L = sum(y) => dL/dW[i, j] = x[j] for every row i.
    layer = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 3.0]]))
    scores = torch.zeros(2, 2)
    layer(torch.tensor([2.0, 1.0])).sum().backward()
    movement_update(scores, layer.weight, layer.weight.grad)
    # S = -W * G, G = [[2, 1], [2, 1]]
    assert torch.equal(scores, torch.tensor([[-2.0, 2.0], [-1.0, -3.0]]))
    # a second step with new weights and gradient x = [-1, 4]
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[2.0, 0.0], [-1.0, 1.0]]))
    layer.weight.grad = None
    layer(torch.tensor([-1.0, 4.0])).sum().backward()
    movement_update(scores, layer.weight, layer.weight.grad)
    # S += -W * [[-1, 4], [-1, 4]] = [[2, 0], [-1, -4]]
    assert torch.equal(scores, torch.tensor([[0.0, 2.0], [-2.0, -7.0]]))


def test_random_scores_are_seeded() -> None:
    w = torch.empty(4, 5)
    a = random_scores(w, torch.Generator().manual_seed(3))
    b = random_scores(w, torch.Generator().manual_seed(3))
    c = random_scores(w, torch.Generator().manual_seed(4))
    assert a.shape == (4, 5) and torch.equal(a, b) and not torch.equal(a, c)
    assert 0.0 <= float(a.min()) and float(a.max()) < 1.0


def test_unknown_criterion() -> None:
    assert check_criterion("movement") == "movement"
    with pytest.raises(ValueError, match="choose one of magnitude, movement, random"):
        check_criterion("taylor")
