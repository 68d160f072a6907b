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
