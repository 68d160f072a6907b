"""Structured pruning of attention heads and FFN channels in Hugging Face encoders (pure, Trainer-free).

Whole heads and whole intermediate channels are removed, so the pruned model is really smaller and faster;
the hidden size is kept, so embeddings, LayerNorms, the pooler and classifier are untouched. Every family with
a :class:`~lit_compress.models.layout.EncoderLayout` is supported (BERT, RoBERTa, XLM-R, ELECTRA, DistilBERT,
ALBERT, DeBERTa-v2/v3, ModernBERT): the layout says which channels of which Linear belong to a head or an FFN
channel (fused ``Wqkv`` and GLU ``Wi`` included), and :mod:`lit_compress.models.surgery` cuts them.

Coupling is checked with torch-pruning (Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023): its
``DependencyGraph`` traces the model and the group rooted at a block's attention-output (FFN-output) input
channels must hold exactly the Linears the layout names; if the trace couples anything else (a custom branch
that reads the FFN activations), cutting only those would break the model and pruning refuses. Heads are cut
whole, so the head width and the attention scaling (``head_size ** -0.5``) stay; the head count is updated.
(torch-pruning's own head pruner chooses units with its own importance and ratio; here units are chosen by
accumulated scores on a schedule, so only its graph is used.)

Importance (higher = keep):
    * ``structured_magnitude_scores``: group L2 magnitude (torch-pruning's ``GroupMagnitudeImportance(p=2,
      mean)``): head h scores ``(||W_q[h]||² + ||W_k[h]||² + ||W_v[h]||² + ||W_o[:, h]||²) / 4``, FFN channel c
      ``(||W_in[c, :]||² + ||W_out[:, c]||²) / 2`` (a GLU's gate rows count as one more member). Data-free.
    * ``structured_taylor_scores``: first-order Taylor estimate of the loss change when a unit is removed, through a
      virtual gate ξ on the unit's output (Michel et al., "Are Sixteen Heads Really Better than One?", NeurIPS
      2019; Molchanov et al., "Importance Estimation for Neural Network Pruning", CVPR 2019):
      ``I_h = |∂L/∂ξ_h| = |Σ_{i, j∈h} W_o[i, j] · ∂L/∂W_o[i, j]|`` (exact, since the gated input enters
      ``W_o`` linearly); summed over batches it is Michel et al.'s head importance. Needs gradients.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from lit_compress.models.architecture import ArchitectureSpec, current_architecture, prune_layer
from lit_compress.models.layout import encoder_layers, layout_of
from lit_compress.models.surgery import ParamRemap, UnitSlice

Scope = Literal["layer", "global"]


@dataclass
class UnitScores:
    """Importance per prunable unit: ``heads[l]`` has one score per current head of layer ``l``, ``ffn[l]`` one
    per current intermediate channel."""

    heads: list[torch.Tensor]
    ffn: list[torch.Tensor]

    def add_(self, other: UnitScores) -> UnitScores:
        """Accumulate ``other`` into ``self`` (shapes must match)."""
        for mine, theirs in zip([*self.heads, *self.ffn], [*other.heads, *other.ffn], strict=True):
            mine.add_(theirs.to(mine))
        return self

    def select(self, kept_heads: Sequence[torch.Tensor], kept_ffn: Sequence[torch.Tensor]) -> UnitScores:
        """Scores of the units that survived a pruning step (indices as in :class:`StructuredPruningResult`)."""
        return UnitScores(
            heads=[s[k.to(s.device)] for s, k in zip(self.heads, kept_heads, strict=True)],
            ffn=[s[k.to(s.device)] for s, k in zip(self.ffn, kept_ffn, strict=True)],
        )

    @classmethod
    def zeros_like(cls, model: nn.Module) -> UnitScores:
        """All-zero scores shaped like ``model``'s current heads and channels (an empty accumulator)."""
        spec = current_architecture(model)
        return cls([torch.zeros(n) for n in spec.num_heads], [torch.zeros(n) for n in spec.intermediate_sizes])


@dataclass
class StructuredPruningResult:
    """Outcome of one pruning call: kept indices (into the units *before* the call), cut parameters, new shape."""

    kept_heads: list[torch.Tensor]
    kept_ffn: list[torch.Tensor]
    remaps: list[ParamRemap]
    architecture: ArchitectureSpec


def structured_taylor_scores(model: nn.Module) -> UnitScores:
    """Gate-Taylor importance ``|∂L/∂ξ|`` of every head and FFN channel from the gradients now in ``.grad``.

    Call after ``loss.backward()``; sum the results over batches (``UnitScores.add_``).

    Raises:
        RuntimeError: If the output projections have no gradient yet.
    """
    layout, heads, ffn = layout_of(model), [], []
    for layer in encoder_layers(model):
        attn_out, ffn_out = layout.attention_output(layer), layout.ffn_output(layer)
        if attn_out.weight.grad is None or ffn_out.weight.grad is None:
            raise RuntimeError("Taylor scores need gradients: call after loss.backward() and before zero_grad().")
        per_col = (attn_out.weight * attn_out.weight.grad).sum(0).detach()
        heads.append(per_col.view(-1, layout.head_size(layer)).sum(1).abs().float().cpu())
        ffn.append((ffn_out.weight * ffn_out.weight.grad).sum(0).detach().abs().float().cpu())
    return UnitScores(heads, ffn)


