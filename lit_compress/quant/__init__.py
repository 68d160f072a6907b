"""Quantization-aware training: pure quantization math, fake-quantized Linears and Conv2ds, the callback, and
export."""

from lit_compress.quant.callback import QuantizationAwareTraining, quantization_metrics
from lit_compress.quant.config import ActivationQuantConfig, QuantizationSchedule, WeightQuantConfig
from lit_compress.quant.export import (
    dynamic_int8_reference,
    export_dynamic_int8,
    export_qdq_onnx,
    ort_dynamic_scheme,
    strip_fake_quant,
)
from lit_compress.quant.fake_quant import (
    FakeQuantized,
    FakeQuantizedConv2d,
    FakeQuantizedLinear,
    default_filter,
    fake_quantized_modules,
    prepare_qat,
    regex_filter,
    set_quantization_state,
)
from lit_compress.quant.fold import FoldedBatchNorm2d, fold_batchnorm
from lit_compress.quant.observers import RangeObserver
from lit_compress.quant.qdq import QDQConv2d, QDQEmbedding, QDQLinear, convert_to_qdq
from lit_compress.quant.targets import TARGETS, CpuFeatures, Int8Target, cpu_features, detect_target, resolve_target

__all__ = [
    "TARGETS",
    "ActivationQuantConfig",
    "CpuFeatures",
    "Int8Target",
    "FakeQuantized",
    "FakeQuantizedConv2d",
    "FakeQuantizedLinear",
    "FoldedBatchNorm2d",
    "QDQConv2d",
    "QDQEmbedding",
    "QDQLinear",
    "QuantizationAwareTraining",
    "QuantizationSchedule",
    "RangeObserver",
    "WeightQuantConfig",
    "convert_to_qdq",
    "cpu_features",
    "default_filter",
    "detect_target",
    "dynamic_int8_reference",
    "export_dynamic_int8",
    "export_qdq_onnx",
    "fake_quantized_modules",
    "fold_batchnorm",
    "ort_dynamic_scheme",
    "prepare_qat",
    "quantization_metrics",
    "regex_filter",
    "resolve_target",
    "set_quantization_state",
    "strip_fake_quant",
]
