"""Typed, validated configuration of quantization-aware training (weights, activations, schedule)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lit_compress.quant.functional import integer_range

WeightGranularity = Literal["per_channel", "per_tensor"]
ActivationScheme = Literal["dynamic", "static"]
ObserverKind = Literal["minmax", "moving_average"]


@dataclass(frozen=True)
class WeightQuantConfig:
    """How Linear weights are fake-quantized: signed, symmetric, ``S = max|w| / q_max``, ``Z = 0``.

    This matches ONNX Runtime's int8 weight quantization (``quantize_dynamic`` / ``quantize_static`` with
    ``reduce_range=False``), so a QAT model exported through ONNX Runtime keeps the grid it was trained on.
    """

    bits: int = 8
    """Weight width in bits (2..8); ONNX Runtime int8 export needs 8."""
    granularity: WeightGranularity = "per_channel"
    """``"per_channel"`` (one scale per output row; pass ``per_channel=True`` to ONNX Runtime) or
    ``"per_tensor"`` (one scale for the matrix; ONNX Runtime's default ``per_channel=False``)."""
    reduce_range: bool = False
    """Use ONNX Runtime's reduced range ``-64..64`` (``S = max|w| / 64``), matching ``reduce_range=True``
    (for CPUs without VNNI, whose int8 dot products can saturate)."""

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise ValueError(f"WeightQuantConfig.bits={self.bits}: use 2..8 (8 for ONNX Runtime int8 kernels).")
        if self.reduce_range and self.bits != 8:
            raise ValueError("WeightQuantConfig.reduce_range mirrors ONNX Runtime's int8 option; it needs bits=8.")
        if self.granularity not in ("per_channel", "per_tensor"):
            raise ValueError(
                f"WeightQuantConfig.granularity={self.granularity!r}: use 'per_channel' or 'per_tensor'."
            )

    @property
    def qrange(self) -> tuple[int, int]:
        """Integer range of the fake-quant op, e.g. ``(-128, 127)``; codes used are ``-q_max..q_max``."""
        return integer_range(self.bits, signed=True)

    @property
    def symmetric_qmax(self) -> int:
        """``q_max`` of the symmetric scale: ``2^(b-1) - 1`` (127 for int8), or 64 with ``reduce_range``."""
        return 2 ** (self.bits - 2) if self.reduce_range else self.qrange[1]

    @property
    def axis(self) -> int | None:
        """Channel axis of an ``nn.Linear`` weight (output rows) for per-channel scales, else ``None``."""
        return 0 if self.granularity == "per_channel" else None


@dataclass(frozen=True)
class ActivationQuantConfig:
    """How a Linear's input is fake-quantized: per tensor, asymmetric ``S, Z`` from a range.

    ``"dynamic"``: the range is the current input's min/max, recomputed every call, as ONNX Runtime's
    ``DynamicQuantizeLinear`` does (uint8, per tensor) in a ``quantize_dynamic`` model. ``"static"``: the range
    comes from an observer (running min/max, or an exponential moving average of per-batch min/max) that is
    frozen after a number of steps; the frozen scale is exported as a ``QuantizeLinear`` constant.
    """

    scheme: ActivationScheme = "dynamic"
    """``"dynamic"`` (mimics ONNX Runtime dynamic quantization) or ``"static"`` (observed, exported Q/DQ)."""
    bits: int = 8
    """Activation width in bits (2..8); ONNX export needs 8."""
    signed: bool = False
    """int8 codes if ``True``; uint8 (ONNX Runtime's default for activations) if ``False``."""
    observer: ObserverKind = "moving_average"
    """Static scheme only: ``"minmax"`` (running extremes) or ``"moving_average"`` (EMA of batch extremes)."""
    averaging_constant: float = 0.01
    """EMA weight ``c`` of the moving-average observer: ``m <- m + c (m_batch - m)``."""

    def __post_init__(self) -> None:
        if self.scheme not in ("dynamic", "static"):
            raise ValueError(f"ActivationQuantConfig.scheme={self.scheme!r}: use 'dynamic' or 'static'.")
        if not 2 <= self.bits <= 8:
            raise ValueError(f"ActivationQuantConfig.bits={self.bits}: use 2..8 (8 for ONNX export).")
        if self.scheme == "dynamic" and self.signed:
            raise ValueError(
                "ActivationQuantConfig(scheme='dynamic', signed=True): ONNX Runtime's DynamicQuantizeLinear "
                "produces uint8 only; use signed=False, or scheme='static' for int8 activations."
            )
        if self.observer not in ("minmax", "moving_average"):
            raise ValueError(f"ActivationQuantConfig.observer={self.observer!r}: use 'minmax' or 'moving_average'.")
        if not 0.0 < self.averaging_constant <= 1.0:
            raise ValueError(
                f"ActivationQuantConfig.averaging_constant={self.averaging_constant}: must be in (0, 1]."
            )

    @property
    def qrange(self) -> tuple[int, int]:
        """Integer range, e.g. ``(0, 255)`` for uint8 or ``(-128, 127)`` for int8."""
        return integer_range(self.bits, signed=self.signed)


@dataclass(frozen=True)
class QuantizationSchedule:
    """When fake quantization is on and when observers stop updating, as a function of the optimizer step.

    Fake quantization is applied from ``start_step`` on (full-precision warm-up before). Observers record
    ranges in training mode from step 0 (warm-up statistics seed the ranges) until ``freeze_observers_step``.
    Both are pure functions of ``trainer.global_step``, so a resumed run reproduces them exactly.
    """

    start_step: int = 0
    """First optimizer step with fake quantization."""
    freeze_observers_step: int | None = None
    """First step at which static-scheme observers stop updating; ``None`` never freezes."""

    def __post_init__(self) -> None:
        if self.start_step < 0:
            raise ValueError(f"start_step={self.start_step} must be >= 0.")
        if self.freeze_observers_step is not None and self.freeze_observers_step < 1:
            raise ValueError(
                f"freeze_observers_step={self.freeze_observers_step} must be >= 1 (observers need at least one "
                "step of data) or None to never freeze."
            )

    def fake_quant_enabled(self, step: int) -> bool:
        """Whether fake quantization is applied at optimizer step ``step``."""
        return step >= self.start_step

    def observers_enabled(self, step: int) -> bool:
        """Whether observers update at optimizer step ``step``."""
        return self.freeze_observers_step is None or step < self.freeze_observers_step
