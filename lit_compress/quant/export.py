"""Convert a QAT model for deployment: unwrap for ORT dynamic int8, or freeze into real Q/DQ ONNX.

Two routes, both separate from training (``prepare`` happens in the callback, ``convert`` here):

1. Dynamic activation scheme -> :func:`strip_fake_quant` gives back plain fp32 Linears; ONNX Runtime's
   ``quantize_dynamic`` with :func:`ort_dynamic_scheme` then re-derives exactly the weight grid QAT trained on
   (same symmetric ``S = max|w| / q_max`` per channel or per tensor, ``q_max = 127``, or 64 with the
   ``reduce_range`` of targets whose kernel saturates, see :mod:`lit_compress.quant.targets`) and quantizes
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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from lit_compress.quant.config import ActivationQuantConfig, WeightQuantConfig
from lit_compress.quant.fake_quant import fake_quantized_modules, prepare_qat, regex_filter
from lit_compress.quant.qdq import convert_to_qdq

if TYPE_CHECKING:
    from lit_compress.export.parity import Int8Gate


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


def dynamic_int8_reference(model: nn.Module, per_channel: bool, reduce_range: bool, embeddings: str = "fp32",
                           block_size: int = 128) -> nn.Module:  # fmt: skip
    """A fake-quantized copy of ``model`` that computes what ORT's dynamic int8 quantization of it runs.

    Every ``nn.Linear`` (ORT quantizes every MatMul/Gemm with a constant weight) gets int8 symmetric weights
    on ORT's grid and per-tensor uint8 inputs from their own range (``DynamicQuantizeLinear``). Embedding
    tables that the forward looks up (ORT's ``Gather``; :func:`~lit_compress.models.surgery.lookup_tables`) get
    the storage ORT gives them: ``"int4"`` blocks
    (:func:`~lit_compress.quant.functional.blockwise_int4`), ``"int8"`` per tensor, or ``"fp32"``.

    Args:
        model: The fp32 model that was exported and quantized (not modified).
        per_channel: ORT's ``per_channel``.
        reduce_range: ORT's ``reduce_range`` (7-bit weights).
        embeddings: How the artifact stores embedding tables (``OrtQuantization.embedding_storage``).
        block_size: Values per 4-bit block (capped as the exporter caps it: at the hidden size's power of two).
    """
    import torch

    from lit_compress.quant.functional import blockwise_int4, fake_quantize, symmetric_qparams

    out = copy.deepcopy(model)
    weight = WeightQuantConfig(granularity="per_channel" if per_channel else "per_tensor", reduce_range=reduce_range)
    prepare_qat(out, weight, ActivationQuantConfig(scheme="dynamic"), filter_fn=regex_filter("."))
    from lit_compress.models.surgery import lookup_tables

    tables = [] if embeddings == "fp32" else [out.get_submodule(n) for n in lookup_tables(out)]
    with torch.no_grad():
        for module in tables:
            if type(module) is not nn.Embedding:
                continue
            table = module.weight
            if embeddings == "int4":
                block = max(16, min(block_size, 1 << (table.shape[1].bit_length() - 1)))
                table.copy_(blockwise_int4(table, block))
            else:
                scale, zero = symmetric_qparams(*torch.aminmax(table), 127)
                table.copy_(fake_quantize(table, scale, zero, -128, 127))
    return out.eval()


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
    parity_inputs: Sequence[Mapping[str, Tensor]] | None = None,
    int8_gate: Int8Gate | None = None,
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
        parity_inputs: Inputs of both gates (fp32: ``max |Δlogit| <= 1e-4``; int8 against the QAT model:
            :class:`~lit_compress.export.parity.Int8Gate`); default batches derived from ``sample_inputs``.
        int8_gate: Bounds of the int8 gate (default :class:`~lit_compress.export.parity.Int8Gate`).

    Returns:
        ``int8_path`` (removed again if the int8 gate fails).

    Raises:
        Int8GateError: ORT's int8 model does not compute what the QAT model computes.
    """
    from lit_compress.export.int8 import quantize_ort_dynamic
    from lit_compress.export.onnx import LogitsOnly, export_onnx
    from lit_compress.export.parity import Int8Gate, check_parity, derived_parity_inputs

    scheme = ort_dynamic_scheme(model, quantize_embeddings)
    batches = list(parity_inputs) if parity_inputs is not None else derived_parity_inputs(dict(sample_inputs))
    export_onnx(strip_fake_quant(model), fp32_path, sample_inputs, parity_inputs=batches)
    path = quantize_ort_dynamic(fp32_path, int8_path, scheme)
    was_training = model.training
    try:
        check_parity(LogitsOnly(model).eval(), path, batches, int8_gate=int8_gate or Int8Gate(),
                     input_names=list(batches[0]), what=f"ORT dynamic int8 {Path(path).name}")  # fmt: skip
    except Exception:
        Path(path).unlink(missing_ok=True)
        raise
    finally:
        model.train(was_training)
    return path


def export_qdq_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    sample_inputs: Mapping[str, Tensor],
    quantize_embeddings: bool = False,
    parity_inputs: Sequence[Mapping[str, Tensor]] | None = None,
    int8_gate: Int8Gate | None = None,
) -> Path:
    """Static-scheme QAT model -> :func:`~lit_compress.quant.qdq.convert_to_qdq` -> Q/DQ ONNX, parity-gated.

    The gate compares ONNX Runtime's integer kernels with the PyTorch Q/DQ module. They share codes and scales,
    but ORT fuses the float ops around them (LayerNorm, GELU, attention) with slightly different rounding, and
    a value that lands next to a rounding boundary then flips to the neighbouring integer code. Such flips move
    logits by a few hundredths (measured on a 3-layer MiniLM: max 0.06, mean 6e-4 over 445 texts, argmax
    agreement 100%), while export bugs (wrong scale, transposed weight) move them by O(1). Hence the gate is
    :class:`~lit_compress.export.parity.Int8Gate`: argmax agreement and the error in logit steps, not ``atol``.

    Args:
        model: A trained (or calibrated) static-scheme QAT model (not modified).
        path: Destination ``.onnx`` file (written atomically after the gate passed).
        sample_inputs: Example ``input_ids`` / ``attention_mask`` for export and parity.
        quantize_embeddings: Store embedding tables as int8 too (:class:`~lit_compress.quant.qdq.QDQEmbedding`).
        parity_inputs: Inputs of the gate: tokenized real texts, at least 256 (default: derived batches).
        int8_gate: Bounds of the gate (default :class:`~lit_compress.export.parity.Int8Gate`).

    Returns:
        ``path``.

    Raises:
        Int8GateError: The artifact fails the gate (nothing is written).
    """
    from lit_compress.export.onnx import export_onnx
    from lit_compress.export.parity import Int8Gate

    qdq = convert_to_qdq(model, quantize_embeddings=quantize_embeddings)
    return export_onnx(qdq, path, sample_inputs, exporter="dynamo", parity_inputs=parity_inputs,
                       int8_gate=int8_gate or Int8Gate())  # fmt: skip
