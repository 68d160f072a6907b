"""What a model takes: examples (texts or preprocessed images) turned into named input batches.

Export, parity gates, calibration, predictors and the benchmark all feed a model through one
:class:`ModelInputs`, so they share a single code path for every modality:

* :class:`TextInputs` tokenizes texts into ``input_ids`` / ``attention_mask`` (dynamic batch and sequence axes);
* :class:`ImageInputs` stacks preprocessed float images ``(C, H, W)`` into ``pixel_values`` ``(B, C, H, W)``
  (dynamic batch axis only; normalization is the data pipeline's job, as for Hugging Face image processors).

:func:`inputs_for` picks the right one for a model directory or model: an image model's config has
``num_channels`` and ``image_size`` and its directory holds no tokenizer (ViT, ``ImageClassifier``).
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from lit_compress.models.geometry import image_hw

#: Dynamic axes of every input name the exporters know.
INPUT_AXES: dict[str, dict[int, str]] = {
    "input_ids": {0: "batch", 1: "sequence"},
    "attention_mask": {0: "batch", 1: "sequence"},
    "token_type_ids": {0: "batch", 1: "sequence"},
    "pixel_values": {0: "batch"},
}
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")
SAMPLE_TEXTS = ("lit compress exports this model.", "a second, somewhat longer sentence to trace the exporter with.")
PARITY_BATCH_SIZES = (1, 4, 8)


class ModelInputs(ABC):
    """Turns examples into the named tensors a classifier is called with (``model(**batch)``).

    Attributes:
        kind: ``"text"`` or ``"image"`` (recorded in manifests).
        names: Input names, in the order of the exported graph's inputs.
        tokenizer: The tokenizer of text inputs (``None`` for images).
        max_length: The truncation length of text inputs (``None`` for images).
    """

    kind: ClassVar[str] = "abstract"
    names: tuple[str, ...] = ()
    #: The tokenizer and truncation length of text inputs (``None`` for images).
    tokenizer: Any = None
    max_length: int | None = None

    @abstractmethod
    def encode(self, examples: Any, return_tensors: str = "pt") -> Mapping[str, Any]:
        """A batch for ``examples`` (``"pt"`` tensors or ``"np"`` arrays); holds at least :attr:`names`.

        A single example (one string, one ``(C, H, W)`` image) gives a batch of one row.
        """

    @abstractmethod
    def sample(self) -> dict[str, Tensor]:
        """A fixed two-example batch to trace the exporter with."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """The manifest's ``inputs`` block: kind, names, shape per name (``"batch"`` for dynamic axes), dtype."""

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write what a predictor needs besides the model config to rebuild these inputs (default: nothing)."""

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """``{name: {axis: axis name}}`` of the dynamic axes (see :data:`INPUT_AXES`)."""
        return {name: dict(INPUT_AXES[name]) for name in self.names}

    def batch(self, examples: Any) -> dict[str, Tensor]:
        """``encode(examples)`` restricted to :attr:`names`, as torch tensors."""
        encoded = self.encode(examples, "pt")
        return {name: encoded[name] for name in self.names}

    def batches(self, examples: Sequence[Any], batch_size: int) -> list[dict[str, Tensor]]:
        """Consecutive batches of ``batch_size`` examples (the last may be shorter)."""
        return [self.batch(examples[start : start + batch_size]) for start in range(0, len(examples), batch_size)]

    def parity_batches(self, examples: Sequence[Any] | None = None) -> list[dict[str, Tensor]]:
        """Batches of 1, 4 and 8 consecutive examples (cycled when fewer), or, without examples, batches
        derived from :meth:`sample` (other sizes, lengths and padding; see ``derived_parity_inputs``) followed
        by the sample itself (the last batch is the export sample)."""
        if examples is None or len(examples) == 0:
            from lit_compress.export.parity import derived_parity_inputs

            sample = self.sample()
            return [*derived_parity_inputs(sample), sample]
        out, start = [], 0
        for size in PARITY_BATCH_SIZES:
            out.append(self.batch([examples[(start + i) % len(examples)] for i in range(size)]))
            start += size
        return out


class TextInputs(ModelInputs):
    """Texts tokenized into ``input_ids`` and ``attention_mask``, padded to the longest text and truncated.

    Args:
        tokenizer: A Hugging Face tokenizer.
        max_length: Truncation length.
        names: Inputs fed to the model and the exported graph.
    """

    kind = "text"

    def __init__(self, tokenizer: Any, max_length: int = 128,
                 names: Sequence[str] = ("input_ids", "attention_mask")) -> None:  # fmt: skip
        unknown = [n for n in names if n not in ("input_ids", "attention_mask", "token_type_ids")]
        if unknown or max_length < 1:
            raise ValueError(f"TextInputs takes input_ids/attention_mask/token_type_ids and max_length >= 1; got "
                             f"{list(names)}, {max_length}.")  # fmt: skip
        self.tokenizer, self.max_length, self.names = tokenizer, int(max_length), tuple(names)
        self._query: Any = None  # built on the first single text: QueryEncoder, or False where it cannot be

    def encode(self, examples: str | Sequence[str], return_tensors: str = "pt") -> Mapping[str, Any]:
        """See :meth:`ModelInputs.encode`; one string goes through the Rust tokenizer directly when that gives the
        same ids (:class:`~lit_compress.export.query.QueryEncoder`), no list, no padding."""
        if isinstance(examples, str):
            if self._query is None:
                from lit_compress.export.query import QueryEncoder

                self._query = QueryEncoder.build(self.tokenizer, self.max_length, self.names) or False
            if self._query and return_tensors in ("np", "pt"):
                return self._query(examples, return_tensors)
            return self.tokenizer(examples, truncation=True, max_length=self.max_length, return_tensors=return_tensors)
        return self.tokenizer(list(examples), padding=True, truncation=True, max_length=self.max_length,
                              return_tensors=return_tensors)  # fmt: skip

    def batch(self, examples: Any) -> dict[str, Tensor]:
        encoded = self.encode(examples, "pt")
        return {name: encoded[name].to(torch.long) for name in self.names}

    def sample(self) -> dict[str, Tensor]:
        encoded = self.tokenizer(list(SAMPLE_TEXTS), padding=True, return_tensors="pt")
        return {name: encoded[name].to(torch.long) for name in self.names}

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "names": list(self.names), "dtype": "int64", "max_length": self.max_length,
                "shape": {n: ["batch", "sequence"] for n in self.names}}  # fmt: skip

    def save(self, directory: str | os.PathLike[str]) -> None:
        self.tokenizer.save_pretrained(directory)


class ImageInputs(ModelInputs):
    """Preprocessed float images ``(C, H, W)`` stacked into ``pixel_values`` ``(B, C, H, W)``.

    Examples are tensors or arrays already resized and normalized as the model was trained; one example is a
    ``(C, H, W)`` image, a batch is a ``(B, C, H, W)`` tensor or a sequence of ``(C, H, W)`` images.

    Args:
        num_channels: Input channels ``C``.
        image_size: Height = width, or ``(height, width)``.
    """

    kind = "image"
    names = ("pixel_values",)

    def __init__(self, num_channels: int, image_size: int | Sequence[int]) -> None:
        size = image_hw(image_size)
        if int(num_channels) < 1 or len(size) != 2 or min(size) < 1:
            raise ValueError(f"ImageInputs needs num_channels >= 1 and image_size = H or (H, W) >= 1; got "
                             f"{num_channels}, {image_size}.")  # fmt: skip
        self.num_channels, self.image_size = int(num_channels), size

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one example."""
        return (self.num_channels, *self.image_size)  # type: ignore[return-value]

    def encode(self, examples: Any, return_tensors: str = "pt") -> Mapping[str, Any]:
        pixels = self._stack(examples)
        return {"pixel_values": pixels.numpy() if return_tensors == "np" else pixels}

    def sample(self) -> dict[str, Tensor]:
        gen = torch.Generator().manual_seed(0)
        return {"pixel_values": torch.randn((2, *self.shape), generator=gen)}

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "names": list(self.names), "dtype": "float32",
                "shape": {"pixel_values": ["batch", *self.shape]}}  # fmt: skip

    def _stack(self, examples: Any) -> Tensor:
        if isinstance(examples, (Tensor, np.ndarray)):
            pixels = torch.as_tensor(examples)
            pixels = pixels.unsqueeze(0) if pixels.dim() == 3 else pixels
        elif isinstance(examples, Sequence) and len(examples) > 0 and not isinstance(examples, str):
            pixels = torch.stack([torch.as_tensor(x) for x in examples])
        else:
            raise ValueError(f"Image examples must be (C, H, W) images or a (B, C, H, W) batch; got "
                             f"{type(examples).__name__}. Preprocess images to float tensors first.")  # fmt: skip
        if pixels.dim() != 4 or tuple(pixels.shape[1:]) != self.shape or not pixels.is_floating_point():
            raise ValueError(f"Image examples must be float (C, H, W) = {self.shape}; got {pixels.dtype} batch of "
                             f"shape {tuple(pixels.shape)}. Resize and normalize them as for training.")  # fmt: skip
        return pixels.to(torch.float32).contiguous()


