"""Hidden-width pruning: remove channels of the residual stream of a Hugging Face encoder (pure, Trainer-free).

Every block of a transformer encoder reads and writes the same ``hidden_size``-wide residual stream, so one
hidden channel is coupled across the whole model: its column of every embedding table, its entry of every
LayerNorm, its input column of every q/k/v, FFN-input and pooler Linear, its output row (and bias) of every
attention-output and FFN-output Linear. Removing it shrinks every matrix product and every elementwise pass of
the model (head width and head count are untouched, so the attention scaling ``head_size ** -0.5`` stays).

The coupled set is found by torch-pruning's ``DependencyGraph`` (Fang et al., "DepGraph: Towards Any Structural
Pruning", CVPR 2023), rooted at the output rows of the first block's attention-output Linear, and checked: every
member must be an embedding table, a LayerNorm or a Linear of the model, and no Linear may lose output rows
outside the blocks' residual writes, else the cut is refused (a family whose stream the trace does not close).
A LayerNorm over fewer channels normalizes with other statistics, so the cut is not function-preserving:
training after it (the prune stage's distillation) recovers, as in Sajjad et al.'s and Xia et al.'s
(CoFi, ACL 2022) hidden-dimension pruning.

Importance (higher = keep) is the mean activation energy of a channel over the residual stream states
(``output_hidden_states``: the embeddings' output and every block's), each state normalized to unit mean energy
so every layer weighs the same: ``I_d = Σ_l E_tokens[h_l[d]²] / E_tokens,d'[h_l[d']²]`` on real batches
(the "activation" criterion of Molchanov et al., ICLR 2017, applied per channel of the stream).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from lit_compress.models.layout import LayoutError, encoder_layers, layout_of
from lit_compress.models.surgery import ParamRemap


def hidden_width(model: nn.Module) -> int:
    """Channels of ``model``'s residual stream now (asked of its layout: the first block's attention output)."""
    return layout_of(model).hidden_width(model)


def kept_hidden_width(original: int, ratio: float, round_to: int = 32) -> int:
    """Channels kept when ``ratio`` of ``original`` are removed: ``round_to``-multiples, at least ``round_to``.

    ``round(original · (1 − ratio) / round_to) · round_to``, clipped to ``[round_to, original]``; e.g. 384 at
    ratio 1/3 keeps 256 (two 4-bit embedding blocks of 128).
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"hidden_pruning_ratio must be in [0, 1); got {ratio}.")
    if ratio == 0.0:
        return original
    kept = int(round(original * (1.0 - ratio) / round_to)) * round_to
    return max(round_to, min(original, kept))


@torch.no_grad()
def hidden_importance(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]]) -> torch.Tensor:
    """Per-channel importance of the residual stream (module docstring), from ``batches`` of model inputs."""
    was_training = model.training
    model.eval()
    total: torch.Tensor | None = None
    try:
        for batch in batches:
            out = model(**batch, output_hidden_states=True)
            mask = batch.get("attention_mask")
            for state in out.hidden_states:
                masked = mask is not None and mask.shape == state.shape[:2]
                rows = state[mask.bool()] if masked else state.flatten(0, -2)
                energy = rows.float().pow(2).mean(0)
                energy = energy / energy.mean().clamp_min(1e-12)
                total = energy if total is None else total + energy
    finally:
        model.train(was_training)
    if total is None:
        raise ValueError("hidden_importance needs at least one batch.")
    return total.cpu()


def prune_hidden(model: nn.Module, keep: torch.Tensor) -> list[ParamRemap]:
    """Cut ``model``'s residual stream to channels ``keep`` (indices into the current channels), in place.

    Returns:
        How each cut parameter maps to its predecessor (to carry optimizer state over; empty when nothing is cut).

    Raises:
        LayoutError: The family's stream is not closed under the trace (see the module docstring).
        ValueError: ``keep`` is empty or names channels the model does not have.
    """
    width = hidden_width(model)
    keep = torch.unique(keep.to(torch.long).cpu())
    if len(keep) == 0 or int(keep.min()) < 0 or int(keep.max()) >= width:
        raise ValueError(f"keep must name between 1 and {width} of the {width} hidden channels; got {len(keep)}.")
    if len(keep) == width:
        return []
    drop = sorted(set(range(width)) - set(keep.tolist()))
    group = _stream_group(model, drop)
    before = [(m, n, p) for m in model.modules() for n, p in m._parameters.items() if p is not None]
    group.prune()
    return _remaps(before, keep)


def _remaps(before: list[tuple[nn.Module, str, nn.Parameter]], keep: torch.Tensor) -> list[ParamRemap]:
    """A :class:`ParamRemap` for every parameter the cut replaced by a narrower one (the one axis that shrank)."""
    remaps = []
    for module, name, old in before:
        new = module._parameters.get(name)
        if new is None or new.shape == old.shape:
            continue
        dims = [d for d in range(old.dim()) if old.shape[d] != new.shape[d]]
        if len(dims) != 1 or new.shape[dims[0]] != len(keep):
            raise LayoutError(f"hidden-width pruning cut {type(module).__name__}.{name} from {tuple(old.shape)} to "
                              f"{tuple(new.shape)}, not along one axis to {len(keep)} channels.")  # fmt: skip
        remaps.append(ParamRemap(old, new, dims[0], keep))
    return remaps


def _stream_group(model: nn.Module, drop: list[int]) -> object:
    """torch-pruning's group of every parameter coupled with the residual stream, checked (module docstring)."""
    import torch_pruning as tp

    layout = layout_of(model)
    if not layout.hidden_pruning:
        raise LayoutError(f"{type(model).__name__}: {layout.hidden_pruning_refusal} Use hidden_pruning_ratio=0 "
                          "for this family (heads and FFN channels can still be pruned).")  # fmt: skip
    layers = encoder_layers(model)
    inputs = layout.dummy_inputs(model)
    graph = tp.DependencyGraph().build_dependency(
        model, example_inputs=inputs, forward_fn=lambda m, x: _logits(m(**x)))  # fmt: skip
    root = layout.attention_output(layers[0])
    group = graph.get_pruning_group(root, tp.prune_linear_out_channels, idxs=drop)
    in_layers = {id(m) for layer in layers for m in layer.modules()}
    writes = {id(m) for layer in layers for m in (layout.attention_output(layer), layout.ffn_output(layer))}
    names = {id(m): n for n, m in model.named_modules()}
    for dep, _ in group:
        module, handler = dep.target.module, getattr(dep.handler, "__name__", str(dep.handler))
        if not isinstance(module, nn.Module) or id(module) not in names:
            continue  # torch-pruning's placeholders for elementwise / reshape ops
        projection = isinstance(module, (nn.Linear, nn.Conv2d))
        fits = isinstance(module, (nn.Embedding, nn.LayerNorm)) or (projection and (
            "in_channels" in handler or id(module) in writes or id(module) not in in_layers))  # fmt: skip
        if not fits:
            raise LayoutError(
                f"{type(model).__name__}: hidden-width pruning would also cut {names[id(module)]} "
                f"({type(module).__name__}, {handler}), which is not part of the residual stream; use "
                "hidden_pruning_ratio=0 for this family (heads and FFN channels can still be pruned)."
            )
    return group


def _logits(output: object) -> torch.Tensor:
    return output.logits if hasattr(output, "logits") else output[0]  # type: ignore[index,attr-defined]
