"""The pure quantization math against hand computations and against ONNX Runtime's own formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lit_compress.quant.functional import (
    affine_qparams,
    dequantize,
    fake_quantize,
    integer_range,
    quantize,
    symmetric_qparams,
)


def test_integer_range() -> None:
    assert integer_range(8, signed=True) == (-128, 127)
    assert integer_range(8, signed=False) == (0, 255)
    assert integer_range(4, signed=True) == (-8, 7)
    with pytest.raises(ValueError, match="outside the supported"):
        integer_range(1, signed=True)


def test_affine_qparams_hand_computed() -> None:
    # [-1, 3] on uint8: S = 4 / 255, Z = round(0 - (-1) / S) = round(63.75) = 64
    scale, zp = affine_qparams(torch.tensor(-1.0), torch.tensor(3.0), 0, 255)
    assert scale.item() == pytest.approx(4 / 255, rel=1e-7)
    assert zp.item() == 64 and zp.dtype == torch.int32
    # the range is widened to contain 0: [1, 3] -> [0, 3], Z = 0
    scale, zp = affine_qparams(torch.tensor(1.0), torch.tensor(3.0), 0, 255)
    assert scale.item() == pytest.approx(3 / 255, rel=1e-7) and zp.item() == 0
    # int8: [-2, 1] -> S = 3 / 255, Z = round(-128 + 2 / S) = round(42) = 42
    scale, zp = affine_qparams(torch.tensor(-2.0), torch.tensor(1.0), -128, 127)
    assert scale.item() == pytest.approx(3 / 255, rel=1e-7) and zp.item() == 42
    # an empty range does not divide by zero: S = 1, Z = 0 (ONNX Runtime's convention)
    scale, zp = affine_qparams(torch.tensor(0.0), torch.tensor(0.0), 0, 255)
    assert scale.item() == 1.0 and zp.item() == 0


def test_symmetric_qparams_hand_computed_per_channel() -> None:
    lo, hi = torch.tensor([-0.5, -0.1, 0.0]), torch.tensor([0.3, 0.2, 0.0])
    scale, zp = symmetric_qparams(lo, hi, 127)
    assert torch.allclose(scale, torch.tensor([0.5 / 127, 0.2 / 127, 1.0]))
    assert zp.tolist() == [0, 0, 0]


def test_quantize_dequantize_hand_computed() -> None:
    x = torch.tensor([-1.0, 0.0, 0.5, 3.0, 10.0, -5.0])
    scale, zp = torch.tensor(0.5), torch.tensor(10)
    q = quantize(x, scale, zp, 0, 20)
    # round(x / 0.5) + 10 = [8, 10, 11, 16, 30 -> 20, 0 -> 0]
    assert q.tolist() == [8, 10, 11, 16, 20, 0]
    assert dequantize(q, scale, zp).tolist() == [-1.0, 0.0, 0.5, 3.0, 5.0, -5.0]
    # round half to even, as ONNX QuantizeLinear: 0.25 / 0.5 = 0.5 -> 0, 0.75 / 0.5 = 1.5 -> 2
    assert quantize(torch.tensor([0.25, 0.75]), scale, torch.tensor(0), -128, 127).tolist() == [0, 2]


def test_fake_quantize_equals_dequantize_of_quantize() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=gen) * 3
    scale, zp = affine_qparams(torch.tensor(-2.0), torch.tensor(2.5), 0, 255)
    expected = dequantize(quantize(x, scale, zp, 0, 255), scale, zp)
    assert torch.allclose(fake_quantize(x, scale, zp, 0, 255), expected, atol=1e-6)
    w_scale, w_zp = symmetric_qparams(*torch.aminmax(x, dim=1), 127)
    expected = dequantize(quantize(x, w_scale, w_zp, -128, 127, axis=0), w_scale, w_zp, axis=0)
    assert torch.allclose(fake_quantize(x, w_scale, w_zp, -128, 127, axis=0), expected, atol=1e-6)


def test_straight_through_gradient() -> None:
    x = torch.tensor([-3.0, -0.4, 0.0, 0.26, 1.9, 4.0], requires_grad=True)
    scale, zp = torch.tensor(1 / 64), torch.tensor(128)  # representable: [-2, 1.984]
    y = fake_quantize(x, scale, zp, 0, 255)
    y.backward(torch.arange(1.0, 7.0))
    # identity inside the range, zero where clamped
    assert x.grad is not None and x.grad.tolist() == [0.0, 2.0, 3.0, 4.0, 5.0, 0.0]
    w = torch.randn(4, 3, requires_grad=True)
    w_scale, w_zp = symmetric_qparams(*torch.aminmax(w.detach(), dim=1), 127)
    fake_quantize(w, w_scale, w_zp, -128, 127, axis=0).sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))  # symmetric max-abs range never clamps


@pytest.mark.parametrize("reduce_range", [False, True])
def test_weight_qparams_match_onnxruntime(reduce_range: bool) -> None:
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import quantize_data

    from lit_compress.quant import FakeQuantizedLinear, WeightQuantConfig

    gen = torch.Generator().manual_seed(1)
    linear = torch.nn.Linear(24, 16)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(16, 24, generator=gen) * 0.05)
    layer = FakeQuantizedLinear.from_module(linear, WeightQuantConfig(reduce_range=reduce_range))
    scale, _ = layer.weight_qparams()
    w = linear.weight.detach()
    for row in range(w.shape[0]):
        ort_zp, ort_scale, ort_q = quantize_data(w[row].numpy(), TensorProto.INT8, True, reduce_range)
        assert float(ort_scale) == scale[row].item() and int(ort_zp) == 0
        ours = quantize(w[row], scale[row], torch.tensor(0), -128, 127)
        assert np.array_equal(ours.numpy().astype(np.int8), ort_q)


def test_activation_qparams_match_onnxruntime_uint8() -> None:
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import compute_data_quant_params

    x = np.array([-0.7, 0.1, 2.3, 1.1], dtype=np.float32)
    ort_zp, ort_scale = compute_data_quant_params(x, TensorProto.UINT8, symmetric=False)
    scale, zp = affine_qparams(torch.tensor(-0.7), torch.tensor(2.3), 0, 255)
    assert float(ort_scale) == scale.item() and int(ort_zp) == zp.item()
