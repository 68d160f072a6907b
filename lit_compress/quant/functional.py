"""Pure uniform (affine) quantization math: integer ranges, scale / zero point, quantize, dequantize.

Everything here is a plain function of tensors, with no module state and no Trainer, so it can be checked
against a hand computation. The fake quantizers (:mod:`lit_compress.quant.fake_quant`) and the Q/DQ
converter (:mod:`lit_compress.quant.export`) both use it, so training and export share one formula.

The mapping between a real value ``r`` and its integer code ``q`` is (Jacob et al., 2018, "Quantization and
Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference", eq. 1)::

    r = S * (q - Z)                                   # dequantize
    q = clamp(round(r / S) + Z, q_min, q_max)         # quantize

Asymmetric (affine) parameters from an observed range ``[r_min, r_max]``, widened to contain 0 so that 0 is
exactly representable::

    S = (r_max - r_min) / (q_max - q_min)
    Z = clamp(round(q_min - r_min / S), q_min, q_max)

Symmetric parameters (weights) use ``a = max(|r_min|, |r_max|)`` on the restricted range ``[-q_max, q_max]``
(``-127..127`` for int8), so ``S = 2a / (2 q_max) = a / q_max`` and ``Z = 0``. These are exactly the formulas
of ONNX Runtime's quantizer (``onnxruntime.quantization.quant_utils.compute_scale_zp``, which also replaces a
zero range by ``S = 1``) and of its ``DynamicQuantizeLinear`` kernel (uint8, asymmetric, per tensor), so
weights trained here sit on the grid ONNX Runtime uses at export. ``round`` is round-half-to-even, as in ONNX.
"""

from __future__ import annotations

import torch
from torch import Tensor

_TINY = torch.finfo(torch.float32).tiny


def integer_range(bits: int, signed: bool) -> tuple[int, int]:
    """Return ``(q_min, q_max)`` of a ``bits``-wide integer: ``[-2^(b-1), 2^(b-1)-1]`` or ``[0, 2^b - 1]``.

    Args:
        bits: Width in bits, 2 to 16.
        signed: Two's-complement signed range if ``True``, unsigned otherwise.
    """
    if not 2 <= bits <= 16:
        raise ValueError(f"bits={bits} is outside the supported 2..16; use 8 for ONNX Runtime int8 kernels.")
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def affine_qparams(min_val: Tensor, max_val: Tensor, qmin: int, qmax: int) -> tuple[Tensor, Tensor]:
    """Asymmetric scale and zero point for the range ``[min_val, max_val]`` (per tensor or per channel).

    ``S = (max(r_max, 0) - min(r_min, 0)) / (q_max - q_min)``, ``Z = clamp(round(q_min - min(r_min, 0) / S),
    q_min, q_max)``; a zero range gives ``S = 1, Z = 0`` (as ONNX Runtime does). Computed in float64, returned
    as a float32 scale and an int32 zero point of ``min_val``'s shape.

    Args:
        min_val: Observed minimum (a scalar tensor, or one value per channel).
        max_val: Observed maximum, same shape as ``min_val``.
        qmin: Smallest integer code.
        qmax: Largest integer code.
    """
    _check_range(qmin, qmax)
    lo = torch.clamp(min_val.detach().double(), max=0.0)
    hi = torch.clamp(max_val.detach().double(), min=0.0)
    scale = (hi - lo) / float(qmax - qmin)
    degenerate = scale < _TINY
    scale = torch.where(degenerate, torch.ones_like(scale), scale)
    zero_point = torch.clamp(torch.round(qmin - lo / scale), qmin, qmax)
    zero_point = torch.where(degenerate, torch.zeros_like(zero_point), zero_point)
    return scale.float(), zero_point.to(torch.int32)


def dynamic_qparams(x: Tensor, qmin: int, qmax: int) -> tuple[Tensor, Tensor]:
    """Per-tensor scale and zero point of ``x``'s own range, as ONNX Runtime's ``DynamicQuantizeLinear`` kernel.

    The formula of :func:`affine_qparams`, but in float32 arithmetic as the kernel does it
    (``S = (max - min) / (q_max - q_min)``, ``Z = round_half_even(clamp(q_min - min / S, q_min, q_max))`` on
    floats): a float64 computation lands one ulp away now and then, which moves a rounding boundary of the
    input codes (measured on a tiny CNN: 6e-4 in the logits of ORT's ``ConvInteger`` model). A zero range
    gives ``S = 1, Z = 0``.

    Args:
        x: The tensor to be quantized.
        qmin: Smallest integer code.
        qmax: Largest integer code.
    """
    _check_range(qmin, qmax)
    lo, hi = torch.aminmax(x.detach().float())
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
    scale = (hi - lo) / float(qmax - qmin)
    degenerate = scale < _TINY
    scale = torch.where(degenerate, torch.ones_like(scale), scale)
    zero_point = torch.round(torch.clamp(qmin - lo / scale, qmin, qmax))
    return scale, torch.where(degenerate, torch.zeros_like(zero_point), zero_point).to(torch.int32)


def symmetric_qparams(min_val: Tensor, max_val: Tensor, qmax: int) -> tuple[Tensor, Tensor]:
    """Symmetric scale ``S = max(|r_min|, |r_max|) / q_max`` and zero point ``Z = 0``.

    This is ONNX Runtime's weight formula for signed types (range ``[-q_max, q_max]``, ``reduce_range=False``);
    a zero range (e.g. a fully pruned output row) gives ``S = 1``.

    Args:
        min_val: Observed minimum (a scalar tensor, or one value per channel).
        max_val: Observed maximum, same shape as ``min_val``.
        qmax: Largest positive code, e.g. 127 for int8.
    """
    if qmax <= 0:
        raise ValueError(f"qmax={qmax} must be positive for symmetric quantization.")
    absmax = torch.maximum(min_val.detach().double().abs(), max_val.detach().double().abs())
    scale = 2.0 * absmax / float(2 * qmax)
    scale = torch.where(scale < _TINY, torch.ones_like(scale), scale)
    return scale.float(), torch.zeros(scale.shape, dtype=torch.int32, device=scale.device)


