"""Tiny random classifiers of every supported family for fast tests and examples (the ``BoringModel`` of lit_compress)."""

from __future__ import annotations

from typing import Any

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


#: Families with a model layout and a tiny random config for tests (``tiny_model``).
TINY_FAMILIES = ("bert", "roberta", "xlm-roberta", "electra", "distilbert", "albert", "deberta-v2", "modernbert")


def tiny_config(family: str, num_labels: int = 3, vocab_size: int = 128, num_layers: int = 2, **overrides: Any) -> Any:
    """A small random config of ``family`` (hidden 32, 4 heads of 8, FFN 64, 64 positions), labels filled in.

    DeBERTa gets the v3 settings (relative attention, ``p2c|c2p``, shared keys, log buckets); ModernBERT
    alternates global and sliding-window attention; ALBERT has one shared block and a 16-wide embedding.
    ``overrides`` (e.g. the tokenizer's ``pad_token_id``) win.
    """
    from transformers import AutoConfig

    id2label = {i: f"label_{i}" for i in range(num_labels)}
    common: dict[str, Any] = {
        "vocab_size": vocab_size, "hidden_size": 32, "num_hidden_layers": num_layers, "num_attention_heads": 4,
        "intermediate_size": 64, "max_position_embeddings": 80, "id2label": id2label,
        "label2id": {v: k for k, v in id2label.items()}, "pad_token_id": 0,
    }  # fmt: skip
    per_family: dict[str, dict[str, Any]] = {
        "distilbert": {"dim": 32, "n_layers": num_layers, "n_heads": 4, "hidden_dim": 64},
        "albert": {"embedding_size": 16},
        "electra": {"embedding_size": 16},
        "roberta": {"pad_token_id": 1},
        "xlm-roberta": {"pad_token_id": 1},
        "deberta-v2": {"relative_attention": True, "pos_att_type": ["p2c", "c2p"], "share_att_key": True,
                       "position_buckets": 16, "max_relative_positions": -1, "norm_rel_ebd": "layer_norm",
                       "position_biased_input": False, "type_vocab_size": 0},
        "modernbert": {"global_attn_every_n_layers": 2, "local_attention": 8, "bos_token_id": 1,
                       "eos_token_id": 2, "cls_token_id": 1, "sep_token_id": 2},
    }  # fmt: skip
    if family not in TINY_FAMILIES:
        raise ValueError(f"No tiny config for {family!r}; families: {', '.join(TINY_FAMILIES)}.")
    settings = {**common, **per_family.get(family, {}), **overrides}
    if family == "distilbert":
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
            settings.pop(key)
    return AutoConfig.for_model(family, **settings)


def tiny_model(family: str, seed: int = 0, **kwargs: Any) -> Any:
    """A randomly initialised tiny sequence classifier of ``family`` (eval mode, seeded); see :func:`tiny_config`."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(tiny_config(family, **kwargs)).eval()


#: Vision families with a model layout and a tiny random config (``tiny_vit``); not in ``TINY_FAMILIES``, whose
#: models take token ids.
TINY_VISION = ("vit",)


def tiny_vit_config(
    num_labels: int = 3, image_size: int = 16, patch_size: int = 4, num_channels: int = 1, num_layers: int = 2,
    **overrides: Any,
) -> Any:  # fmt: skip
    """A small random ``ViTConfig`` (hidden 32, 4 heads of 8, FFN 64; 16 patches of 4×4 on a 16×16 image)."""
    from transformers import ViTConfig

    id2label = {i: f"label_{i}" for i in range(num_labels)}
    settings: dict[str, Any] = {
        "image_size": image_size, "patch_size": patch_size, "num_channels": num_channels, "hidden_size": 32,
        "num_hidden_layers": num_layers, "num_attention_heads": 4, "intermediate_size": 64, "id2label": id2label,
        "label2id": {v: k for k, v in id2label.items()},
    }  # fmt: skip
    return ViTConfig(**{**settings, **overrides})


def tiny_vit(seed: int = 0, **kwargs: Any) -> Any:
    """A randomly initialised tiny ``ViTForImageClassification`` (eval mode, seeded); see :func:`tiny_vit_config`."""
    import torch
    from transformers import ViTForImageClassification

    torch.manual_seed(seed)
    return ViTForImageClassification(tiny_vit_config(**kwargs)).eval()


def tiny_cnn(arch: str = "resnet18", seed: int = 0, num_labels: int = 3, image_size: int = 16, **kwargs: Any) -> Any:
    """A randomly initialised tiny :class:`~lit_compress.vision.classifier.CNNClassifier` (eval mode, seeded):
    ResNet-18 layout of base width 8, or MobileNetV2 at ``width_mult=0.25``; one input channel by default."""
    import torch

    from lit_compress.vision.classifier import CNNClassifier

    torch.manual_seed(seed)
    settings = {"width": 8, "width_mult": 0.25, "num_channels": 1, **kwargs}
    return CNNClassifier(arch=arch, num_labels=num_labels, image_size=image_size, **settings).eval()
