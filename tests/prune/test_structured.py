from __future__ import annotations

import copy

import pytest
import torch

from lit_compress.models.architecture import prune_layer
from lit_compress.models.layout import layout_of
from lit_compress.models.tiny import tiny_bert
from lit_compress.prune.structured import (
    UnitScores,
    structured_magnitude_scores,
    prune_heads_and_ffn,
    remap_optimizer_state,
    select_units,
    structured_taylor_scores,
)

HEAD = 8  # tiny_bert: hidden 32, 4 heads


def _inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 128, (4, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _mask_units(model, kept_heads, kept_ffn) -> None:
    """Zero the outputs of every pruned head / FFN channel with pre-hooks on the output projections."""
    for layer, heads, ffn in zip(model.bert.encoder.layer, kept_heads, kept_ffn):
        head_gate = torch.zeros(layer.attention.output.dense.in_features)
        for h in heads.tolist():
            head_gate[h * HEAD : (h + 1) * HEAD] = 1.0
        ffn_gate = torch.zeros(layer.output.dense.in_features)
        ffn_gate[ffn] = 1.0
        layer.attention.output.dense.register_forward_pre_hook(lambda m, a, g=head_gate: (a[0] * g,))
        layer.output.dense.register_forward_pre_hook(lambda m, a, g=ffn_gate: (a[0] * g,))


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_pruned_model_equals_unpruned_model_with_those_units_masked(scope: str) -> None:
    model = tiny_bert(num_layers=3)
    reference = copy.deepcopy(model)
    result = prune_heads_and_ffn(model, head_pruning_ratio=0.5, ffn_pruning_ratio=0.5, scope=scope)
    _mask_units(reference, result.kept_heads, result.kept_ffn)
    inputs = _inputs()
    with torch.no_grad():
        pruned, masked = model.bert(**inputs).last_hidden_state, reference.bert(**inputs).last_hidden_state
        full = tiny_bert(num_layers=3).bert(**inputs).last_hidden_state
        torch.testing.assert_close(model(**inputs).logits, reference(**inputs).logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(pruned, masked, rtol=0, atol=1e-5)
    assert (pruned - full).abs().max() > 1e-2  # 1000x the tolerance above: the pruning really changed the function
    assert sum(len(h) for h in result.kept_heads) == 6 and sum(len(f) for f in result.kept_ffn) == 96
    for layer, heads in zip(model.bert.encoder.layer, result.kept_heads):
        attn = layer.attention.self
        assert attn.num_attention_heads == len(heads) and attn.all_head_size == len(heads) * HEAD
        assert attn.attention_head_size == HEAD and attn.scaling == HEAD**-0.5  # head width unchanged
        assert attn.query.weight.shape == (len(heads) * HEAD, 32)  # hidden size kept
        assert layer.attention.output.dense.weight.shape == (32, len(heads) * HEAD)


def test_magnitude_scores_match_group_l2_formula() -> None:
    model = tiny_bert()
    scores = structured_magnitude_scores(model)
    layer = model.bert.encoder.layer[1]
    attn, out = layer.attention.self, layer.attention.output.dense
    h = slice(2 * HEAD, 3 * HEAD)
    blocks = (attn.query.weight[h], attn.key.weight[h], attn.value.weight[h], out.weight[:, h])
    expected_head = sum(w.pow(2).sum() for w in blocks) / 4
    torch.testing.assert_close(scores.heads[1][2], expected_head.detach())
    c = 17
    expected_ffn = (layer.intermediate.dense.weight[c].pow(2).sum() + layer.output.dense.weight[:, c].pow(2).sum()) / 2
    torch.testing.assert_close(scores.ffn[1][c], expected_ffn.detach())


def test_taylor_scores_equal_gradient_of_a_unit_gate() -> None:
    model = tiny_bert()
    gates = []
    for layer in model.bert.encoder.layer:
        head_gate = torch.ones(4, requires_grad=True)
        ffn_gate = torch.ones(64, requires_grad=True)
        gates.append((head_gate, ffn_gate))
        layer.attention.output.dense.register_forward_pre_hook(
            lambda m, a, g=head_gate: (a[0] * g.repeat_interleave(HEAD),)
        )
        layer.output.dense.register_forward_pre_hook(lambda m, a, g=ffn_gate: (a[0] * g,))
    loss = model(**_inputs(), labels=torch.tensor([0, 1, 2, 1])).loss
    loss.backward()
    scores = structured_taylor_scores(model)
    for layer_scores_h, layer_scores_f, (head_gate, ffn_gate) in zip(scores.heads, scores.ffn, gates):
        torch.testing.assert_close(layer_scores_h, head_gate.grad.abs(), rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(layer_scores_f, ffn_gate.grad.abs(), rtol=1e-4, atol=1e-7)


def test_taylor_scores_need_gradients() -> None:
    with pytest.raises(RuntimeError, match="after loss.backward"):
        structured_taylor_scores(tiny_bert())


class _SideBranchIntermediate(torch.nn.Module):
    """A BERT intermediate whose activations also feed an extra Linear: cutting only the FFN pair would break it."""

    def __init__(self, dense: torch.nn.Linear) -> None:
        super().__init__()
        self.dense, self.side = dense, torch.nn.Linear(dense.out_features, dense.out_features)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.gelu(self.dense(hidden))
        return x + self.side(x)


def test_refuses_models_where_depgraph_couples_more_layers() -> None:
    model = tiny_bert()
    layer = model.bert.encoder.layer[1]
    layer.intermediate = _SideBranchIntermediate(layer.intermediate.dense)
    with pytest.raises(RuntimeError, match="coupled unexpected layers with the FFN channels: \\['Linear'\\]"):
        prune_heads_and_ffn(model, ffn_pruning_ratio=0.5)


def test_select_units_per_layer_and_global_by_hand() -> None:
    scores = [torch.tensor([0.1, 0.9, 0.5, 0.3]), torch.tensor([5.0, 4.0, 0.2, 0.0])]
    local = select_units(scores, [4, 4], 0.5, scope="layer")
    assert [k.tolist() for k in local] == [[1, 2], [0, 1]]
    # global keeps 4 of 8: the top-1 of each layer is reserved (0.9 and 5.0), then 4.0 and 0.5 win the rest
    glob = select_units(scores, [4, 4], 0.5, scope="global")
    assert [k.tolist() for k in glob] == [[1, 2], [0, 1]]
    glob = select_units(scores, [4, 4], 0.75, scope="global")  # keeps 2: the reserved one per layer
    assert [k.tolist() for k in glob] == [[1], [0]]
    glob = select_units(scores, [4, 4], 0.625, scope="global")  # keeps 3: 4.0 beats 0.5
    assert [k.tolist() for k in glob] == [[1], [0, 1]]


def test_select_units_is_absolute_keeps_minimum_and_rounds() -> None:
    # a layer already pruned to 2 of 8 units is not pruned again by a 50% target, and never regrows
    assert [len(k) for k in select_units([torch.rand(2), torch.rand(8)], [8, 8], 0.5)] == [2, 4]
    assert [len(k) for k in select_units([torch.rand(4)], [4], 1.0, min_keep=1)] == [1]
    assert [len(k) for k in select_units([torch.rand(64)], [64], 0.7, round_to=8)] == [24]  # 19 -> 24


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pruning_ratio": 1.5}, r"in \[0, 1\]"),
        ({"pruning_ratio": 0.5, "scope": "layers"}, "'layer' or 'global'"),
        ({"pruning_ratio": 0.5, "min_keep": 0}, "min_keep must be >= 1"),
        ({"pruning_ratio": 0.5, "round_to": 0}, "round_to must be >= 1"),
    ],
)
def test_select_units_rejects_bad_settings(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        select_units([torch.rand(4)], [4], **kwargs)


def test_pruning_all_heads_keeps_min_heads_and_still_runs() -> None:
    model = tiny_bert()
    prune_heads_and_ffn(model, head_pruning_ratio=1.0, ffn_pruning_ratio=1.0, min_heads=1, min_ffn=2)
    assert [l.attention.self.num_attention_heads for l in model.bert.encoder.layer] == [1, 1]
    assert [l.intermediate.dense.out_features for l in model.bert.encoder.layer] == [2, 2]
    assert torch.isfinite(model(**_inputs()).logits).all()
    with pytest.raises(ValueError, match="at least one"):
        prune_layer(layout_of(model), model.bert.encoder.layer[0], keep_heads=torch.tensor([], dtype=torch.long))


def test_repeated_calls_prune_to_absolute_targets() -> None:
    model = tiny_bert()
    prune_heads_and_ffn(model, 0.25, 0.25, scores=UnitScores.zeros_like(model))
    prune_heads_and_ffn(model, 0.25, 0.25)  # same target: nothing more goes
    assert [l.attention.self.num_attention_heads for l in model.bert.encoder.layer] == [3, 3]
    prune_heads_and_ffn(model, 0.5, 0.5)
    assert [l.attention.self.num_attention_heads for l in model.bert.encoder.layer] == [2, 2]
    assert [l.intermediate.dense.out_features for l in model.bert.encoder.layer] == [32, 32]


def test_optimizer_state_follows_the_cut_parameters() -> None:
    model = tiny_bert().train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    model.bert.encoder.layer[0].attention.self.key.weight.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    labels = torch.tensor([0, 1, 2, 1])
    for _ in range(2):
        opt.zero_grad()
        model(**_inputs(), labels=labels).loss.backward()
        opt.step()
    query = model.bert.encoder.layer[0].attention.self.query.weight
    old_avg = opt.state[query]["exp_avg"].clone()
    result = prune_heads_and_ffn(model, head_pruning_ratio=0.5, ffn_pruning_ratio=0.5)
    remap_optimizer_state(opt, result.remaps)

    new_query = model.bert.encoder.layer[0].attention.self.query.weight
    rows = (result.kept_heads[0][:, None] * HEAD + torch.arange(HEAD)).flatten()
    torch.testing.assert_close(opt.state[new_query]["exp_avg"], old_avg[rows])
    assert float(opt.state[new_query]["step"]) == 2.0
    assert not model.bert.encoder.layer[0].attention.self.key.weight.requires_grad  # frozen stays frozen
    live = {id(p) for p in model.parameters()}
    assert all(id(p) in live for g in opt.param_groups for p in g["params"])
    assert all(id(p) in live for p in opt.state)
    opt.zero_grad()
    model(**_inputs(), labels=labels).loss.backward()
    opt.step()  # shapes of state and params agree
    assert float(opt.state[new_query]["step"]) == 3.0
