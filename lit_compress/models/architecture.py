"""The shape of a structurally pruned encoder, and how to rebuild it from its config (any family with a layout).

Structured pruning removes whole attention heads, FFN intermediate channels and vocabulary rows, so a pruned
model no longer matches its Hugging Face ``config.json``. :class:`ArchitectureSpec` records the kept shapes as
plain JSON (no pickle); :func:`apply_architecture` resizes a skeleton built from the config to those shapes so
that ``load_state_dict`` works (``lit_compress.models.io.load_model_dir`` and checkpoint resume use it). Where
each family keeps heads and channels is asked of its :class:`~lit_compress.models.layout.EncoderLayout`. A
residual stream narrowed by :mod:`lit_compress.prune.hidden` is recorded as ``hidden_size`` (format version 2;
version-1 records, written before hidden-width pruning existed, read as the config's width). Models without a
token-embedding table (ViT) have ``vocab_size`` None.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from lit_compress.models.layout import EncoderLayout, LayoutError, encoder_layers, layout_of
from lit_compress.models.surgery import ParamRemap, cut_units, input_embeddings, slice_embeddings

FORMAT_VERSION = 2


@dataclass(frozen=True)
class ArchitectureSpec:
    """Kept shapes of a structurally pruned encoder, one entry per distinct block (ALBERT: per shared block).

    Attributes:
        num_heads: Kept attention heads per block.
        intermediate_sizes: Kept FFN intermediate channels per block.
        vocab_size: Rows of the word-embedding matrix (None: the model has none, e.g. ViT).
        head_size: Width of one attention head (unchanged by head pruning).
        hidden_size: Channels of the residual stream when narrowed (None: the config's ``hidden_size``).
    """

    num_heads: tuple[int, ...]
    intermediate_sizes: tuple[int, ...]
    vocab_size: int | None
    head_size: int
    hidden_size: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_heads", tuple(int(n) for n in self.num_heads))
        object.__setattr__(self, "intermediate_sizes", tuple(int(n) for n in self.intermediate_sizes))
        if len(self.num_heads) != len(self.intermediate_sizes):
            raise ValueError(
                f"ArchitectureSpec has {len(self.num_heads)} head counts but {len(self.intermediate_sizes)} FFN "
                "sizes; give one of each per encoder layer."
            )
        counts = (*self.num_heads, *self.intermediate_sizes, self.head_size)
        optional = [n for n in (self.vocab_size, self.hidden_size) if n is not None]
        if any(n < 1 for n in (*counts, *optional)):
            raise ValueError(f"ArchitectureSpec sizes must all be >= 1 (a layer keeps at least one head); got {self}.")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (lists and ints only)."""
        out = asdict(self)
        out["num_heads"] = list(self.num_heads)
        out["intermediate_sizes"] = list(self.intermediate_sizes)
        return {"format_version": FORMAT_VERSION, **out}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArchitectureSpec:
        """Inverse of :meth:`to_dict`; rejects unknown versions and keys."""
        data = dict(data)
        version = data.pop("format_version", FORMAT_VERSION)
        if version not in (1, FORMAT_VERSION):
            raise ValueError(
                f"Unsupported architecture format_version {version}; this lit_compress reads {FORMAT_VERSION}."
            )
        fields = {"num_heads", "intermediate_sizes", "vocab_size", "head_size"}
        fields |= {"hidden_size"} if version > 1 else set()
        if set(data) != fields:
            raise ValueError(f"Architecture dict must have exactly the keys {sorted(fields)}; got {sorted(data)}.")
        return cls(**data)


def current_architecture(model: nn.Module) -> ArchitectureSpec:
    """Describe the shapes ``model`` has now (pruned or not)."""
    layout, layers = layout_of(model), encoder_layers(model)
    return ArchitectureSpec(
        num_heads=tuple(layout.num_heads(layer) for layer in layers),
        intermediate_sizes=tuple(layout.ffn_size(layer) for layer in layers),
        vocab_size=_vocab_size(model),
        head_size=layout.head_size(layers[0]),
        hidden_size=_narrowed(model, layout.hidden_width(model)),
    )


def _narrowed(model: nn.Module, width: int) -> int | None:
    """``width`` when it differs from the config's ``hidden_size`` (a narrowed stream), else None."""
    return None if width == getattr(model.config, "hidden_size", width) else width


def _vocab_size(model: nn.Module) -> int | None:
    """Rows of ``model``'s token-embedding table, or None when it has none (an image model)."""
    try:
        return input_embeddings(model).num_embeddings
    except ValueError:
        return None


def read_architecture(model: nn.Module) -> ArchitectureSpec | None:
    """Return the pruned architecture of ``model``, or ``None`` when it still matches ``model.config``.

    Models of a family without a layout are never pruned by lit_compress, so they give ``None`` as well (their
    directory needs no architecture file).
    """
    try:
        layout = layout_of(model)
    except LayoutError:
        return None
    spec, cfg = current_architecture(model), model.config
    unpruned = (
        all(n == layout.config_num_heads(cfg) for n in spec.num_heads)
        and all(n == layout.config_ffn_size(cfg) for n in spec.intermediate_sizes)
        and spec.vocab_size == getattr(cfg, "vocab_size", None)
        and spec.hidden_size is None
    )
    return None if unpruned else spec


def architecture_from_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], prefix: str = ""
) -> ArchitectureSpec:
    """Infer the architecture a ``state_dict`` (for ``model``, under ``prefix``) was saved with, from its shapes.

    Raises:
        KeyError: The state dict lacks a weight the layout reads (a partial or foreign state dict).
    """
    layout, layers = layout_of(model), encoder_layers(model)
    names = {id(m): n for n, m in model.named_modules()}
    head_size = layout.head_size(layers[0])

    def shape(module: nn.Module, dim: int) -> int:
        key = f"{prefix}{names[id(module)]}.weight"
        if key not in state_dict:
            raise KeyError(f"State dict has no '{key}'; it was not saved from this model type.")
        return int(state_dict[key].shape[dim])

    return ArchitectureSpec(
        num_heads=tuple(shape(layout.attention_output(layer), 1) // head_size for layer in layers),
        intermediate_sizes=tuple(shape(layout.ffn_output(layer), 1) for layer in layers),
        vocab_size=None if _vocab_size(model) is None else shape(input_embeddings(model), 0),
        head_size=head_size,
        hidden_size=_narrowed(model, shape(layout.attention_output(layers[0]), 0)),
    )


def prune_layer(
    layout: EncoderLayout, layer: nn.Module, keep_heads: torch.Tensor | None = None,
    keep_ffn: torch.Tensor | None = None,
) -> list[ParamRemap]:  # fmt: skip
    """Cut one block down to the given heads / FFN channels (indices into its current units), in place.

    Heads are cut whole (every q/k/v/out channel of the head, pos projections included), so the head width and
    the attention scaling ``head_size ** -0.5`` stay; the block's head-count attributes are updated.

    Returns:
        How each cut parameter maps to its predecessor (for optimizer state).

    Raises:
        ValueError: If every head or every channel would go.
    """
    remaps: list[ParamRemap] = []
    if keep_heads is not None and len(keep_heads) < layout.num_heads(layer):
        if len(keep_heads) == 0:
            raise ValueError("Cannot remove every head of a layer; keep at least one (min_heads >= 1).")
        remaps += cut_units(layout.attention_slices(layer), keep_heads)
        layout.set_num_heads(layer, len(keep_heads))
    if keep_ffn is not None and len(keep_ffn) < layout.ffn_size(layer):
        if len(keep_ffn) == 0:
            raise ValueError("Cannot remove every FFN channel of a layer; keep at least one (min_ffn >= 1).")
        remaps += cut_units(layout.ffn_slices(layer), keep_ffn)
    return remaps


def apply_architecture(model: nn.Module, spec: ArchitectureSpec) -> nn.Module:
    """Shrink ``model`` in place to the shapes in ``spec`` (kept units are the first ones: weights are placeholders).

    Used on a skeleton built from the config, right before ``load_state_dict``. Idempotent; growing is refused.

    Raises:
        ValueError: If the layer count or head size differs, or ``spec`` is larger than ``model``.
    """
    layout, now = layout_of(model), current_architecture(model)
    if len(spec.num_heads) != len(now.num_heads) or spec.head_size != now.head_size:
        raise ValueError(
            f"Architecture {spec} does not fit {type(model).__name__} with {len(now.num_heads)} layers and head size "
            f"{now.head_size}; build the model from the config the spec was saved with."
        )
    if spec.hidden_size is not None and spec.hidden_size != now.hidden_size:
        if now.hidden_size is not None and spec.hidden_size > now.hidden_size:
            raise ValueError(f"Spec hidden_size {spec.hidden_size} is larger than the model's {now.hidden_size}.")
        from lit_compress.prune.hidden import prune_hidden

        prune_hidden(model, torch.arange(spec.hidden_size))
    for i, layer in enumerate(encoder_layers(model)):
        heads, ffn = spec.num_heads[i], spec.intermediate_sizes[i]
        if heads > now.num_heads[i] or ffn > now.intermediate_sizes[i]:
            raise ValueError(f"Layer {i} of the model is smaller than the spec ({now} vs {spec}); cannot grow layers.")
        prune_layer(layout, layer, keep_heads=torch.arange(heads), keep_ffn=torch.arange(ffn))
    if (spec.vocab_size is None) != (now.vocab_size is None):
        raise ValueError(f"Spec vocab_size {spec.vocab_size} does not fit the model's {now.vocab_size}.")
    if spec.vocab_size is None or now.vocab_size is None:
        return model
    if spec.vocab_size > now.vocab_size:
        raise ValueError(f"Spec vocab_size {spec.vocab_size} is larger than the model's {now.vocab_size}.")
    if spec.vocab_size < now.vocab_size:
        slice_embeddings(model, torch.arange(spec.vocab_size))
    return model
