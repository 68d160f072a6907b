"""Every supported encoder family through the layout: cuts, scores, students, save/load, filters, errors."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from lit_compress.models.architecture import current_architecture, read_architecture
from lit_compress.models.io import ARCH_FILE, load_model_dir, save_model_dir
from lit_compress.models.layout import (
    LAYOUTS,
    BertLayout,
    LayoutError,
    default_linear_filter,
    encoder_layers,
    layout_of,
    register_layout,
)
from lit_compress.models.architecture import prune_layer
from lit_compress.models.student import student_from_teacher
from lit_compress.models.tiny import TINY_FAMILIES, TINY_VISION, tiny_model, tiny_vit
from lit_compress.prune.structured import prune_heads_and_ffn, structured_magnitude_scores, structured_taylor_scores
from lit_compress.quant.fake_quant import FakeQuantizedLinear, prepare_qat

HEAD = 8  # tiny_model and tiny_vit: hidden 32, 4 heads of 8, FFN 64
#: Text families, and ViT (16x16 one-channel images, 16 patches) where a test is input-agnostic.
FAMILIES = (*TINY_FAMILIES, *TINY_VISION)


def _tiny(family: str, **kwargs: Any) -> nn.Module:
    return tiny_vit(**kwargs) if family in TINY_VISION else tiny_model(family, **kwargs)


def _inputs(model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    if model is not None and model.config.model_type in TINY_VISION:
        return {"pixel_values": torch.randn(3, 1, 16, 16, generator=g)}
    ids = torch.randint(5, 128, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _gate(model: nn.Module, head_gates: list[torch.Tensor], ffn_gates: list[torch.Tensor]) -> None:
    """Multiply each head's / FFN channel's output by a gate (pre-hooks on the output projections)."""
    layout = layout_of(model)
    for layer, heads, ffn in zip(encoder_layers(model), head_gates, ffn_gates, strict=True):
        layout.attention_output(layer).register_forward_pre_hook(lambda m, a, g=heads: (a[0] * g.repeat_interleave(HEAD),))
        layout.ffn_output(layer).register_forward_pre_hook(lambda m, a, g=ffn: (a[0] * g,))


def _logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(**_inputs(model)).logits


def _hidden(model: nn.Module) -> torch.Tensor:
    """The last encoder layer's output (random tiny heads give logits too small to tell changes apart)."""
    with torch.no_grad():
        return model(**_inputs(model), output_hidden_states=True).hidden_states[-1]


def test_every_tiny_family_has_a_layout() -> None:
    assert set(TINY_FAMILIES) <= set(LAYOUTS)


