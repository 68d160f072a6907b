"""The input geometry of an image classifier, read from its config (``num_channels``, ``image_size``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def image_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    """``(height, width)`` of a config's ``image_size`` (one number for square images, or a pair)."""
    if isinstance(image_size, (list, tuple)):
        return tuple(int(s) for s in image_size)  # type: ignore[return-value]
    return int(image_size), int(image_size)


def zero_images(model: nn.Module, batch: int = 1) -> dict[str, Tensor]:
    """``{"pixel_values": zeros(batch, C, H, W)}`` on the model's device, from ``model.config`` (for tracing).

    Raises:
        ValueError: The model has no config with ``num_channels`` and ``image_size`` (pass real inputs instead).
    """
    config = getattr(model, "config", None)
    channels, size = getattr(config, "num_channels", None), getattr(config, "image_size", None)
    if channels is None or size is None:
        raise ValueError(f"{type(model).__name__} has no config.num_channels / config.image_size to build an example "
                         "image batch from; pass a real batch ({'pixel_values': ...}) instead.")  # fmt: skip
    device = next(model.parameters()).device
    return {"pixel_values": torch.zeros(batch, int(channels), *image_hw(size), device=device)}
