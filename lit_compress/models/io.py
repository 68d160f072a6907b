"""Save and load trained models as Hugging Face directories, pruned architectures included.

A structurally pruned encoder no longer matches its ``config.json`` (per-layer head counts and FFN widths
differ), so the kept shapes are persisted next to it as ``lit_compress_arch.json`` (plain JSON, no pickle).
``load_model_dir`` rebuilds the skeleton from the config, resizes it to that spec, then loads the
safetensors weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import nn

ARCH_FILE = "lit_compress_arch.json"


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
        model.save_pretrained(tmp)
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


def load_model_dir(path: str | os.PathLike[str], **kwargs: Any) -> nn.Module:
    """Load a sequence-classification model saved by ``save_model_dir`` (or any HF directory).

    Args:
        path: Directory holding ``config.json`` and weights.
        **kwargs: Passed to ``from_pretrained`` (never ``trust_remote_code`` unless the caller asks).
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    src = Path(path)
    arch_path = src / ARCH_FILE
    if not arch_path.exists():
        return AutoModelForSequenceClassification.from_pretrained(src, **kwargs).eval()
    from safetensors.torch import load_file

    from lit_compress.models.architecture import ArchitectureSpec, apply_architecture

    import torch

    config = AutoConfig.from_pretrained(src)
    with torch.random.fork_rng(devices=[]):  # the skeleton's random init must not move the caller's RNG stream
        model = AutoModelForSequenceClassification.from_config(config)
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
