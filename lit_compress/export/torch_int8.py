"""PyTorch dynamic int8 (the book's "Distillation + quantization" row), for as long as torch provides it.

``torch.ao.quantization.quantize_dynamic`` swaps every ``nn.Linear`` for a module with int8 weights
(per-tensor symmetric, ``s = max|w| / 127``) that quantizes its input on the fly. It is deprecated in favour
of torchao; this module detects it at use time and reports why it is missing instead of failing at import.

The artifact is a directory: ``config.json``, the tokenizer (text models), ``model_int8.pt`` (a state dict,
loadable with ``weights_only=True``) and, for a structurally pruned model, ``lit_compress_arch.json``. Loading rebuilds
the float skeleton from the config, quantizes it the same way, then loads the int8 state dict.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lit_compress.utils.io import atomic_path

WEIGHTS_FILE = "model_int8.pt"


def torch_dynamic_int8_unavailable() -> str | None:
    """``None`` if the installed torch can dynamically quantize ``nn.Linear`` to int8, else the reason."""
    try:
        from torch.ao.quantization import quantize_dynamic  # noqa: F401
    except ImportError as err:
        return f"torch {torch.__version__} has no torch.ao.quantization.quantize_dynamic ({err})"
    engines = torch.backends.quantized.supported_engines
    if not any(e in engines for e in ("fbgemm", "x86", "qnnpack")):
        return f"torch {torch.__version__} has no int8 CPU engine (supported: {engines})"
    return None


def quantize_torch_dynamic(model: nn.Module) -> nn.Module:
    """Return an int8 dynamically quantized copy of ``model`` (its ``nn.Linear`` layers), in eval mode.

    Raises:
        RuntimeError: The installed torch no longer provides dynamic quantization (the reason is given).
    """
    reason = torch_dynamic_int8_unavailable()
    if reason:
        raise RuntimeError(f"PyTorch dynamic int8 is unavailable: {reason}. Use the ORT int8 artifact instead.")
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8, inplace=False).eval()


def save_torch_dynamic_int8(
    model: nn.Module, out_dir: str | os.PathLike[str], tokenizer: Any | None = None
) -> Path:
    """Quantize a float Hugging Face classifier (text or image) and save it as a ``torch-dynamic-int8`` directory.

    Returns:
        The path of the int8 state dict (``model_int8.pt``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    quantized = quantize_torch_dynamic(model)
    model.config.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    _save_architecture(model, out)
    weights = out / WEIGHTS_FILE
    with atomic_path(weights) as tmp, warnings.catch_warnings():
        # torch's own packed int8 Linear params serialize through TypedStorage; nothing for a user to change
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated", category=UserWarning)
        torch.save(quantized.state_dict(), tmp)
    return weights


def load_torch_dynamic_int8(path: str | os.PathLike[str]) -> nn.Module:
    """Load a directory written by :func:`save_torch_dynamic_int8` (``weights_only=True``)."""
    src = Path(path)
    if not (src / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"{src} has no {WEIGHTS_FILE}; write it with save_torch_dynamic_int8.")
    model = _skeleton(src)
    arch = src / "lit_compress_arch.json"
    if arch.is_file():
        import json

        from lit_compress.models.architecture import ArchitectureSpec, apply_architecture

        apply_architecture(model, ArchitectureSpec.from_dict(json.loads(arch.read_text())))
    quantized = quantize_torch_dynamic(model)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated", category=UserWarning)
        state = torch.load(src / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    quantized.load_state_dict(state)
    return quantized.eval()


def _skeleton(src: Path) -> nn.Module:
    """The float model of ``src``'s config: an image classifier for an image config, else a sequence one
    (:func:`~lit_compress.models.io.auto_model_class`)."""
    from lit_compress.models.io import auto_class_for_config, read_model_config

    config = read_model_config(src)
    return auto_class_for_config(config).from_config(config)


def _save_architecture(model: nn.Module, out: Path) -> None:
    from lit_compress.models.architecture import read_architecture  # the rule save_model_dir follows

    spec = read_architecture(model)
    if spec is not None:
        from lit_compress.utils.io import write_json_atomic

        write_json_atomic(out / "lit_compress_arch.json", spec.to_dict())
