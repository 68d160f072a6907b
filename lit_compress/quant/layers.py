"""Fake-quantized layers: one quantization core (:class:`FakeQuantized`) over ``nn.Linear`` and ``nn.Conv2d``.

Each subclasses its float layer and keeps the *same* ``weight`` / ``bias`` Parameters (exact round trip with
:meth:`~FakeQuantized.from_module` / :meth:`~FakeQuantized.to_module`); only ``forward`` differs, with
straight-through gradients (Jacob et al., 2018; Bengio et al., 2013). The ``prepare`` step that swaps them in
is :func:`lit_compress.quant.fake_quant.prepare_qat`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from lit_compress.quant.config import ActivationQuantConfig, WeightQuantConfig
from lit_compress.quant.functional import (
    affine_qparams,
    dynamic_qparams,
    fake_quantize,
    fake_quantize_dynamic,
    symmetric_qparams,
)
from lit_compress.quant.observers import RangeObserver


class FakeQuantized(nn.Module):
    """What every fake-quantized layer shares: weight and input fake quantization, observers, on/off state.

    Weights: symmetric, per output channel (axis 0, one scale per row of ``weight.flatten(1)``) or per tensor
    (:class:`WeightQuantConfig`), recomputed from the current weight every call. Input: per-tensor asymmetric,
    from the batch's own range (``"dynamic"``) or from :attr:`input_observer` (``"static"``). The on/off
    switches are boolean buffers and the observers' ranges are buffers, so all quantization state is saved in
    and restored from checkpoints. A subclass also derives from the float layer (``nn.Linear``, ``nn.Conv2d``)
    whose ``weight`` / ``bias`` it shares and says how to compute with them (:meth:`compute`) and how to
    rebuild that layer (:meth:`float_kwargs`); :meth:`from_module` / :meth:`to_module` swap them.
    """

    float_type: type[nn.Module]
    weight_config: WeightQuantConfig
    activation_config: ActivationQuantConfig
    input_observer: RangeObserver | None
    fake_quant_enabled: Tensor
    observer_enabled: Tensor

    def _init_quantization(
        self, weight_config: WeightQuantConfig | None, activation_config: ActivationQuantConfig | None
    ) -> None:
        self.weight_config = weight_config or WeightQuantConfig()
        self.activation_config = activation_config or ActivationQuantConfig()
        self.input_observer = self._new_observer()
        self.register_buffer("fake_quant_enabled", torch.tensor(True))
        self.register_buffer("observer_enabled", torch.tensor(True))

    def _new_observer(self) -> RangeObserver | None:
        act = self.activation_config
        if act.scheme != "static":
            return None
        return RangeObserver(act.averaging_constant if act.observer == "moving_average" else None)

    @classmethod
    def float_kwargs(cls, module: nn.Module) -> dict[str, Any]:
        """Constructor arguments that rebuild ``module``'s float layer (without ``weight`` / ``bias``)."""
        raise NotImplementedError

    def compute(self, x: Tensor, weight: Tensor) -> Tensor:
        """The float layer's operation on ``x`` with ``weight`` and this layer's ``bias``."""
        raise NotImplementedError

    @classmethod
    def from_module(
        cls,
        module: nn.Module,
        weight_config: WeightQuantConfig | None = None,
        activation_config: ActivationQuantConfig | None = None,
    ) -> Any:
        """Wrap ``module``, sharing its ``weight`` and ``bias`` Parameters (no copy; exact round trip).

        Raises:
            TypeError: ``module`` is not exactly :attr:`float_type`, or carries parametrizations or hooks that
                a swap would silently drop (swap first, then add them: put ``QuantizationAwareTraining`` before
                such callbacks).
        """
        _check_swappable(module, cls)
        new = cls(**cls.float_kwargs(module), weight_config=weight_config, activation_config=activation_config,
                  device="meta")  # fmt: skip
        new.weight = module.weight
        new.bias = module.bias
        new.to(module.weight.device)
        return new.train(module.training)

    def to_module(self) -> nn.Module:
        """Return the plain float layer, sharing this module's ``weight`` and ``bias`` Parameters."""
        plain = self.float_type(**self.float_kwargs(self), device="meta")
        plain.weight = self.weight
        plain.bias = self.bias
        return plain.train(self.training)

    def observers(self) -> list[RangeObserver]:
        """The static-scheme range observers of this layer (empty for the dynamic scheme)."""
        return [o for o in (self.input_observer,) if o is not None]

    def weight_qparams(self) -> tuple[Tensor, Tensor]:
        """Current weight scale and zero point (one per output channel if per channel)."""
        w = self.weight.detach()
        if self.weight_config.axis is None:
            lo, hi = torch.aminmax(w)
        else:
            lo, hi = torch.aminmax(w.flatten(1), dim=1)
        return symmetric_qparams(lo, hi, self.weight_config.symmetric_qmax)

    def input_qparams(self, x: Tensor | None = None) -> tuple[Tensor, Tensor] | None:
        """Input scale and zero point: from ``x`` (dynamic) or the observer (static; ``None`` if unobserved)."""
        return _range_qparams(self.input_observer, x, self.activation_config.qrange)

    def quantized_weight(self) -> Tensor:
        """``fq(W)``: the weight on its integer grid (straight-through gradient to ``weight``)."""
        scale, zero_point = self.weight_qparams()
        qmin, qmax = self.weight_config.qrange
        return fake_quantize(self.weight, scale, zero_point, qmin, qmax, axis=self.weight_config.axis)

    def quantized_input(self, x: Tensor) -> Tensor:
        """``fq(x)``; ``x`` unchanged if a static observer has seen no data yet (e.g. a sanity check)."""
        if self.input_observer is None:  # dynamic: round exactly as ORT's DynamicQuantizeLinear does
            return fake_quantize_dynamic(x, *self.activation_config.qrange)
        qparams = self.input_qparams(x)
        if qparams is None:
            return x
        return fake_quantize(x, *qparams, *self.activation_config.qrange)

    def _observing(self) -> bool:
        return self.training and bool(self.observer_enabled)

    def forward(self, x: Tensor) -> Tensor:
        if self.input_observer is not None and self._observing():
            self.input_observer(x)
        if not bool(self.fake_quant_enabled):
            return self.compute(x, self.weight)
        return self.compute(self.quantized_input(x), self.quantized_weight())

    def extra_repr(self) -> str:
        w, a = self.weight_config, self.activation_config
        return (
            f"{super().extra_repr()}, weight=int{w.bits} {w.granularity}, "
            f"input={'int' if a.signed else 'uint'}{a.bits} {a.scheme}"
        )


