"""Tiny random BERT classifiers for fast tests and examples (the ``BoringModel`` of lit_compress)."""

from __future__ import annotations

from transformers import BertConfig, BertForSequenceClassification


def tiny_bert_config(
    num_labels: int = 3,
    vocab_size: int = 128,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 64,
    max_position_embeddings: int = 64,
) -> BertConfig:
    """Return a small ``BertConfig`` with ``id2label`` filled in (``label_i`` names).

    transformers 5.x configs are dataclasses: labels go through ``id2label``, not ``num_labels``.
    """
    id2label = {i: f"label_{i}" for i in range(num_labels)}
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )


def tiny_bert(seed: int = 0, **kwargs: int) -> BertForSequenceClassification:
    """Build a randomly initialised tiny ``BertForSequenceClassification`` (eval mode, seeded)."""
    import torch

    torch.manual_seed(seed)
    model = BertForSequenceClassification(tiny_bert_config(**kwargs))
    return model.eval()
