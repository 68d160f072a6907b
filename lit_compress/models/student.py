"""Build students from a subset of the teacher's layers (any family with a model layout)."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel

from lit_compress.models.io import auto_class_for_config
from lit_compress.models.architecture import current_architecture
from lit_compress.models.layout import AlbertLayout, layout_of


def model_depth(model: PreTrainedModel) -> int:
    """Encoder layers the forward pass of ``model`` runs (asked of its layout; ALBERT: shared-block layers)."""
    return layout_of(model).depth(model.config)


def student_from_teacher(teacher: PreTrainedModel, layers: Sequence[int]) -> PreTrainedModel:
    """Build a shallower student holding copies of the chosen teacher layers (the DistilBERT init).

    The student has the teacher's config with ``num_hidden_layers = len(layers)`` (per-layer settings such as
    ModernBERT's ``layer_types`` follow the kept layers); embeddings, the chosen encoder layers (in the given
    order), pooler and classification head are copied tensor by tensor, so student layer ``i`` equals teacher
    layer ``layers[i]`` (Sanh et al., "DistilBERT, a distilled version of BERT", 2019).

    ALBERT shares its blocks across layers: its student keeps every (shared) block and runs ``len(layers)``
    layers, which is the only shallower ALBERT there is; which indices are named does not matter there.

    Args:
        teacher: A sequence (or, for ViT, image) classification model of a family with a layout.
        layers: Teacher layer indices to keep, e.g. ``[0, 2, 4]``.

    Raises:
        ValueError: No layers, or indices outside the teacher.
    """
    layout = layout_of(teacher)
    n = layout.depth(teacher.config)
    if not layers:
        raise ValueError("student layers must name at least one teacher layer, e.g. [0, 5].")
    bad = [i for i in layers if not -n <= i < n]
    if bad:
        raise ValueError(f"Teacher has {n} layers (0..{n - 1}); cannot keep layers {bad}.")
    layers = [i % n for i in layers]
    config = layout.student_config(teacher.config, layers)
    student = auto_class_for_config(config).from_config(config)  # ViT: an image classifier
    narrowed = current_architecture(teacher).hidden_size  # a residual stream cut by hidden-width pruning
    if narrowed is not None:
        from lit_compress.prune.hidden import prune_hidden

        prune_hidden(student, torch.arange(narrowed))
    if isinstance(layout, AlbertLayout):
        student.load_state_dict(teacher.state_dict())
        return student.train(teacher.training)
    prefix = layout.layer_prefix(teacher) + "."
    kept = [copy.deepcopy(layout.layer_list(teacher)[i]) for i in layers]
    for new_index, block in enumerate(kept):
        for module in block.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new_index
    teacher_state = {k: v for k, v in teacher.state_dict().items() if not k.startswith(prefix)}
    missing, unexpected = student.load_state_dict(teacher_state, strict=False)
    student_layers = layout.layer_list(student)
    for target, source in zip(student_layers, kept, strict=True):
        target.load_state_dict(source.state_dict())
    leftover = [k for k in missing if not k.startswith(prefix) and not k.endswith("position_ids")]
    if leftover or unexpected:
        raise RuntimeError(f"Copying the teacher left tensors unset: {leftover[:5]} / unexpected {unexpected[:5]}")
    return student.train(teacher.training)
