"""Save and load trained models as Hugging Face directories, pruned architectures included.

A structurally pruned encoder no longer matches its ``config.json`` (per-layer head counts and FFN widths
differ), so the kept shapes are persisted next to it as ``lit_compress_arch.json`` (plain JSON, no pickle).
``load_model_dir`` rebuilds the skeleton from the config, resizes it to that spec, then loads the
safetensors weights. Image models load with ``AutoModelForImageClassification`` (ViT, and the CNNs of
:mod:`lit_compress.vision.classifier`, whose pruned channel counts travel in ``config.layer_shapes`` instead).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import nn

ARCH_FILE = "lit_compress_arch.json"
#: ``model_type`` of :class:`lit_compress.vision.classifier.ImageClassifier` (CNNs behind ``PreTrainedModel``).
IMAGE_CLASSIFIER_TYPE = "lit-image-classifier"


def save_model_dir(model: nn.Module, path: str | os.PathLike[str], tokenizer: Any | None = None) -> Path:
    """Write ``model`` (and ``tokenizer``) with ``save_pretrained``, plus the pruned-architecture spec.

    The directory is written next to ``path`` under a temporary name and renamed into place, so a crash never
    leaves a half-written model directory; an existing one at ``path`` is replaced.

    Args:
        model: A ``transformers`` ``PreTrainedModel``.
        path: Destination directory.
        tokenizer: Optional tokenizer saved alongside.
    """
    import shutil
    import tempfile

    from lit_compress.models.architecture import read_architecture

    out = Path(path)
    spec = read_architecture(model)  # before anything is written: a model it cannot describe leaves no files
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        # A pruned model is loaded back with load_state_dict: keep its own parameter names (transformers 5
        # otherwise renames some families' keys, ViT's, to their original checkpoint layout when saving).
        model.save_pretrained(tmp, **({"save_original_format": False} if spec is not None else {}))
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if spec is not None:
            (tmp / ARCH_FILE).write_text(json.dumps(spec.to_dict(), indent=2))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)  # the directory appears complete or not at all
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def auto_model_class(path: str | os.PathLike[str]) -> Any:
    """``AutoModelForImageClassification`` for a directory holding an image model (ViT, an ``ImageClassifier``:
    its config's type is in the image-classification mapping), else ``AutoModelForSequenceClassification``.

    A ``"lit-image-classifier"`` directory imports :mod:`lit_compress.vision.classifier` first (that registers it).
    """
    return auto_class_for_config(read_model_config(path))


def read_model_config(path: str | os.PathLike[str]) -> Any:
    """``AutoConfig.from_pretrained(path)``, after importing :mod:`lit_compress.vision.classifier` for a
    ``"lit-image-classifier"`` directory (that registers its config and model classes)."""
    from transformers import AutoConfig

    config_file = Path(path) / "config.json"
    if config_file.exists() and json.loads(config_file.read_text()).get("model_type") == IMAGE_CLASSIFIER_TYPE:
        import lit_compress.vision.classifier  # noqa: F401 - registers the config and model classes

    return AutoConfig.from_pretrained(path)


def auto_class_for_config(config: Any) -> Any:
    """``AutoModelForImageClassification`` for an image model's config, else ``AutoModelForSequenceClassification``."""
    from transformers import (
        MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING,
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING,
        AutoModelForImageClassification,
        AutoModelForSequenceClassification,
    )

    kind = type(config)
    if kind in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING and kind not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING:
        return AutoModelForImageClassification
    return AutoModelForSequenceClassification


def load_model_dir(path: str | os.PathLike[str], **kwargs: Any) -> nn.Module:
    """Load a classifier saved by ``save_model_dir`` (or any HF directory): text models as sequence
    classifiers, image models (ViT, ``ImageClassifier``) as image classifiers (:func:`auto_model_class`).

    Args:
        path: Directory holding ``config.json`` and weights.
        **kwargs: Passed to ``from_pretrained`` (never ``trust_remote_code`` unless the caller asks).
    """
    src = Path(path)
    arch_path = src / ARCH_FILE
    config = read_model_config(src)
    auto = auto_class_for_config(config)
    if not arch_path.exists():
        return auto.from_pretrained(src, **kwargs).eval()
    from safetensors.torch import load_file

    from lit_compress.models.architecture import ArchitectureSpec, apply_architecture

    import torch

    with torch.random.fork_rng(devices=[]):  # the skeleton's random init must not move the caller's RNG stream
        model = auto.from_config(config)
    apply_architecture(model, ArchitectureSpec.from_dict(json.loads(arch_path.read_text())))
    state = load_file(str(src / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    real_missing = [k for k in missing if not k.endswith("position_ids")]
    if real_missing or unexpected:
        raise RuntimeError(
            f"Weights in {src} do not match the pruned architecture in {arch_path}: "
            f"missing={real_missing[:5]} unexpected={unexpected[:5]}. Re-save the model with save_model_dir."
        )
    return model.eval()