def quantize(x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int, axis: int | None = None) -> Tensor:
    """Integer codes ``q = clamp(round(x / S) + Z, q_min, q_max)`` (as a float tensor holding integers).

    Args:
        x: Real values.
        scale: ``S``, a scalar tensor or one value per slice of ``x`` along ``axis``.
        zero_point: ``Z``, same shape as ``scale``.
        qmin: Smallest integer code.
        qmax: Largest integer code.
        axis: Channel axis of ``x`` for per-channel parameters; ``None`` for per tensor.
    """
    scale, zero_point = _broadcast(scale, x, axis), _broadcast(zero_point, x, axis)
    return torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax)


def dequantize(q: Tensor, scale: Tensor, zero_point: Tensor, axis: int | None = None) -> Tensor:
    """Real values ``r = S * (q - Z)``; arguments as in :func:`quantize`."""
    return (q.float() - _broadcast(zero_point, q, axis)) * _broadcast(scale, q, axis)


def fake_quantize(
    x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int, axis: int | None = None
) -> Tensor:
    """``dequantize(quantize(x))`` with a straight-through gradient (Bengio et al., 2013).

    Forward equals ``S * (clamp(round(x / S) + Z, q_min, q_max) - Z)``; backward passes ``dL/dx`` unchanged
    where ``x`` falls inside the representable range and zero where it is clamped. Uses
    ``torch.fake_quantize_per_tensor_affine`` / ``torch.fake_quantize_per_channel_affine`` (not the deprecated
    ``torch.ao.quantization`` modules). ``scale`` and ``zero_point`` receive no gradient.

    Args:
        x: Real values.
        scale: ``S`` (float32), a scalar tensor or a vector of ``x.shape[axis]`` values.
        zero_point: ``Z`` (int32), same shape as ``scale``.
        qmin: Smallest integer code.
        qmax: Largest integer code.
        axis: Channel axis for per-channel parameters; ``None`` for per tensor.
    """
    scale = scale.detach().float()
    zero_point = zero_point.detach().to(torch.int32)
    if axis is None:
        return torch.fake_quantize_per_tensor_affine(x, scale.reshape(()), zero_point.reshape(()), qmin, qmax)
    return torch.fake_quantize_per_channel_affine(x, scale, zero_point, axis, qmin, qmax)


def fake_quantize_dynamic(x: Tensor, qmin: int, qmax: int) -> Tensor:
    """``x`` on the grid of its own range, exactly as ONNX Runtime's ``DynamicQuantizeLinear`` rounds it.

    ``S, Z`` from :func:`dynamic_qparams`; codes ``q = clamp(round(x / S) + Z, q_min, q_max)`` with a float32
    *division* as the kernel does (``torch.fake_quantize_per_tensor_affine`` multiplies by ``1 / S``, which is
    one ulp off now and then); forward ``S (q - Z)``. Gradient: straight through (1 everywhere; the range is
    ``x``'s own, so nothing is clamped).

    Args:
        x: Real values.
        qmin: Smallest integer code.
        qmax: Largest integer code.
    """
    scale, zero_point = dynamic_qparams(x, qmin, qmax)
    codes = torch.clamp(torch.round(x.detach().float() / scale) + zero_point, qmin, qmax)
    values = ((codes - zero_point) * scale).to(x.dtype)
    return x + (values - x).detach()


def blockwise_int4(weight: Tensor, block_size: int) -> Tensor:
    """Dequantized 4-bit symmetric blocks along the last axis, as ORT's ``GatherBlockQuantized`` stores a table.

    Each block of ``block_size`` consecutive values (the last block may be shorter) gets ``S = m / -8`` with
    ``m`` the block's value of largest magnitude (the maximum when ``|max| > |min|``, else the minimum), codes
    ``q = clamp(round(w / S), -8, 7)`` (0 where ``S = 0``) and values ``S q``: exactly
    ``onnxruntime.quantization.matmul_nbits_quantizer.DefaultWeightOnlyQuantizer.quant_slice_symmetric``.

    Args:
        weight: A 2-D table (rows x hidden), quantized along the hidden axis.
        block_size: Values per block.
    """
    w = weight.detach().float()
    out = torch.empty_like(w)
    for start in range(0, w.shape[-1], block_size):
        block = w[..., start : start + block_size]
        hi, lo = block.amax(-1, keepdim=True), block.amin(-1, keepdim=True)
        scale = torch.where(hi.abs() > lo.abs(), hi, lo) / -8.0
        codes = torch.where(scale == 0, torch.zeros_like(block), block / scale).round().clamp(-8, 7)
        out[..., start : start + block_size] = codes * scale
    return out


def _broadcast(value: Tensor, like: Tensor, axis: int | None) -> Tensor:
    if axis is None or value.dim() == 0:
        return value
    shape = [1] * like.dim()
    shape[axis] = -1
    return value.reshape(shape)


def _check_range(qmin: int, qmax: int) -> None:
    if not qmin <= 0 <= qmax or qmin == qmax:
        raise ValueError(f"integer range [{qmin}, {qmax}] must contain 0 and more than one code.")
