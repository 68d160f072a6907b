"""Fake-quantized Linear and Conv2d layers and the ``prepare`` step that swaps them in (never patching
``forward``).

:class:`FakeQuantizedLinear` subclasses ``nn.Linear`` (:class:`FakeQuantizedConv2d`: ``nn.Conv2d``) and keeps
the *same* ``weight`` / ``bias`` Parameter objects, so pruning masks, optimizers, EMA helpers or anything else
that reads ``module.weight`` keeps working; only ``forward`` differs: ``y = fq(x) @ fq(W)^T + b`` (``y =
conv(fq(x), fq(W)) + b``) with straight-through gradients (Jacob et al., 2018; Bengio et al., 2013). Both share
one quantization core, :class:`FakeQuantized`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from torch import nn

from lit_compress.quant.config import ActivationQuantConfig, WeightQuantConfig
from lit_compress.quant.layers import (
    FAKE_QUANTIZED,
    FakeQuantized,
    FakeQuantizedConv2d,
    FakeQuantizedLinear,
    ModuleTypes,
)

__all__ = [
    "FAKE_QUANTIZED", "FakeQuantized", "FakeQuantizedConv2d", "FakeQuantizedLinear", "FilterFn", "default_filter",
    "fake_quantized_modules", "module_types_from_names", "prepare_qat", "regex_filter", "set_quantization_state",
    "with_convs",
]  # fmt: skip

FilterFn = Callable[[nn.Module, str], bool]


def default_filter(module: nn.Module, fqn: str) -> bool:
    """Select the ``nn.Linear`` layers inside an ``encoder`` (a BERT's attention and feed-forward Linears) and
    every ``nn.Conv2d`` (a CNN's convolutions, a ViT's patch embedding)."""
    return isinstance(module, nn.Conv2d) or (isinstance(module, nn.Linear) and "encoder" in fqn.split("."))


def _default_filter_for(model: nn.Module) -> FilterFn:
    from lit_compress.models.layout import default_linear_filter

    return with_convs(default_linear_filter(model))


def with_convs(filter_fn: FilterFn) -> FilterFn:
    """``filter_fn`` that also selects every ``nn.Conv2d`` (the default filters' convolution rule)."""
    return lambda module, fqn: isinstance(module, nn.Conv2d) or filter_fn(module, fqn)


def regex_filter(pattern: str) -> FilterFn:
    """A filter selecting ``nn.Linear`` / ``nn.Conv2d`` layers whose qualified name matches ``pattern``
    (``re.search``); restrict the layer types with ``prepare_qat(module_types=...)``."""
    import re

    compiled = re.compile(pattern)
    return lambda module, fqn: isinstance(module, (nn.Linear, nn.Conv2d)) and compiled.search(fqn) is not None


def module_types_from_names(names: Sequence[str | type[nn.Module]]) -> tuple[type[nn.Module], ...]:
    """``("Linear", "Conv2d")`` (or ``"nn.Linear"``, ``"torch.nn.Conv2d"``) -> ``(nn.Linear, nn.Conv2d)``; classes
    pass through.

    Raises:
        ValueError: A name that is not a swappable layer type (the message lists them).
    """
    known = {t.__name__: t for t in FAKE_QUANTIZED}
    out = []
    for name in names:
        short = name.removeprefix("torch.").removeprefix("nn.") if isinstance(name, str) else None
        if isinstance(name, type) and name in FAKE_QUANTIZED:
            out.append(name)
        elif short in known:
            out.append(known[short])
        else:
            raise ValueError(f"module_types: {name!r} cannot be fake-quantized; use a subset of {sorted(known)}.")
    return tuple(out)


def prepare_qat(
    model: nn.Module,
    weight_config: WeightQuantConfig | None = None,
    activation_config: ActivationQuantConfig | None = None,
    filter_fn: FilterFn | None = None,
    module_types: ModuleTypes = (nn.Linear, nn.Conv2d),
    conv_weight_config: WeightQuantConfig | None = None,
) -> list[str]:
    """Swap the selected Linears and Conv2ds of ``model`` for their fake-quantized forms in place (idempotent).

    Layers that already are fake-quantized are kept as they are (and listed), so calling this twice, or on a
    model restored from a QAT checkpoint, changes nothing.

    Args:
        model: The model to prepare.
        weight_config: Weight quantization; default int8 symmetric per channel.
        activation_config: Input quantization; default dynamic uint8 per tensor.
        filter_fn: ``(module, fqn) -> bool`` choosing the layers; default: the Linears of the encoder blocks
            (``lit_compress.models.layout.default_linear_filter``; :func:`default_filter` for families without
            a layout) and every ``nn.Conv2d``.
        module_types: Which float layer types may be swapped (``(nn.Linear,)``: Linears only).
        conv_weight_config: Weight quantization of convolutions (default ``weight_config``); ORT's dynamic
            ``ConvInteger`` takes one weight scale per tensor
            (:func:`~lit_compress.quant.export.ort_dynamic_scheme`).

    Returns:
        Qualified names of all fake-quantized layers in ``model``.

    Raises:
        ValueError: No layer matched ``filter_fn``.
    """
    select = filter_fn or _default_filter_for(model)
    types = tuple(module_types)
    names: list[str] = []
    for fqn, module in list(model.named_modules()):
        if isinstance(module, FakeQuantized):
            names.append(fqn)
        elif type(module) in FAKE_QUANTIZED and isinstance(module, types) and select(module, fqn):
            config = conv_weight_config if conv_weight_config and isinstance(module, nn.Conv2d) else weight_config
            new = FAKE_QUANTIZED[type(module)].from_module(module, config, activation_config)
            model.set_submodule(fqn, new)
            names.append(fqn)
    if not names:
        kinds = " or ".join(f"nn.{t.__name__}" for t in types)
        raise ValueError(
            f"No {kinds} in {type(model).__name__} matched the quantization filter; pass filter_fn="
            "(module, fqn) -> bool or a name regex that selects the layers to quantize."
        )
    return names


def fake_quantized_modules(model: nn.Module) -> Iterator[tuple[str, FakeQuantized]]:
    """Yield ``(fqn, module)`` for every fake-quantized layer (:class:`FakeQuantized`) in ``model``."""
    for fqn, module in model.named_modules():
        if isinstance(module, FakeQuantized):
            yield fqn, module


def set_quantization_state(model: nn.Module, fake_quant: bool, observers: bool) -> None:
    """Switch fake quantization and observer updates on or off in every fake-quantized layer of ``model``."""
    for _, module in fake_quantized_modules(model):
        module.fake_quant_enabled.fill_(fake_quant)
        module.observer_enabled.fill_(observers)
