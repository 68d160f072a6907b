"""The shape of a structurally pruned BERT-style encoder, and how to rebuild it from its config.

Structured pruning removes whole attention heads, FFN intermediate channels and vocabulary rows, so a pruned
model no longer matches its Hugging Face ``config.json``. :class:`ArchitectureSpec` records the kept shapes as
plain JSON (no pickle); :func:`apply_architecture` resizes a skeleton built from the config to those shapes so
that ``load_state_dict`` works (``lit_compress.models.io.load_model_dir`` and checkpoint resume use it).

Supported layout: Hugging Face BERT-family encoders (BERT, RoBERTa, ELECTRA, XLM-R, MiniLM ...) whose blocks
have ``attention.self.{query,key,value}``, ``attention.output.dense``, ``intermediate.dense`` and
``output.dense``. The hidden size is never changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

FORMAT_VERSION = 1


@dataclass(frozen=True)
class ArchitectureSpec:
    """Kept shapes of a structurally pruned encoder.

    Attributes:
        num_heads: Kept attention heads per layer.
        intermediate_sizes: Kept FFN intermediate channels per layer.
        vocab_size: Rows of the word-embedding matrix.
        head_size: Width of one attention head (unchanged by head pruning).
    """

    num_heads: tuple[int, ...]
    intermediate_sizes: tuple[int, ...]
    vocab_size: int
    head_size: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_heads", tuple(int(n) for n in self.num_heads))
        object.__setattr__(self, "intermediate_sizes", tuple(int(n) for n in self.intermediate_sizes))
        if len(self.num_heads) != len(self.intermediate_sizes):
            raise ValueError(
                f"ArchitectureSpec has {len(self.num_heads)} head counts but {len(self.intermediate_sizes)} FFN "
                "sizes; give one of each per encoder layer."
            )
        counts = (*self.num_heads, *self.intermediate_sizes, self.vocab_size, self.head_size)
        if any(n < 1 for n in counts):
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
        if version != FORMAT_VERSION:
            raise ValueError(
                f"Unsupported architecture format_version {version}; this lit_compress reads {FORMAT_VERSION}."
            )
        fields = {"num_heads", "intermediate_sizes", "vocab_size", "head_size"}
        if set(data) != fields:
            raise ValueError(f"Architecture dict must have exactly the keys {sorted(fields)}; got {sorted(data)}.")
        return cls(**data)


def encoder_layers(model: nn.Module) -> list[nn.Module]:
    """Return the BERT-style transformer blocks of ``model`` in forward order.

    Raises:
        ValueError: If ``model`` has no such blocks or uses cross-attention.
    """
    layers = [m for m in model.modules() if _is_bert_layer(m)]
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no BERT-style encoder layers (attention.self.query, intermediate.dense, "
            "output.dense). Structured pruning supports Hugging Face BERT-family encoders only."
        )
    if any(hasattr(m, "crossattention") for m in layers):
        raise ValueError("Structured pruning does not support cross-attention (decoder) layers.")
    return layers


def _is_bert_layer(m: nn.Module) -> bool:
    attn = getattr(m, "attention", None)
    return (
        hasattr(getattr(attn, "self", None), "query")
        and hasattr(getattr(attn, "output", None), "dense")
        and hasattr(getattr(m, "intermediate", None), "dense")
        and hasattr(getattr(m, "output", None), "dense")
    )


def word_embeddings(model: nn.Module) -> nn.Embedding:
    """The input word-embedding table of a Hugging Face model."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if not isinstance(emb, nn.Embedding):
        raise ValueError(f"{type(model).__name__} has no nn.Embedding input embeddings (get_input_embeddings()).")
    return emb


def current_architecture(model: nn.Module) -> ArchitectureSpec:
    """Describe the shapes ``model`` has now (pruned or not)."""
    layers = encoder_layers(model)
    attn = layers[0].attention.self
    return ArchitectureSpec(
        num_heads=tuple(layer.attention.self.query.out_features // attn.attention_head_size for layer in layers),
        intermediate_sizes=tuple(layer.intermediate.dense.out_features for layer in layers),
        vocab_size=word_embeddings(model).num_embeddings,
        head_size=attn.attention_head_size,
    )


def read_architecture(model: nn.Module) -> ArchitectureSpec | None:
    """Return the pruned architecture of ``model``, or ``None`` when it still matches ``model.config``."""
    spec = current_architecture(model)
    cfg = model.config
    unpruned = (
        all(n == cfg.num_attention_heads for n in spec.num_heads)
        and all(n == cfg.intermediate_size for n in spec.intermediate_sizes)
        and spec.vocab_size == cfg.vocab_size
    )
    return None if unpruned else spec


def architecture_from_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], prefix: str = ""
) -> ArchitectureSpec:
    """Infer the architecture a ``state_dict`` (for ``model``, under ``prefix``) was saved with, from its shapes."""
    names = {id(m): n for n, m in model.named_modules()}
    head_size = encoder_layers(model)[0].attention.self.attention_head_size

    def rows(module: nn.Module) -> int:
        key = f"{prefix}{names[id(module)]}.weight"
        if key not in state_dict:
            raise KeyError(f"State dict has no '{key}'; it was not saved from this model type.")
        return int(state_dict[key].shape[0])

    layers = encoder_layers(model)
    return ArchitectureSpec(
        num_heads=tuple(rows(layer.attention.self.query) // head_size for layer in layers),
        intermediate_sizes=tuple(rows(layer.intermediate.dense) for layer in layers),
        vocab_size=rows(word_embeddings(model)),
        head_size=head_size,
    )


def apply_architecture(model: nn.Module, spec: ArchitectureSpec) -> nn.Module:
    """Shrink ``model`` in place to the shapes in ``spec`` (kept units are the first ones: weights are placeholders).

    Used on a skeleton built from the config, right before ``load_state_dict``. Idempotent; growing is refused.

    Raises:
        ValueError: If the layer count or head size differs, or ``spec`` is larger than ``model``.
    """
    from lit_compress.prune.structured import prune_layer

    now = current_architecture(model)
    if len(spec.num_heads) != len(now.num_heads) or spec.head_size != now.head_size:
        raise ValueError(
            f"Architecture {spec} does not fit {type(model).__name__} with {len(now.num_heads)} layers and head size "
            f"{now.head_size}; build the model from the config the spec was saved with."
        )
    for i, layer in enumerate(encoder_layers(model)):
        heads, ffn = spec.num_heads[i], spec.intermediate_sizes[i]
        if heads > now.num_heads[i] or ffn > now.intermediate_sizes[i]:
            raise ValueError(f"Layer {i} of the model is smaller than the spec ({now} vs {spec}); cannot grow layers.")
        prune_layer(layer, keep_heads=torch.arange(heads), keep_ffn=torch.arange(ffn))
    if spec.vocab_size > now.vocab_size:
        raise ValueError(f"Spec vocab_size {spec.vocab_size} is larger than the model's {now.vocab_size}.")
    if spec.vocab_size < now.vocab_size:
        from lit_compress.prune.vocab import slice_embeddings

        slice_embeddings(model, torch.arange(spec.vocab_size))
    return model
