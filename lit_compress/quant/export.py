"""Convert a QAT model for deployment: unwrap for ORT dynamic int8, or freeze into real Q/DQ ONNX.

Two routes, both separate from training (``prepare`` happens in the callback, ``convert`` here):

1. Dynamic activation scheme -> :func:`strip_fake_quant` gives back plain fp32 Linears; ONNX Runtime's
   ``quantize_dynamic`` with :func:`ort_dynamic_scheme` then re-derives exactly the weight grid QAT trained on
   (same symmetric ``S = max|w| / 127`` per channel or per tensor, ``reduce_range=False``) and quantizes
   inputs at run time with ``DynamicQuantizeLinear``, as the fake quantizer did. :func:`export_dynamic_int8`.
2. Static activation scheme -> :func:`convert_to_qdq` swaps each fake-quantized Linear for a
   :class:`QDQLinear` holding int8 weights and the frozen input scale; its forward is written with the
   ``quantized_decomposed`` ops, which the dynamo ONNX exporter translates to ``QuantizeLinear`` /
   ``DequantizeLinear`` and ONNX Runtime fuses into integer kernels (``MatMulIntegerToFloat``).
   :func:`export_qdq_onnx` (the modules live in :mod:`lit_compress.quant.qdq`).

Both go through :func:`lit_compress.export.onnx.export_onnx` (parity gate); check the kernels ONNX Runtime
runs with :func:`lit_compress.export.kernels.kernel_report`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from lit_compress.quant.fake_quant import fake_quantized_modules
from lit_compress.quant.qdq import convert_to_qdq


def strip_fake_quant(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Replace every :class:`FakeQuantizedLinear` by its plain ``nn.Linear`` (``to_module``), exactly.

    Args:
        model: A model prepared for QAT.
        inplace: Modify ``model`` itself instead of a deep copy.
    """
    out = model if inplace else copy.deepcopy(model)
    for fqn, module in list(fake_quantized_modules(out)):
        out.set_submodule(fqn, module.to_module())
    return out


def ort_dynamic_scheme(model: nn.Module, quantize_embeddings: bool = False) -> Any:
    """The ``OrtQuantization`` whose weight grid equals the one ``model`` was fake-quantized on.

    Args:
        model: A model prepared with the dynamic activation scheme and 8-bit weights.
        quantize_embeddings: Also quantize embedding tables (smaller file; not simulated during QAT).

    Raises:
        ValueError: Static scheme, weight bits other than 8, or mixed granularities.
    """
    from lit_compress.export.int8 import OrtQuantization

    configs = {(m.weight_config, m.activation_config.scheme) for _, m in fake_quantized_modules(model)}
    if len(configs) != 1:
        raise ValueError(f"expected one QAT configuration across layers, found {len(configs)}: {configs}.")
    weight, scheme = next(iter(configs))
    if scheme != "dynamic" or weight.bits != 8:
        raise ValueError(
            f"ORT dynamic int8 reproduces QAT only for 8-bit weights and the dynamic activation scheme (got "
            f"bits={weight.bits}, scheme={scheme!r}); export the static scheme with export_qdq_onnx."
        )
    op_types = ["MatMul", *(["Gather"] if quantize_embeddings else [])]
    return OrtQuantization(
        per_channel=weight.granularity == "per_channel", quantize_embeddings=quantize_embeddings,
        reduce_range=weight.reduce_range, op_types=op_types,
    )  # fmt: skip


def export_dynamic_int8(
    model: nn.Module,
    fp32_path: str | os.PathLike[str],
    int8_path: str | os.PathLike[str],
    sample_inputs: Mapping[str, Tensor],
    quantize_embeddings: bool = False,
) -> Path:
    """Dynamic-scheme QAT model -> fp32 ONNX (parity-gated) -> ORT dynamic int8 on the trained grid.

    ORT quantizes every ``MatMul`` with a constant weight, including Linears that were not fake-quantized
    (e.g. the classifier under the default encoder-only filter); fake-quantize all Linears
    (``filter_fn="."``) for an artifact that computes exactly what QAT trained.

    Args:
        model: A model prepared with the dynamic activation scheme (not modified).
        fp32_path: Where the intermediate fp32 ONNX file goes.
        int8_path: Destination of the int8 artifact.
        sample_inputs: Example ``input_ids`` / ``attention_mask`` for export and parity.
        quantize_embeddings: Also quantize embedding tables (4x smaller file; not simulated during QAT).

    Returns:
        ``int8_path``.
    """
    from lit_compress.export.int8 import quantize_ort_dynamic
    from lit_compress.export.onnx import export_onnx

    scheme = ort_dynamic_scheme(model, quantize_embeddings)
    export_onnx(strip_fake_quant(model), fp32_path, sample_inputs)
    return quantize_ort_dynamic(fp32_path, int8_path, scheme)


def export_qdq_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    sample_inputs: Mapping[str, Tensor],
    quantize_embeddings: bool = False,
    atol: float = 0.1,
) -> Path:
    """Static-scheme QAT model -> :func:`~lit_compress.quant.qdq.convert_to_qdq` -> Q/DQ ONNX, parity-gated.

    The gate compares ONNX Runtime's integer kernels with the PyTorch Q/DQ module. They share codes and scales,
    but ORT fuses the float ops around them (LayerNorm, GELU, attention) with slightly different rounding, and
    a value that lands next to a rounding boundary then flips to the neighbouring integer code. Such flips move
    logits by a few hundredths (measured on a 3-layer MiniLM: max 0.06, mean 6e-4 over 445 texts, argmax
    agreement 100%), while export bugs (wrong scale, transposed weight) move them by O(1); hence ``atol=0.1``.

    Args:
        model: A trained (or calibrated) static-scheme QAT model (not modified).
        path: Destination ``.onnx`` file (written atomically after the gate passed).
        sample_inputs: Example ``input_ids`` / ``attention_mask`` for export and parity.
        quantize_embeddings: Store embedding tables as int8 too (:class:`~lit_compress.quant.qdq.QDQEmbedding`).
        atol: Tolerance of the parity gate on ``max |Δlogit|``.

    Returns:
        ``path``.
    """
    from lit_compress.export.onnx import export_onnx

    qdq = convert_to_qdq(model, quantize_embeddings=quantize_embeddings)
    return export_onnx(qdq, path, sample_inputs, exporter="dynamo", atol=atol)