def is_image_config(config: Any, directory: str | os.PathLike[str] | None = None) -> bool:
    """Whether ``config`` (a ``PretrainedConfig`` or its dict) describes an image model: it has
    ``num_channels`` and ``image_size``, and ``directory`` (if given) holds no tokenizer."""
    get = config.get if isinstance(config, Mapping) else lambda k: getattr(config, k, None)
    geometry = get("num_channels") is not None and get("image_size") is not None
    tokenizer = directory is not None and any((Path(directory) / n).is_file() for n in TOKENIZER_FILES)
    return bool(geometry and not tokenizer)


def inputs_for(
    source: str | os.PathLike[str] | torch.nn.Module, *, tokenizer: Any | None = None, max_length: int | None = None
) -> ModelInputs:
    """The :class:`ModelInputs` of a model directory (or artifact directory) or a model.

    Args:
        source: A directory holding ``config.json`` (and, for text, the tokenizer), or a model with ``.config``.
        tokenizer: The tokenizer of a text model given as a model (directories hold their own).
        max_length: Text truncation length; default the config's ``max_position_embeddings`` and the
            tokenizer's ``model_max_length`` (the smaller), else 512.
    """
    directory = None if isinstance(source, torch.nn.Module) else Path(source)
    if directory is not None:
        path = directory / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"No config.json in {directory}; save the model with save_model_dir.")
        config: Any = json.loads(path.read_text())
    else:
        config = getattr(source, "config", None)
        if config is None:
            raise ValueError(f"{type(source).__name__} has no .config; pass a Hugging Face-style classifier.")
    if is_image_config(config, directory):
        get = config.get if isinstance(config, Mapping) else lambda k: getattr(config, k)
        return ImageInputs(get("num_channels"), get("image_size"))
    if tokenizer is None:
        if directory is None:
            raise ValueError("A text model needs its tokenizer: pass tokenizer= (or the model's directory).")
        from lit_compress.export.predictor import load_artifact_tokenizer

        tokenizer = load_artifact_tokenizer(directory)
    return TextInputs(tokenizer, max_length or _max_length(config, tokenizer))


def _max_length(config: Any, tokenizer: Any) -> int:
    positions = config.get("max_position_embeddings") if isinstance(config, Mapping) else getattr(
        config, "max_position_embeddings", None)  # fmt: skip
    limit = getattr(tokenizer, "model_max_length", None)
    candidates = [v for v in (positions, limit) if isinstance(v, int) and 0 < v < 1_000_000]
    return min(candidates) if candidates else 512
