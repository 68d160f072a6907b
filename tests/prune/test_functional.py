from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from lit_compress.models.tiny import tiny_bert
from lit_compress.prune.functional import (
    apply_masks,
    compute_masks,
    encoder_linear_filter,
    global_l1_unstructured,
    global_masks,
    ln_structured,
    local_masks,
    model_sparsity,
    module_filter,
    select_parameters,
    serialized_size,
    sparsity_report,
    strip_pruning,
)
from lit_compress.vision.models import LeNet, conv_and_linear


def two_layer_model() -> nn.Sequential:
    """Layer 0 has small weights (|w| in 1..4), layer 1 large ones (|w| in 10..40)."""
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -4.0], [3.0, 2.0]]))
        model[1].weight.copy_(torch.tensor([[-10.0, 40.0], [20.0, 30.0]]))
    return model


def magnitudes(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().abs() for n, p in model.named_parameters()}


def test_local_selection_prunes_each_layer_to_the_target() -> None:
    masks = local_masks(magnitudes(two_layer_model()), 0.5)
    assert torch.equal(masks["0.weight"], torch.tensor([[False, True], [True, False]]))  # drops |1|, |2|
    assert torch.equal(masks["1.weight"], torch.tensor([[False, True], [False, True]]))  # drops |10|, |20|


def test_global_selection_ranks_across_layers() -> None:
    masks = global_masks(magnitudes(two_layer_model()), 0.5)
    assert not masks["0.weight"].any()  # the four smallest of eight weights all sit in layer 0
    assert masks["1.weight"].all()
    masks = compute_masks(magnitudes(two_layer_model()), 0.625, scope="global")  # 5 of 8
    assert torch.equal(masks["1.weight"], torch.tensor([[False, True], [True, True]]))


def test_masks_prune_to_an_absolute_target_while_torch_prune_compounds() -> None:
    torch.manual_seed(0)
    ours, theirs = nn.Linear(10, 10), nn.Linear(10, 10)
    theirs.load_state_dict(ours.state_dict())
    for _ in range(2):
        apply_masks({"weight": ours.weight}, local_masks({"weight": ours.weight.detach().abs()}, 0.5))
        torch_prune.l1_unstructured(theirs, "weight", amount=0.5)
    assert model_sparsity(ours).global_sparsity == 0.5
    assert model_sparsity(theirs).global_sparsity == 0.75  # 50% of the remaining 50% again


def test_seed003_global_l1_on_lenet_and_its_compounding() -> None:
    torch.manual_seed(0)
    model = LeNet()
    layers = [model.conv1, model.conv2, model.fc1, model.fc2, model.fc3]
    total = sum(m.weight.numel() for m in layers)  # 150 + 2400 + 48000 + 10080 + 840
    assert total == 61470
    global_l1_unstructured([(m, "weight") for m in layers], amount=0.2)
    report = model_sparsity(model, conv_and_linear)
    assert sum(report.zeros.values()) == round(0.2 * total)
    assert set(model.fc1.state_dict()) == {"weight_orig", "weight_mask", "bias"}
    global_l1_unstructured([(m, "weight") for m in layers], amount=0.2)
    assert model_sparsity(model, conv_and_linear).global_sparsity == pytest.approx(0.36, abs=1e-4)
    strip_pruning(model)
    assert set(model.fc1.state_dict()) == {"weight", "bias"}
    assert model_sparsity(model, conv_and_linear).global_sparsity == pytest.approx(0.36, abs=1e-4)


def test_ln_structured_zeroes_the_rows_with_smallest_l2_norm() -> None:
    layer = nn.Linear(3, 4, bias=False)
    with torch.no_grad():  # row L2 norms: 5, 1, 3, 13
        layer.weight.copy_(torch.tensor([[3.0, 4.0, 0.0], [1.0, 0.0, 0.0], [0.0, 3.0, 0.0], [5.0, 0.0, 12.0]]))
    ln_structured(layer, "weight", amount=2, n=2, dim=0)
    assert layer.weight.abs().sum(dim=1).tolist() == [7.0, 0.0, 0.0, 17.0]


def test_sparsity_report_counts_and_nonzero_fraction() -> None:
    report = sparsity_report({"a": torch.tensor([0.0, 1.0, 0.0, 2.0]), "b": torch.zeros(6)})
    assert report.zeros == {"a": 2, "b": 6} and report.sizes == {"a": 4, "b": 6}
    assert report.per_tensor == {"a": 0.5, "b": 1.0}
    assert report.global_sparsity == 0.8 and report.nonzero_fraction == pytest.approx(0.2)


def test_serialized_size_strips_and_gzip_rewards_zeros() -> None:
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 64))
    pruned = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 64))
    pruned.load_state_dict(dense.state_dict())
    for layer in pruned:
        torch_prune.l1_unstructured(layer, "weight", amount=0.8)
    before, after = serialized_size(dense), serialized_size(pruned)
    assert after.raw_bytes == before.raw_bytes  # same dense tensors once stripped: zeros cost as much raw
    assert after.gzip_bytes < 0.45 * before.gzip_bytes
    assert before.gzip_bytes > 0.85 * before.raw_bytes  # random floats barely compress
    assert "0.weight_orig" in pruned.state_dict()  # the caller's model is left untouched
    with pytest.raises(ValueError, match="strip_pruning"):
        serialized_size(pruned.state_dict())


def test_default_selection_is_bert_encoder_linears_only() -> None:
    params = select_parameters(tiny_bert(num_layers=2))
    assert len(params) == 2 * 6  # q, k, v, attention output, intermediate, output per layer
    assert all(".encoder." in n and n.endswith(".weight") for n in params)
    model = tiny_bert(num_layers=1)
    linear_names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert "bert.pooler.dense" in linear_names and "classifier" in linear_names
    heads = [(m, n) for n, m in model.named_modules() if n in ("classifier", "bert.pooler.dense")]
    assert len(heads) == 2 and not any(encoder_linear_filter(m, n) for m, n in heads)


def test_module_filter_by_type_and_regex() -> None:
    names = select_parameters(LeNet(), module_filter([nn.Linear], r"^fc[12]$"), ("weight", "bias"))
    assert list(names) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert list(select_parameters(LeNet(), module_filter([nn.Conv2d]))) == ["conv1.weight", "conv2.weight"]
    assert len(select_parameters(LeNet(), module_filter(name_regex="conv"))) == 2


def test_unknown_scope() -> None:
    with pytest.raises(ValueError, match="use 'local'"):
        compute_masks({}, 0.5, scope="layer")  # type: ignore[arg-type]
