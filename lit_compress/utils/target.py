"""Which model inside a LightningModule a compression callback acts on."""

from __future__ import annotations

from torch import nn


def compression_target(pl_module: nn.Module) -> nn.Module:
    """Return the module that pruning / quantization callbacks should compress.

    lit_compress modules expose it as a ``compression_target`` attribute (the student of a
    ``DistillationModule``, the model of a ``ClassifierModule``); any other ``nn.Module`` is its own target,
    so callbacks also work on plain user LightningModules.

    Args:
        pl_module: The LightningModule (or any module) being trained.
    """
    target = getattr(pl_module, "compression_target", None)
    return target if isinstance(target, nn.Module) else pl_module
