"""Structured pruning of attention heads and FFN channels in BERT-style encoders (pure, Trainer-free).

Whole heads and whole intermediate channels are removed, so the pruned model is really smaller and faster;
the hidden size is kept, so embeddings, LayerNorms, the pooler and classifier are untouched.

Coupling and pruning use torch-pruning (Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023):
its ``DependencyGraph`` traces the model (it handles transformers 5.x's sdpa BERT: ``query``/``key``/``value``
outputs and ``attention.output.dense`` inputs form one group, ``intermediate.dense`` outputs and
``output.dense`` inputs another) and is used to check the coupling and to score magnitudes; the layers are cut
with its ``prune_linear_{out,in}_channels`` functions. Heads are cut whole, so ``attention_head_size`` and
``scaling`` (``head_size ** -0.5``) stay as they were; ``num_attention_heads`` and ``all_head_size`` are updated.

Importance (higher = keep):
    * ``structured_magnitude_scores``: group L2 magnitude, torch-pruning's ``GroupMagnitudeImportance(p=2, mean)``:
      head h scores ``(||W_q[h]||² + ||W_k[h]||² + ||W_v[h]||² + ||W_o[:, h]||²) / 4``, FFN channel c scores
      ``(||W_in[c, :]||² + ||W_out[:, c]||²) / 2``. Data-free, usable before training.
    * ``structured_taylor_scores``: first-order Taylor estimate of the loss change when a unit is removed, through a
      virtual gate ξ on the unit's output (Michel et al., "Are Sixteen Heads Really Better than One?", NeurIPS
      2019; Molchanov et al., "Importance Estimation for Neural Network Pruning", CVPR 2019):
      ``I_h = |∂L/∂ξ_h| = |Σ_{i, j∈h} W_o[i, j] · ∂L/∂W_o[i, j]|`` (exact, since the gated input enters
      ``W_o`` linearly); summed over batches it is Michel et al.'s head importance. Needs gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from lit_compress.prune.architecture import ArchitectureSpec, current_architecture, encoder_layers

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
class ParamRemap:
    """``new = old.index_select(dim, keep)``: how one parameter was cut (to carry optimizer state over)."""

    old: nn.Parameter
    new: nn.Parameter
    dim: int
    keep: torch.Tensor


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
    heads, ffn = [], []
    for layer in encoder_layers(model):
        attn_out, ffn_out = layer.attention.output.dense, layer.output.dense
        if attn_out.weight.grad is None or ffn_out.weight.grad is None:
            raise RuntimeError("Taylor scores need gradients: call after loss.backward() and before zero_grad().")
        head_size = layer.attention.self.attention_head_size
        per_col = (attn_out.weight * attn_out.weight.grad).sum(0).detach()
        heads.append(per_col.view(-1, head_size).sum(1).abs().float().cpu())
        ffn.append((ffn_out.weight * ffn_out.weight.grad).sum(0).detach().abs().float().cpu())
    return UnitScores(heads, ffn)


def coupled_groups(model: nn.Module, example_inputs: dict[str, torch.Tensor] | None = None) -> list[tuple[Any, Any]]:
    """Trace ``model`` with torch-pruning's DependencyGraph; return per layer its (head group, FFN group).

    The head group is rooted at ``attention.output.dense`` input channels, the FFN group at
    ``intermediate.dense`` output channels; both hold every channel.

    Raises:
        RuntimeError: If DepGraph couples other layers than the expected ones (then cutting only those would
            break the model, e.g. a custom block that reads ``query`` outputs elsewhere).
    """
    import torch_pruning as tp

    layers = encoder_layers(model)
    modes = {m: m.training for m in model.modules()}
    model.eval()  # no dropout: tracing must not consume the training RNG stream
    try:
        with torch.enable_grad():
            dg = tp.DependencyGraph().build_dependency(
                model, example_inputs=example_inputs or _dummy_inputs(model), output_transform=lambda out: out[0].sum()
            )
    finally:
        for module, training in modes.items():
            module.training = training
    groups = []
    for layer in layers:
        attn, out = layer.attention.self, layer.attention.output.dense
        head_group = dg.get_pruning_group(out, tp.prune_linear_in_channels, list(range(out.in_features)))
        ffn_group = dg.get_pruning_group(
            layer.intermediate.dense, tp.prune_linear_out_channels, list(range(layer.intermediate.dense.out_features))
        )
        _check_members(head_group, {attn.query, attn.key, attn.value, out}, "attention heads")
        _check_members(ffn_group, {layer.intermediate.dense, layer.output.dense}, "FFN channels")
        groups.append((head_group, ffn_group))
    return groups


def _check_members(group: Any, expected: set[nn.Module], what: str) -> None:
    found = {dep.target.module for dep, _ in group if isinstance(dep.target.module, nn.Module)}
    found = {m for m in found if any(True for _ in m.parameters(recurse=False))}
    if found != expected:
        extra = sorted(type(m).__name__ for m in found - expected)
        raise RuntimeError(
            f"torch-pruning coupled unexpected layers with the {what}: {extra}; this model is not a plain "
            "BERT-style encoder, so structured pruning cannot cut it safely."
        )


def _dummy_inputs(model: nn.Module) -> dict[str, torch.Tensor]:
    device = next(model.parameters()).device
    ids = torch.arange(8, device=device).remainder(model.config.vocab_size).unsqueeze(0)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def structured_magnitude_scores(model: nn.Module, groups: list[tuple[Any, Any]] | None = None) -> UnitScores:
    """Group L2 magnitude of every head and FFN channel (torch-pruning ``GroupMagnitudeImportance``)."""
    import torch_pruning as tp

    groups = groups if groups is not None else coupled_groups(model)
    imp = tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean", normalizer=None)
    heads, ffn = [], []
    for layer, (head_group, ffn_group) in zip(encoder_layers(model), groups, strict=True):
        head_size = layer.attention.self.attention_head_size
        heads.append(imp(head_group).view(-1, head_size).sum(1).float().cpu())
        ffn.append(imp(ffn_group).float().cpu())
    return UnitScores(heads, ffn)


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


def prune_layer(
    layer: nn.Module, keep_heads: torch.Tensor | None = None, keep_ffn: torch.Tensor | None = None
) -> list[ParamRemap]:
    """Cut one BERT layer down to the given heads / FFN channels (indices into its current units).

    Returns:
        How each cut parameter maps to its predecessor (for :func:`remap_optimizer_state`).
    """
    import torch_pruning as tp

    attn, remaps = layer.attention.self, []
    head_size = attn.attention_head_size
    if keep_heads is not None and len(keep_heads) < attn.query.out_features // head_size:
        if len(keep_heads) == 0:
            raise ValueError("Cannot remove every head of a layer; keep at least one (min_heads >= 1).")
        channels = (keep_heads.sort().values[:, None] * head_size + torch.arange(head_size)).flatten()
        for linear in (attn.query, attn.key, attn.value):
            remaps += _cut_linear(linear, channels, 0, tp.prune_linear_out_channels)
        remaps += _cut_linear(layer.attention.output.dense, channels, 1, tp.prune_linear_in_channels)
        attn.num_attention_heads = len(keep_heads)
        attn.all_head_size = len(keep_heads) * head_size
    if keep_ffn is not None and len(keep_ffn) < layer.intermediate.dense.out_features:
        if len(keep_ffn) == 0:
            raise ValueError("Cannot remove every FFN channel of a layer; keep at least one (min_ffn >= 1).")
        keep = keep_ffn.sort().values
        remaps += _cut_linear(layer.intermediate.dense, keep, 0, tp.prune_linear_out_channels)
        remaps += _cut_linear(layer.output.dense, keep, 1, tp.prune_linear_in_channels)
    return remaps


def _cut_linear(linear: nn.Linear, keep: torch.Tensor, dim: int, prune_fn: Any) -> list[ParamRemap]:
    size = linear.weight.shape[dim]
    keep = keep.to(torch.long).cpu()
    mask = torch.ones(size, dtype=torch.bool)
    mask[keep] = False
    old = {"weight": linear.weight, "bias": linear.bias if dim == 0 else None}
    prune_fn(linear, mask.nonzero().flatten().tolist())
    remaps = []
    for name, param in old.items():
        if param is not None:
            new = getattr(linear, name)
            new.requires_grad_(param.requires_grad)  # torch-pruning makes fresh Parameters that always require grad
            remaps.append(ParamRemap(param, new, dim if name == "weight" else 0, keep))
    return remaps


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
        model: A Hugging Face BERT-family model.
        head_pruning_ratio: Fraction of all original heads to remove.
        ffn_pruning_ratio: Fraction of all original FFN intermediate channels to remove.
        scores: Importance of the current units (e.g. accumulated :func:`structured_taylor_scores`); default: magnitude.
        scope: ``"layer"`` (every layer pruned by the ratio) or ``"global"`` (ranked across layers).
        min_heads: Heads every layer keeps. min_ffn: FFN channels every layer keeps.
        ffn_round_to: Round kept FFN widths up to a multiple of this.
        example_inputs: Inputs for DepGraph tracing (default: 8 dummy token ids).
    """
    groups = coupled_groups(model, example_inputs)
    scores = scores if scores is not None else structured_magnitude_scores(model, groups)
    layers, cfg = encoder_layers(model), model.config
    kept_heads = select_units(
        scores.heads, [cfg.num_attention_heads] * len(layers), head_pruning_ratio, scope=scope, min_keep=min_heads
    )
    kept_ffn = select_units(
        scores.ffn, [cfg.intermediate_size] * len(layers), ffn_pruning_ratio,
        scope=scope, min_keep=min_ffn, round_to=ffn_round_to,
    )  # fmt: skip
    remaps = [r for layer, h, f in zip(layers, kept_heads, kept_ffn) for r in prune_layer(layer, h, f)]
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
