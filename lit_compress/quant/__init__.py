"""Quantization-aware training: pure quantization math, fake-quantized Linears, the callback, and export."""

from lit_compress.quant.callback import QuantizationAwareTraining, quantization_metrics
from lit_compress.quant.config import ActivationQuantConfig, QuantizationSchedule, WeightQuantConfig
from lit_compress.quant.export import export_dynamic_int8, export_qdq_onnx, ort_dynamic_scheme, strip_fake_quant
from lit_compress.quant.fake_quant import (
    FakeQuantizedLinear,
    default_filter,
    fake_quantized_modules,
    prepare_qat,
    regex_filter,
    set_quantization_state,
)
from lit_compress.quant.observers import RangeObserver
from lit_compress.quant.qdq import QDQEmbedding, QDQLinear, convert_to_qdq

__all__ = [
    "ActivationQuantConfig",
    "FakeQuantizedLinear",
    "QDQEmbedding",
    "QDQLinear",
    "QuantizationAwareTraining",
    "QuantizationSchedule",
    "RangeObserver",
    "WeightQuantConfig",
    "convert_to_qdq",
    "default_filter",
    "export_dynamic_int8",
    "export_qdq_onnx",
    "fake_quantized_modules",
    "ort_dynamic_scheme",
    "prepare_qat",
    "quantization_metrics",
    "regex_filter",
    "set_quantization_state",
    "strip_fake_quant",
]