@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_model_equals_the_unpruned_one_with_those_units_gated_off(family: str) -> None:
    model = _tiny(family, num_layers=3)
    reference = copy.deepcopy(model)
    result = prune_heads_and_ffn(model, head_pruning_ratio=0.5, ffn_pruning_ratio=0.75)
    head_gates = [torch.zeros(4).index_fill(0, k, 1.0) for k in result.kept_heads]
    ffn_gates = [torch.zeros(64).index_fill(0, k, 1.0) for k in result.kept_ffn]
    _gate(reference, head_gates, ffn_gates)
    torch.testing.assert_close(_hidden(model), _hidden(reference), rtol=0, atol=1e-5)
    torch.testing.assert_close(_logits(model), _logits(reference), rtol=0, atol=1e-6)
    assert (_hidden(model) - _hidden(_tiny(family, num_layers=3))).abs().max() > 1e-3  # 100x the tolerance: it did change
    blocks = 1 if family == "albert" else 3  # ALBERT: one block shared by the 3 layers
    assert current_architecture(model).num_heads == (2,) * blocks
    assert current_architecture(model).intermediate_sizes == (16,) * blocks
    params = sum(p.numel() for p in model.parameters())
    assert params < sum(p.numel() for p in _tiny(family, num_layers=3).parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_magnitude_scores_are_the_mean_squared_norm_of_each_coupled_block(family: str) -> None:
    model = _tiny(family)
    layout = layout_of(model)
    layer = encoder_layers(model)[0]
    scores = structured_magnitude_scores(model)
    h, c = 2, 17
    blocks = []
    for s in layout.attention_slices(layer):
        for offset in s.offsets:
            channels = slice(offset + h * HEAD, offset + (h + 1) * HEAD)
            blocks.append(s.linear.weight[channels] if s.dim == 0 else s.linear.weight[:, channels])
    assert len(blocks) == 4  # q, k, v and the output projection (fused or not)
    expected = sum(b.pow(2).sum() for b in blocks) / len(blocks)
    torch.testing.assert_close(scores.heads[0][h], expected.detach())
    ffn = [(s.linear.weight[o + c] if s.dim == 0 else s.linear.weight[:, o + c]) for s in layout.ffn_slices(layer)
           for o in s.offsets]  # fmt: skip
    torch.testing.assert_close(scores.ffn[0][c], (sum(w.pow(2).sum() for w in ffn) / len(ffn)).detach())


@pytest.mark.parametrize("family", FAMILIES)
def test_taylor_scores_equal_the_gradient_of_a_unit_gate(family: str) -> None:
    model = _tiny(family).train()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    layers = encoder_layers(model)
    head_gates = [torch.ones(4, requires_grad=True) for _ in layers]
    ffn_gates = [torch.ones(64, requires_grad=True) for _ in layers]
    _gate(model, head_gates, ffn_gates)
    model(**_inputs(model), labels=torch.tensor([0, 1, 2])).loss.backward()
    scores = structured_taylor_scores(model)
    for got, gate in zip([*scores.heads, *scores.ffn], [*head_gates, *ffn_gates]):
        torch.testing.assert_close(got, gate.grad.abs(), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("family", FAMILIES)
def test_student_from_all_teacher_layers_is_the_teacher(family: str) -> None:
    teacher = _tiny(family, num_layers=3)
    student = student_from_teacher(teacher, [0, 1, 2]).eval()
    torch.testing.assert_close(_hidden(student), _hidden(teacher), rtol=0, atol=1e-6)
    torch.testing.assert_close(_logits(student), _logits(teacher), rtol=0, atol=1e-6)
    shallow = student_from_teacher(teacher, [0, 2])
    assert shallow.config.num_hidden_layers == 2
    if family == "albert":
        return  # one shared block: the student reuses it for 2 layers
    layout = layout_of(teacher)
    for i, kept in enumerate([0, 2]):
        ours, theirs = layout.layer_list(shallow)[i].state_dict(), layout.layer_list(teacher)[kept].state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    if family == "modernbert":
        assert shallow.config.layer_types == [teacher.config.layer_types[0], teacher.config.layer_types[2]]


@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_model_reloads_from_its_directory_with_identical_logits(family: str, tmp_path) -> None:
    model = _tiny(family)
    assert read_architecture(model) is None
    prune_heads_and_ffn(model, head_pruning_ratio=0.25, ffn_pruning_ratio=0.5)
    spec = read_architecture(model)
    assert spec is not None and spec.num_heads[0] == 3
    out = save_model_dir(model, tmp_path / "model")
    assert (out / ARCH_FILE).exists()
    reloaded = load_model_dir(out)
    assert current_architecture(reloaded) == spec
    torch.testing.assert_close(_hidden(reloaded), _hidden(model), rtol=0, atol=0)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_default_filter_selects_the_encoder_blocks_linears_only(family: str) -> None:
    model = tiny_model(family)
    names = prepare_qat(model)
    layout = layout_of(model)
    expected = {id(s.linear) for layer in encoder_layers(model)
                for s in [*layout.attention_slices(layer), *layout.ffn_slices(layer)]}  # fmt: skip
    chosen = {id(model.get_submodule(n)) for n in names}
    assert chosen == expected
    assert all(isinstance(model.get_submodule(n), FakeQuantizedLinear) for n in names)
    assert not any("classifier" in n for n in names)
    assert default_linear_filter(model)(model.get_submodule(names[0]), names[0])


def test_unknown_family_is_refused_with_what_to_write() -> None:
    class Plain(nn.Module):
        config = type("Config", (), {"model_type": "my-encoder"})()

    with pytest.raises(LayoutError, match=r"no model layout for Plain \(model_type 'my-encoder'\).*register_layout"):
        encoder_layers(Plain())


def test_a_user_layout_is_registered_for_a_new_model_type(monkeypatch) -> None:
    model = tiny_model("bert")
    model.config.model_type = "my-bert"
    monkeypatch.setattr("lit_compress.models.layout.LAYOUTS", dict(LAYOUTS))
    with pytest.raises(LayoutError):
        layout_of(model)
    register_layout(BertLayout(), ["my-bert"])
    assert len(encoder_layers(model)) == 2
    prune_heads_and_ffn(model, head_pruning_ratio=0.5)
    assert current_architecture(model).num_heads == (2, 2)


def test_modules_missing_where_the_layout_expects_them_are_named() -> None:
    model = tiny_model("bert")
    del model.bert.encoder.layer[0].intermediate
    with pytest.raises(LayoutError, match="does not have the modules BertLayout expects"):
        encoder_layers(model)


def test_deberta_with_unshared_position_projections_cuts_them_with_the_heads() -> None:
    model = tiny_model("deberta-v2", share_att_key=False)
    attn = encoder_layers(model)[0].attention.self
    assert hasattr(attn, "pos_key_proj") and hasattr(attn, "pos_query_proj")
    reference = copy.deepcopy(model)
    result = prune_heads_and_ffn(model, head_pruning_ratio=0.5)
    _gate(reference, [torch.zeros(4).index_fill(0, k, 1.0) for k in result.kept_heads], [torch.ones(64)] * 2)
    torch.testing.assert_close(_hidden(model), _hidden(reference), rtol=0, atol=1e-5)
    assert attn.pos_key_proj.out_features == attn.pos_query_proj.out_features == 2 * HEAD


def test_every_tiny_vision_family_has_a_layout() -> None:
    assert set(TINY_VISION) <= set(LAYOUTS)
    assert not set(TINY_VISION) & set(TINY_FAMILIES)  # the text main-job tests never see ViT


def test_vit_heads_and_mlp_channels_cut_by_its_layout_equal_gating_them_off() -> None:
    model = tiny_vit(num_layers=2)
    reference, layout = copy.deepcopy(model), layout_of(model)
    keep_heads, keep_ffn = [torch.tensor([0, 3]), torch.tensor([1])], [torch.arange(0, 64, 3), torch.arange(40)]
    for layer, heads, ffn in zip(encoder_layers(model), keep_heads, keep_ffn):
        prune_layer(layout, layer, heads, ffn)
    _gate(reference, [torch.zeros(4).index_fill(0, k, 1.0) for k in keep_heads],
          [torch.zeros(64).index_fill(0, k, 1.0) for k in keep_ffn])  # fmt: skip
    torch.testing.assert_close(_hidden(model), _hidden(reference), rtol=0, atol=1e-5)
    first = encoder_layers(model)[0].attention
    assert (first.q_proj.out_features, first.o_proj.in_features, first.num_attention_heads) == (16, 16, 2)
    assert encoder_layers(model)[1].mlp.fc1.out_features == 40


def test_vit_default_filter_selects_the_blocks_linears_not_the_patch_embedding_or_head() -> None:
    model = tiny_vit()
    layout, select = layout_of(model), default_linear_filter(model)
    parts = ("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj", "mlp.fc1", "mlp.fc2")
    expected = {f"vit.layers.{i}.{n}" for i in range(2) for n in parts}
    assert {n for n, m in model.named_modules() if select(m, n)} == expected
    assert {id(s.linear) for layer in encoder_layers(model) for s in layout.attention_slices(layer)} <= {
        id(model.get_submodule(n)) for n in expected}  # fmt: skip
    names = set(prepare_qat(model))
    assert expected <= names and "classifier" not in names
    assert all(isinstance(model.get_submodule(n), FakeQuantizedLinear) for n in expected)


def test_vit_dummy_inputs_are_one_image_of_the_config_geometry() -> None:
    model = tiny_vit(image_size=16, num_channels=1)
    inputs = layout_of(model).dummy_inputs(model)
    assert inputs["pixel_values"].shape == (1, 1, 16, 16)
    assert model(**inputs).logits.shape == (1, 3)