def coupled_groups(model: nn.Module, example_inputs: dict[str, torch.Tensor] | None = None) -> list[tuple[Any, Any]]:
    """Trace ``model`` with torch-pruning's DependencyGraph; return per layer its (head group, FFN group).

    The head group is rooted at the attention-output projection's input channels, the FFN group at the FFN
    output projection's input channels (the layout names both); each holds every channel.

    Raises:
        RuntimeError: If DepGraph couples other layers than the expected ones (then cutting only those would
            break the model, e.g. a custom block that reads ``query`` outputs elsewhere).
    """
    import torch_pruning as tp

    layout, layers = layout_of(model), encoder_layers(model)
    modes = {m: m.training for m in model.modules()}
    model.eval()  # no dropout: tracing must not consume the training RNG stream
    try:
        with torch.enable_grad(), warnings.catch_warnings():
            # ViT's cls_token / position_embeddings are bare Parameters; they join no head or FFN group (checked)
            warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
            dg = tp.DependencyGraph().build_dependency(
                model, example_inputs=example_inputs or _dummy_inputs(model), output_transform=lambda out: out[0].sum()
            )
    finally:
        for module, training in modes.items():
            module.training = training
    groups = []
    for layer in layers:
        out, ffn_out = layout.attention_output(layer), layout.ffn_output(layer)
        head_group = dg.get_pruning_group(out, tp.prune_linear_in_channels, list(range(out.in_features)))
        ffn_group = dg.get_pruning_group(ffn_out, tp.prune_linear_in_channels, list(range(ffn_out.in_features)))
        _check_members(head_group, _linears(layout.attention_slices(layer)), "attention heads")
        _check_members(ffn_group, _linears(layout.ffn_slices(layer)), "FFN channels")
        groups.append((head_group, ffn_group))
    return groups


def _linears(slices: list[UnitSlice]) -> set[nn.Module]:
    return {s.linear for s in slices}


def _check_members(group: Any, expected: set[nn.Module], what: str) -> None:
    found = {dep.target.module for dep, _ in group if isinstance(dep.target.module, nn.Module)}
    found = {m for m in found if any(True for _ in m.parameters(recurse=False))}
    if found != expected:
        extra = sorted(type(m).__name__ for m in found - expected)
        raise RuntimeError(
            f"torch-pruning coupled unexpected layers with the {what}: {extra}; the model has modules its layout "
            "does not describe, so structured pruning cannot cut it safely."
        )


def _dummy_inputs(model: nn.Module) -> dict[str, torch.Tensor]:
    return layout_of(model).dummy_inputs(model)


def structured_magnitude_scores(model: nn.Module) -> UnitScores:
    """Group L2 magnitude of every head and FFN channel: per unit, the mean over the coupled weight blocks
    (q, k, v rows and W_o columns; FFN in rows, gate rows, out columns) of their squared L2 norm."""
    layout, heads, ffn = layout_of(model), [], []
    for layer in encoder_layers(model):
        heads.append(_group_magnitude(layout.attention_slices(layer), layout.num_heads(layer)))
        ffn.append(_group_magnitude(layout.ffn_slices(layer), layout.ffn_size(layer)))
    return UnitScores(heads, ffn)


def _group_magnitude(slices: list[UnitSlice], units: int) -> torch.Tensor:
    total, members = torch.zeros(units), 0
    with torch.no_grad():
        for s in slices:
            sq = s.linear.weight.detach().float().pow(2).sum(1 - s.dim).cpu()  # per channel along s.dim
            for offset in s.offsets:
                total += sq[offset : offset + units * s.width].view(units, s.width).sum(1)
                members += 1
    return total / members


