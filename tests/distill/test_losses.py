import math

import pytest
import torch
import torch.nn.functional as F

from lit_compress.distill.losses import (
    CosineEmbeddingLoss,
    DistillationLoss,
    HiddenStateMSELoss,
    KDLoss,
    default_layer_map,
    labelled_cross_entropy,
)


def hand_kd(s: torch.Tensor, t: torch.Tensor, temp: float) -> float:
    """T² · mean_batch Σ_c p_t log(p_t / p_s), written out element by element."""
    total = 0.0
    for row_s, row_t in zip(s.tolist(), t.tolist(), strict=True):
        zs = [math.exp(x / temp) for x in row_s]
        zt = [math.exp(x / temp) for x in row_t]
        ps = [z / sum(zs) for z in zs]
        pt = [z / sum(zt) for z in zt]
        total += sum(a * math.log(a / b) for a, b in zip(pt, ps, strict=True))
    return temp * temp * total / len(s)


@pytest.mark.parametrize("temp", [1.0, 2.0, 7.0])
def test_kd_matches_hand_formula(temp: float) -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    assert KDLoss(temp)(s, t).item() == pytest.approx(hand_kd(s, t, temp), rel=1e-5)


def test_kd_t_squared_scaling() -> None:
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g)
    raw = F.kl_div(F.log_softmax(s / 4, -1), F.softmax(t / 4, -1), reduction="batchmean")
    assert KDLoss(4.0)(s, t).item() == pytest.approx(16 * raw.item(), rel=1e-6)


def test_alpha_one_is_pure_ce_and_zero_is_pure_kd() -> None:
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    assert DistillationLoss(1.0, 3.0)(s, t, y)["loss"].item() == pytest.approx(F.cross_entropy(s, y).item())
    assert DistillationLoss(0.0, 3.0)(s, t, y)["loss"].item() == pytest.approx(hand_kd(s, t, 3.0), rel=1e-5)
    mix = DistillationLoss(0.3, 3.0)(s, t, y)["loss"].item()
    assert mix == pytest.approx(0.3 * F.cross_entropy(s, y).item() + 0.7 * hand_kd(s, t, 3.0), rel=1e-5)


def hand_ce(row: list[float], label: int) -> float:
    return -math.log(math.exp(row[label]) / sum(math.exp(x) for x in row))


def test_unlabelled_rows_are_skipped_by_ce_and_taught_by_kd() -> None:
    s = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [-1.0, 3.0, 0.0], [0.0, 0.0, 4.0]])
    t = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0], [3.0, 0.0, 0.0]])
    y = torch.tensor([0, -100, 1, -100])
    ce = (hand_ce([2.0, 0.0, -1.0], 0) + hand_ce([-1.0, 3.0, 0.0], 1)) / 2  # the two labelled rows only
    terms = DistillationLoss(0.25, 2.0)(s, t, y)
    assert terms["ce"].item() == pytest.approx(ce, rel=1e-6)
    assert terms["kd"].item() == pytest.approx(hand_kd(s, t, 2.0), rel=1e-5)  # all four rows
    assert terms["loss"].item() == pytest.approx(0.25 * ce + 0.75 * hand_kd(s, t, 2.0), rel=1e-5)


def test_a_batch_without_labelled_rows_has_zero_ce_and_finite_gradients() -> None:
    s = torch.randn(3, 4, requires_grad=True)
    terms = DistillationLoss(0.5)(s, torch.randn(3, 4), torch.full((3,), -100))
    assert terms["ce"].item() == 0.0 and math.isfinite(terms["loss"].item())
    terms["loss"].backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0  # the KD term still teaches
    assert labelled_cross_entropy(torch.zeros(2, 3), torch.tensor([2, -100])).item() == pytest.approx(math.log(3))


def test_no_labels_requires_alpha_zero() -> None:
    s, t = torch.randn(2, 3), torch.randn(2, 3)
    assert DistillationLoss(0.0)(s, t, None)["ce"].item() == 0.0
    with pytest.raises(ValueError, match="alpha=0"):
        DistillationLoss(0.5)(s, t, None)


@pytest.mark.parametrize(("kwargs", "match"), [({"alpha": 1.5}, "alpha"), ({"temperature": 0.0}, "temperature")])
def test_invalid_hyperparameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DistillationLoss(**kwargs)


def test_hidden_terms_ignore_padding() -> None:
    hs = torch.tensor([[[1.0, 0.0], [5.0, 5.0]]])
    ht = torch.tensor([[[0.0, 0.0], [-9.0, 3.0]]])
    mask = torch.tensor([[1, 0]])
    assert HiddenStateMSELoss()(hs, ht, mask).item() == pytest.approx(0.5)  # ((1-0)² + 0²) / 2
    ht2 = torch.tensor([[[0.0, 1.0], [1.0, 1.0]]])
    assert CosineEmbeddingLoss()(hs, ht2, mask).item() == pytest.approx(1.0)  # orthogonal on the real token


def test_default_layer_map_is_uniform() -> None:
    assert default_layer_map(3, 6) == {0: 1, 1: 3, 2: 5}
    assert default_layer_map(2, 12) == {0: 5, 1: 11}
