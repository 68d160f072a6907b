"""Fake-quantized Linear layers and the ``prepare`` step that swaps them in (never patching ``forward``).

:class:`FakeQuantizedLinear` subclasses ``nn.Linear`` and keeps the *same* ``weight`` / ``bias`` Parameter
objects, so pruning masks, optimizers, EMA helpers or anything else that reads ``module.weight`` of a Linear
keeps working; only ``forward`` differs: ``y = fq(x) @ fq(W)^T + b`` with straight-through gradients
(Jacob et al., 2018; Bengio et al., 2013).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from lit_compress.quant.config import ActivationQuantConfig, WeightQuantConfig
from lit_compress.quant.functional import affine_qparams, fake_quantize, symmetric_qparams
from lit_compress.quant.observers import RangeObserver

FilterFn = Callable[[nn.Module, str], bool]


class FakeQuantizedLinear(nn.Linear):
    """``nn.Linear`` whose input and weight are fake-quantized when ``fake_quant_enabled`` is set.

    Weights: symmetric, per output channel or per tensor (:class:`WeightQuantConfig`), recomputed from the
    current weight every call. Input: per-tensor asymmetric, from the batch's own range (``"dynamic"``) or
    from :attr:`input_observer` (``"static"``). The on/off switches are boolean buffers, and the observer's
    range is a buffer, so all quantization state is saved in and restored from checkpoints.

    Build one with :meth:`from_module`; get the plain Linear back with :meth:`to_module`.
    """

    fake_quant_enabled: Tensor
    observer_enabled: Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        weight_config: WeightQuantConfig | None = None,
        activation_config: ActivationQuantConfig | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.weight_config = weight_config or WeightQuantConfig()
        self.activation_config = activation_config or ActivationQuantConfig()
        act = self.activation_config
        self.input_observer: RangeObserver | None = None
        if act.scheme == "static":
            constant = act.averaging_constant if act.observer == "moving_average" else None
            self.input_observer = RangeObserver(constant)
        self.register_buffer("fake_quant_enabled", torch.tensor(True))
        self.register_buffer("observer_enabled", torch.tensor(True))

    @classmethod
    def from_module(
        cls,
        module: nn.Linear,
        weight_config: WeightQuantConfig | None = None,
        activation_config: ActivationQuantConfig | None = None,
    ) -> FakeQuantizedLinear:
        """Wrap ``module``, sharing its ``weight`` and ``bias`` Parameters (no copy; exact round trip).

        Raises:
            TypeError: ``module`` is not a plain ``nn.Linear``, or carries parametrizations or hooks that a
                swap would silently drop (swap first, then add them: put ``QuantizationAwareTraining`` before
                such callbacks).
        """
        _check_swappable(module)
        new = cls(
            module.in_features, module.out_features, bias=module.bias is not None,
            weight_config=weight_config, activation_config=activation_config, device="meta",
        )  # fmt: skip
        new.weight = module.weight
        new.bias = module.bias
        new.to(module.weight.device)
        return new.train(module.training)

    def to_module(self) -> nn.Linear:
        """Return a plain ``nn.Linear`` sharing this module's ``weight`` and ``bias`` Parameters."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        linear.weight = self.weight
        linear.bias = self.bias
        return linear.train(self.training)

    def weight_qparams(self) -> tuple[Tensor, Tensor]:
        """Current weight scale and zero point (one per output row if per channel)."""
        w = self.weight.detach()
        if self.weight_config.axis is None:
            lo, hi = torch.aminmax(w)
        else:
            lo, hi = torch.aminmax(w, dim=1)
        return symmetric_qparams(lo, hi, self.weight_config.symmetric_qmax)

    def input_qparams(self, x: Tensor | None = None) -> tuple[Tensor, Tensor] | None:
        """Input scale and zero point: from ``x`` (dynamic) or the observer (static; ``None`` if unobserved)."""
        qmin, qmax = self.activation_config.qrange
        if self.input_observer is None:
            if x is None:
                return None
            lo, hi = torch.aminmax(x.detach())
            return affine_qparams(lo, hi, qmin, qmax)
        if not self.input_observer.initialized:
            return None
        return affine_qparams(self.input_observer.min_val, self.input_observer.max_val, qmin, qmax)

    def quantized_weight(self) -> Tensor:
        """``fq(W)``: the weight on its integer grid (straight-through gradient to ``weight``)."""
        scale, zero_point = self.weight_qparams()
        qmin, qmax = self.weight_config.qrange
        return fake_quantize(self.weight, scale, zero_point, qmin, qmax, axis=self.weight_config.axis)

    def quantized_input(self, x: Tensor) -> Tensor:
        """``fq(x)``; ``x`` unchanged if a static observer has seen no data yet (e.g. a sanity check)."""
        qparams = self.input_qparams(x)
        if qparams is None:
            return x
        return fake_quantize(x, *qparams, *self.activation_config.qrange)

    def forward(self, x: Tensor) -> Tensor:
        if self.input_observer is not None and self.training and bool(self.observer_enabled):
            self.input_observer(x)
        if not bool(self.fake_quant_enabled):
            return F.linear(x, self.weight, self.bias)
        return F.linear(self.quantized_input(x), self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        w, a = self.weight_config, self.activation_config
        return (
            f"{super().extra_repr()}, weight=int{w.bits} {w.granularity}, "
            f"input={'int' if a.signed else 'uint'}{a.bits} {a.scheme}"
        )


def default_filter(module: nn.Module, fqn: str) -> bool:
    """Select the ``nn.Linear`` layers inside an ``encoder`` (a BERT's attention and feed-forward Linears)."""
    return isinstance(module, nn.Linear) and "encoder" in fqn.split(".")


def _default_filter_for(model: nn.Module) -> FilterFn:
    from lit_compress.models.layout import default_linear_filter

    return default_linear_filter(model)


def regex_filter(pattern: str) -> FilterFn:
    """A filter selecting ``nn.Linear`` layers whose qualified name matches ``pattern`` (``re.search``)."""
    import re

    compiled = re.compile(pattern)
    return lambda module, fqn: isinstance(module, nn.Linear) and compiled.search(fqn) is not None


def prepare_qat(
    model: nn.Module,
    weight_config: WeightQuantConfig | None = None,
    activation_config: ActivationQuantConfig | None = None,
    filter_fn: FilterFn | None = None,
) -> list[str]:
    """Swap the selected Linears of ``model`` for :class:`FakeQuantizedLinear` in place (idempotent).

    Layers that already are fake-quantized are kept as they are (and listed), so calling this twice, or on a
    model restored from a QAT checkpoint, changes nothing.

    Args:
        model: The model to prepare.
        weight_config: Weight quantization; default int8 symmetric per channel.
        activation_config: Input quantization; default dynamic uint8 per tensor.
        filter_fn: ``(module, fqn) -> bool`` choosing the Linears; default: the Linears of the encoder blocks
            (``lit_compress.models.layout.default_linear_filter``; :func:`default_filter` for families without
            a layout).

    Returns:
        Qualified names of all fake-quantized Linears in ``model``.

    Raises:
        ValueError: No layer matched ``filter_fn``.
    """
    select = filter_fn or _default_filter_for(model)
    names: list[str] = []
    for fqn, module in list(model.named_modules()):
        if isinstance(module, FakeQuantizedLinear):
            names.append(fqn)
        elif isinstance(module, nn.Linear) and select(module, fqn):
            model.set_submodule(fqn, FakeQuantizedLinear.from_module(module, weight_config, activation_config))
            names.append(fqn)
    if not names:
        raise ValueError(
            f"No nn.Linear in {type(model).__name__} matched the quantization filter; pass filter_fn="
            "(module, fqn) -> bool or a name regex that selects the layers to quantize."
        )
    return names


def fake_quantized_modules(model: nn.Module) -> Iterator[tuple[str, FakeQuantizedLinear]]:
    """Yield ``(fqn, module)`` for every :class:`FakeQuantizedLinear` in ``model``."""
    for fqn, module in model.named_modules():
        if isinstance(module, FakeQuantizedLinear):
            yield fqn, module


def set_quantization_state(model: nn.Module, fake_quant: bool, observers: bool) -> None:
    """Switch fake quantization and observer updates on or off in every fake-quantized layer of ``model``."""
    for _, module in fake_quantized_modules(model):
        module.fake_quant_enabled.fill_(fake_quant)
        module.observer_enabled.fill_(observers)


def _check_swappable(module: nn.Module) -> None:
    if parametrize.is_parametrized(module):
        raise TypeError(
            f"{type(module).__name__} has parametrizations (e.g. a pruning mask) that a module swap would drop; "
            "prepare quantization first (list QuantizationAwareTraining before pruning callbacks)."
        )
    if type(module) is not nn.Linear:
        raise TypeError(f"FakeQuantizedLinear.from_module expects a plain nn.Linear, got {type(module).__name__}.")
    hooks = (module._forward_hooks, module._forward_pre_hooks, module._backward_hooks)
    if any(hooks) or hasattr(module, "weight_orig"):
        raise TypeError(
            "This nn.Linear has hooks (e.g. torch.nn.utils.prune or a feature tap) that a module swap would drop; "
            "prepare quantization before registering them (list QuantizationAwareTraining first)."
        )