def select_units(
    scores: Sequence[torch.Tensor],
    original: Sequence[int],
    pruning_ratio: float,
    *,
    scope: Scope = "layer",
    min_keep: int = 1,
    round_to: int = 1,
) -> list[torch.Tensor]:
    """Choose which units to keep so that ``1 - pruning_ratio`` of the *original* units remain.

    The target is absolute (relative to ``original``), so repeated calls with a growing ratio never compound.
    Units are never regrown: a layer keeps at most what it has. ``scope="layer"`` keeps
    ``round((1 - r) · original[l])`` per layer; ``scope="global"`` ranks all units together and keeps
    ``round((1 - r) · Σ original)`` in total, after reserving each layer's top ``min_keep``.

    Args:
        scores: Per layer, one score per current unit (higher = more important).
        original: Per layer, the unit count of the unpruned model.
        pruning_ratio: Fraction of the original units to remove, in ``[0, 1]``.
        scope: ``"layer"`` (same ratio in every layer) or ``"global"`` (ranking across layers).
        min_keep: Units every layer keeps whatever the ratio (>= 1: a layer cannot lose all heads).
        round_to: Round each layer's count up to a multiple of this (kernel-friendly widths).

    Returns:
        Per layer, the sorted indices (into the current units) to keep.
    """
    _validate_selection(scores, original, pruning_ratio, scope, min_keep, round_to)
    current = [len(s) for s in scores]
    if scope == "layer":
        counts = [max(min_keep, round((1.0 - pruning_ratio) * o)) for o in original]
    else:
        counts = _global_counts(scores, round((1.0 - pruning_ratio) * sum(original)), min_keep)
    counts = [min(c, -(-n // round_to) * round_to) for c, n in zip(current, counts)]
    return [torch.topk(s.float(), n).indices.sort().values for s, n in zip(scores, counts)]


def _global_counts(scores: Sequence[torch.Tensor], total: int, min_keep: int) -> list[int]:
    counts = [min(min_keep, len(s)) for s in scores]
    rest = [torch.sort(s.float(), descending=True).values[n:] for s, n in zip(scores, counts)]
    budget = total - sum(counts)
    if budget > 0:
        pool = torch.cat(rest)
        layer_of = torch.cat([torch.full((len(r),), i) for i, r in enumerate(rest)])
        chosen = layer_of[torch.topk(pool, min(budget, len(pool))).indices]
        for i in range(len(scores)):
            counts[i] += int((chosen == i).sum())
    return counts


def _validate_selection(
    scores: Sequence[torch.Tensor], original: Sequence[int], ratio: float, scope: str, min_keep: int, round_to: int
) -> None:
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"pruning_ratio must be in [0, 1] (fraction of units removed); got {ratio}.")
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global'; got {scope!r}.")
    if min_keep < 1:
        raise ValueError(f"min_keep must be >= 1 (a layer with no heads or channels cannot run); got {min_keep}.")
    if round_to < 1:
        raise ValueError(f"round_to must be >= 1; got {round_to}.")
    if len(scores) != len(original):
        raise ValueError(f"Got scores for {len(scores)} layers but original sizes for {len(original)}.")


def prune_heads_and_ffn(
    model: nn.Module,
    head_pruning_ratio: float = 0.0,
    ffn_pruning_ratio: float = 0.0,
    *,
    scores: UnitScores | None = None,
    scope: Scope = "layer",
    min_heads: int = 1,
    min_ffn: int = 1,
    ffn_round_to: int = 1,
    example_inputs: dict[str, torch.Tensor] | None = None,
) -> StructuredPruningResult:
    """Remove the least important heads and FFN channels of ``model`` in place, keeping the hidden size.

    Ratios are absolute fractions of the unpruned counts in ``model.config`` (calling again with a larger ratio
    prunes further; a smaller one is a no-op).

    Args:
        model: A Hugging Face encoder of a family with a layout (``lit_compress.models.layout``).
        head_pruning_ratio: Fraction of all original heads to remove.
        ffn_pruning_ratio: Fraction of all original FFN intermediate channels to remove.
        scores: Importance of the current units (e.g. accumulated :func:`structured_taylor_scores`); default: magnitude.
        scope: ``"layer"`` (every layer pruned by the ratio) or ``"global"`` (ranked across layers).
        min_heads: Heads every layer keeps. min_ffn: FFN channels every layer keeps.
        ffn_round_to: Round kept FFN widths up to a multiple of this.
        example_inputs: Inputs for DepGraph tracing (default: the layout's ``dummy_inputs``: 8 token ids, or one
            zero image for ViT).
    """
    coupled_groups(model, example_inputs)
    scores = scores if scores is not None else structured_magnitude_scores(model)
    layout, layers, cfg = layout_of(model), encoder_layers(model), model.config
    kept_heads = select_units(
        scores.heads, [layout.config_num_heads(cfg)] * len(layers), head_pruning_ratio, scope=scope, min_keep=min_heads
    )
    kept_ffn = select_units(
        scores.ffn, [layout.config_ffn_size(cfg)] * len(layers), ffn_pruning_ratio,
        scope=scope, min_keep=min_ffn, round_to=ffn_round_to,
    )  # fmt: skip
    remaps = [r for layer, h, f in zip(layers, kept_heads, kept_ffn) for r in prune_layer(layout, layer, h, f)]
    return StructuredPruningResult(kept_heads, kept_ffn, remaps, current_architecture(model))


def remap_optimizer_state(optimizer: torch.optim.Optimizer, remaps: Sequence[ParamRemap]) -> None:
    """Point ``optimizer`` at the cut parameters and slice their state (Adam moments, momentum) to match.

    Scalar state such as Adam's ``step`` is kept, so bias correction and LR schedulers continue undisturbed.
    """
    by_id = {id(r.old): r for r in remaps}
    for group in optimizer.param_groups:
        group["params"] = [by_id[id(p)].new if id(p) in by_id else p for p in group["params"]]
    for r in remaps:
        if r.old in optimizer.state:
            state = optimizer.state.pop(r.old)
            optimizer.state[r.new] = {
                k: v.index_select(r.dim, r.keep.to(v.device)) if _same_shape(v, r.old) else v for k, v in state.items()
            }


def _same_shape(value: Any, param: torch.Tensor) -> bool:
    return isinstance(value, torch.Tensor) and value.shape == param.shape
