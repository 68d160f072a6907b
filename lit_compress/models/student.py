"""Build students: from a hub name / directory / config, or from a subset of the teacher's layers."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from torch import nn
from transformers import AutoModelForSequenceClassification, PreTrainedModel


def encoder_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The list of transformer blocks of a BERT-like encoder (``<base>.encoder.layer``)."""
    base = getattr(model, model.base_model_prefix, model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(
            f"{type(model).__name__} has no `<base>.encoder.layer` list; layer-subset students need a "
            "BERT-like encoder. Pass an explicit student model instead."
        )
    return layers


def student_from_teacher(teacher: PreTrainedModel, layers: Sequence[int]) -> PreTrainedModel:
    """Build a shallower student holding copies of the chosen teacher layers (the DistilBERT init).

    The student has the teacher's config with ``num_hidden_layers = len(layers)``; embeddings, the chosen
    encoder layers (in the given order), pooler and classification head are copied tensor by tensor, so
    ``student.encoder.layer[i]`` equals ``teacher.encoder.layer[layers[i]]`` (Sanh et al. 2019).

    Args:
        teacher: A BERT-like sequence-classification model.
        layers: Teacher layer indices to keep, e.g. ``[0, 2, 4]``.
    """
    teacher_layers = encoder_layers(teacher)
    n = len(teacher_layers)
    if not layers:
        raise ValueError("student layers must name at least one teacher layer, e.g. [0, 5].")
    bad = [i for i in layers if not -n <= i < n]
    if bad:
        raise ValueError(f"Teacher has {n} layers (0..{n - 1}); cannot keep layers {bad}.")
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    student = AutoModelForSequenceClassification.from_config(config)
    kept = nn.ModuleList(copy.deepcopy(teacher_layers[i]) for i in layers)
    for new_index, block in enumerate(kept):
        attn = getattr(getattr(block, "attention", None), "self", None)
        if attn is not None and hasattr(attn, "layer_idx"):
            attn.layer_idx = new_index
    teacher_state = {k: v for k, v in teacher.state_dict().items() if ".encoder.layer." not in k}
    missing, unexpected = student.load_state_dict(teacher_state, strict=False)
    student_layers = encoder_layers(student)
    student_layers.load_state_dict(kept.state_dict())
    leftover = [k for k in missing if ".encoder.layer." not in k and not k.endswith("position_ids")]
    if leftover or unexpected:
        raise RuntimeError(f"Copying the teacher left tensors unset: {leftover[:5]} / unexpected {unexpected[:5]}")
    return student.train(teacher.training)
