"""Which kernels ONNX Runtime really runs: read the optimized graph it writes out.

A quantized file can still run in float: a ``DequantizeLinear`` feeding a float ``MatMul`` stores int8 but
computes fp32. ORT writes the graph it will execute when ``SessionOptions.optimized_model_filepath`` is set;
counting its op types tells whether integer matmul or convolution kernels are used (``ConvInteger`` and
``QLinearConv`` for image models count as int8 compute, as the matmul kernels do). An "int8" artifact that runs none is
flagged (``runs_int8: false`` plus a warning), never silently accepted.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Literal

#: Ops whose matrix products or convolutions run on 8-bit (or fewer) integers.
INT8_COMPUTE_OPS = frozenset(
    {
        "DynamicQuantizeMatMul",
        "MatMulInteger",
        "MatMulIntegerToFloat",
        "QLinearMatMul",
        "QGemm",
        "QAttention",
        "QLinearConv",
        "ConvInteger",
        "DynamicQuantizeLSTM",
        "MatMulNBits",
        "QOrderedMatMul",
    }
)
#: Other ops that touch quantized tensors (quantize/dequantize, quantized elementwise, quantized lookups).
INT8_SUPPORT_OPS = frozenset(
    {
        "DynamicQuantizeLinear",
        "QuantizeLinear",
        "DequantizeLinear",
        "QLinearAdd",
        "QLinearMul",
        "QLinearSoftmax",
        "QLinearWhere",
        "QLinearConcat",
        "QLinearSigmoid",
        "QLinearLeakyRelu",
        "QLinearReduceMean",
        "QLinearGlobalAveragePool",
        "QEmbedLayerNormalization",
        "GatherBlockQuantized",
    }
)

OptimizationLevel = Literal["disable", "basic", "extended", "all"]


class NoInt8KernelWarning(UserWarning):
    """An artifact meant to be int8 runs no integer matmul or convolution kernel."""


def graph_optimization_level(level: OptimizationLevel) -> Any:
    """Map ``"disable" | "basic" | "extended" | "all"`` to ``onnxruntime.GraphOptimizationLevel``."""
    import onnxruntime as ort

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if level not in levels:
        raise ValueError(f"graph optimization level {level!r} is not one of {sorted(levels)}.")
    return levels[level]


def optimized_op_counts(path: str | os.PathLike[str], level: OptimizationLevel = "all") -> Counter[str]:
    """Op types (with counts) of the graph ORT executes for ``path`` on the CPU provider."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="lc-ort-opt-") as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = graph_optimization_level(level)
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        options.log_severity_level = 3  # the "hardware specific optimizations" notice is expected here
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        proto = onnx.load(options.optimized_model_filepath)
    return Counter(node.op_type for node in proto.graph.node)


def kernel_report(
    path: str | os.PathLike[str], *, expect_int8: bool, level: OptimizationLevel = "all"
) -> dict[str, Any]:
    """Describe the kernels ORT runs for ``path`` and flag an int8 artifact that computes in float.

    Returns:
        ``{"optimization_level", "int8_compute": {op: n}, "int8_support": {op: n}, "float_matmul": n,
        "float_conv": n, "runs_int8": bool, "expected_int8": bool, "warning": str | None, "ops": {op: n}}``
        (``ops``: every op type of the optimized graph; ``float_conv``: ``Conv`` and ORT's fused ``FusedConv``
        left in float).
    """
    ops = optimized_op_counts(path, level)
    compute = {op: n for op, n in sorted(ops.items()) if op in INT8_COMPUTE_OPS}
    support = {op: n for op, n in sorted(ops.items()) if op in INT8_SUPPORT_OPS}
    float_matmul = sum(n for op, n in ops.items() if op in ("MatMul", "FusedMatMul", "Gemm"))
    float_conv = sum(n for op, n in ops.items() if op in ("Conv", "FusedConv", "NhwcFusedConv"))
    runs_int8 = bool(compute)
    warning = None
    if expect_int8 and not runs_int8:
        warning = (
            f"{path} is meant to be int8 but ONNX Runtime runs no integer matmul or conv kernel on it "
            f"({float_matmul} float MatMul/Gemm, {float_conv} float Conv, int8 helper ops {support or 'none'}): "
            f"it stores int8 and computes fp32."
        )
        warnings.warn(warning, NoInt8KernelWarning, stacklevel=2)
    return {
        "optimization_level": level,
        "int8_compute": compute,
        "int8_support": support,
        "float_matmul": float_matmul,
        "float_conv": float_conv,
        "runs_int8": runs_int8,
        "expected_int8": expect_int8,
        "warning": warning,
        "ops": dict(sorted(ops.items())),
    }