class FakeQuantizedLinear(FakeQuantized, nn.Linear):
    """``nn.Linear`` whose input and weight are fake-quantized when ``fake_quant_enabled`` is set.

    ``y = fq(x) fq(W)^T + b``; see :class:`FakeQuantized`. Build one with :meth:`from_module`; get the plain
    Linear back with :meth:`to_module`.
    """

    float_type = nn.Linear

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
        nn.Linear.__init__(self, in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._init_quantization(weight_config, activation_config)

    @classmethod
    def float_kwargs(cls, module: nn.Module) -> dict[str, Any]:
        assert isinstance(module, nn.Linear)
        return {"in_features": module.in_features, "out_features": module.out_features,
                "bias": module.bias is not None}  # fmt: skip

    def compute(self, x: Tensor, weight: Tensor) -> Tensor:
        return F.linear(x, weight, self.bias)


class FakeQuantizedConv2d(FakeQuantized, nn.Conv2d):
    """``nn.Conv2d`` with fake-quantized input and weight (and, static scheme, output) while enabled.

    ``y = conv(fq(x), fq(W)) + b``, with one weight scale per output channel (``S_c = max|W_c| / q_max`` over
    the ``in/groups x kh x kw`` values of filter ``c``; grouped and depthwise convs included) or per tensor.
    Under the static scheme the output is fake-quantized too, from :attr:`output_observer`: ONNX Runtime fuses
    a Q/DQ conv into ``QLinearConv`` only when its output is quantized, and that kernel rounds the output to
    uint8 (or int8), so QAT trains on that rounding as well.
    """

    float_type = nn.Conv2d
    output_observer: RangeObserver | None

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: str | int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        weight_config: WeightQuantConfig | None = None,
        activation_config: ActivationQuantConfig | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                           padding_mode, device=device, dtype=dtype)  # fmt: skip
        self._init_quantization(weight_config, activation_config)
        self.output_observer = self._new_observer()

    @classmethod
    def float_kwargs(cls, module: nn.Module) -> dict[str, Any]:
        assert isinstance(module, nn.Conv2d)
        return {"in_channels": module.in_channels, "out_channels": module.out_channels,
                "kernel_size": module.kernel_size, "stride": module.stride, "padding": module.padding,
                "dilation": module.dilation, "groups": module.groups, "bias": module.bias is not None,
                "padding_mode": module.padding_mode}  # fmt: skip

    def compute(self, x: Tensor, weight: Tensor) -> Tensor:
        return self._conv_forward(x, weight, self.bias)

    def observers(self) -> list[RangeObserver]:
        return [o for o in (self.input_observer, self.output_observer) if o is not None]

    def output_qparams(self) -> tuple[Tensor, Tensor] | None:
        """Output scale and zero point of the static scheme (``None``: dynamic scheme or unobserved)."""
        return _range_qparams(self.output_observer, None, self.activation_config.qrange)

    def forward(self, x: Tensor) -> Tensor:
        y = super().forward(x)
        if self.output_observer is None:
            return y
        if self._observing():
            self.output_observer(y)
        qparams = self.output_qparams()
        if qparams is None or not bool(self.fake_quant_enabled):
            return y
        return fake_quantize(y, *qparams, *self.activation_config.qrange)


#: The float layers :func:`prepare_qat` swaps, and their fake-quantized counterparts.
FAKE_QUANTIZED: dict[type[nn.Module], type[FakeQuantized]] = {
    nn.Linear: FakeQuantizedLinear, nn.Conv2d: FakeQuantizedConv2d,
}  # fmt: skip
ModuleTypes = Sequence[type[nn.Module]]


def _range_qparams(
    observer: RangeObserver | None, x: Tensor | None, qrange: tuple[int, int]
) -> tuple[Tensor, Tensor] | None:
    if observer is None:
        if x is None:
            return None
        return dynamic_qparams(x, *qrange)
    if not observer.initialized:
        return None
    return affine_qparams(observer.min_val, observer.max_val, *qrange)


def _check_swappable(module: nn.Module, cls: type[FakeQuantized]) -> None:
    kind = cls.float_type.__name__
    if parametrize.is_parametrized(module):
        raise TypeError(
            f"{type(module).__name__} has parametrizations (e.g. a pruning mask) that a module swap would drop; "
            "prepare quantization first (list QuantizationAwareTraining before pruning callbacks)."
        )
    if type(module) is not cls.float_type:
        raise TypeError(f"{cls.__name__}.from_module expects a plain nn.{kind}, got {type(module).__name__}.")
    hooks = (module._forward_hooks, module._forward_pre_hooks, module._backward_hooks)
    if any(hooks) or hasattr(module, "weight_orig"):
        raise TypeError(
            f"This nn.{kind} has hooks (e.g. torch.nn.utils.prune or a feature tap) that a module swap would drop; "
            "prepare quantization before registering them (list QuantizationAwareTraining first)."
        )
