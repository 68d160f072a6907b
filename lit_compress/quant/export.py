"""Convert a QAT model for deployment: unwrap for ORT dynamic int8, or freeze into real Q/DQ ONNX.

Two routes, both separate from training (``prepare`` happens in the callback, ``convert`` here):

1. Dynamic activation scheme -> :func:`strip_fake_quant` gives back plain fp32 Linears and Conv2ds; ONNX
   Runtime's ``quantize_dynamic`` with :func:`ort_dynamic_scheme` then re-derives exactly the weight grid QAT
   trained on (same symmetric ``S = max|w| / q_max`` per channel or per tensor, ``q_max = 127``, or 64 with
   the ``reduce_range`` of targets whose kernel saturates, see :mod:`lit_compress.quant.targets`; convs per
   tensor, as ``ConvInteger`` takes one weight scale, and BatchNorm folded first, see
   :mod:`lit_compress.quant.fold`) and quantizes inputs at run time with ``DynamicQuantizeLinear``, as the
   fake quantizer did. :func:`export_dynamic_int8`.
2. Static activation scheme -> :func:`convert_to_qdq` swaps each fake-quantized Linear for a
   :class:`QDQLinear` (each conv for a :class:`QDQConv2d`) holding int8 weights and the frozen input (and conv
   output) scales; its forward is written with the ``quantized_decomposed`` ops, which the dynamo ONNX exporter
   translates to ``QuantizeLinear`` / ``DequantizeLinear`` and ONNX Runtime fuses into integer kernels
   (``MatMulIntegerToFloat``, ``QLinearConv``). :func:`export_qdq_onnx` (the modules live in
   :mod:`lit_compress.quant.qdq`).

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
from lit_compress.quant.fold import fold_batchnorm
from lit_compress.quant.qdq import convert_to_qdq

if TYPE_CHECKING:
    from lit_compress.export.parity import Int8Gate


def strip_fake_quant(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Replace every fake-quantized layer by its plain ``nn.Linear`` / ``nn.Conv2d`` (``to_module``), exactly.

    Args:
        model: A model prepared for QAT.
        inplace: Modify ``model`` itself instead of a deep copy.
    """
    out = model if inplace else copy.deepcopy(model)
    for fqn, module in list(fake_quantized_modules(out)):
        out.set_submodule(fqn, module.to_module())
    return out


def dynamic_int8_reference(model: nn.Module, per_channel: bool, reduce_range: bool, embeddings: str = "fp32",
                           block_size: int = 128, convs: bool = False,
                           example_inputs: Mapping[str, Tensor] | None = None) -> nn.Module:  # fmt: skip
    """A fake-quantized copy of ``model`` that computes what ORT's dynamic int8 quantization of it runs.

    Every ``nn.Linear`` (ORT quantizes every MatMul/Gemm with a constant weight) gets int8 symmetric weights
    on ORT's grid and per-tensor uint8 inputs from their own range (``DynamicQuantizeLinear``). With ``convs``
    (``"Conv"`` in the scheme's ``op_types``) every ``nn.Conv2d`` does too, as ORT's ``ConvInteger``
    computes it: int8 symmetric weights ``S = max|W| / q_max`` *per tensor* whatever ``per_channel`` says (ORT's
    dynamic Conv quantizer has no per-channel path: ``ConvInteger`` multiplies its int32 output by one product
    of scalars ``S_x S_w``), ``q_max`` 64 with ``reduce_range``, and a uint8 input from its own range, padded
    with its zero point (a real 0). The exporter folds eval-mode BatchNorm into the conv before ORT quantizes
    it, so the reference folds it first too (:func:`~lit_compress.quant.fold.fold_batchnorm`, which needs
    ``example_inputs`` to find the conv -> BN pairs); with that the reference equals ORT up to float rounding
    (measured max |Δlogit| 3e-8 on a tiny CNN; 1.6e-3 without the fold). Embedding tables that the forward
    looks up (ORT's ``Gather``; :func:`~lit_compress.models.surgery.lookup_tables`) get the storage ORT gives
    them: ``"int4"`` blocks (:func:`~lit_compress.quant.functional.blockwise_int4`), ``"int8"`` per tensor, or
    ``"fp32"``.

    Args:
        model: The fp32 model that was exported and quantized (not modified).
        per_channel: ORT's ``per_channel`` (Linears only; see above).
        reduce_range: ORT's ``reduce_range`` (7-bit weights).
        embeddings: How the artifact stores embedding tables (``OrtQuantization.embedding_storage``).
        block_size: Values per 4-bit block (capped as the exporter caps it: at the hidden size's power of two).
        convs: ORT quantized ``Conv`` too (``"Conv" in OrtQuantization.op_types``).
        example_inputs: A batch of the model's inputs (e.g. ``{"pixel_values": ...}``); needed with ``convs``
            when the model has BatchNorm2d layers.

    Raises:
        ValueError: ``convs`` on a model with BatchNorm2d and no ``example_inputs``.
    """
    import torch

    from lit_compress.quant.functional import blockwise_int4, fake_quantize, symmetric_qparams

    out = copy.deepcopy(model)
    if convs and any(type(m) is nn.BatchNorm2d for m in out.modules()):
        if example_inputs is None:
            raise ValueError(
                "dynamic_int8_reference(convs=True) on a model with BatchNorm2d needs example_inputs (a batch, e.g. "
                "{'pixel_values': ...}) to fold BatchNorm into the convs as the ONNX exporter does."
            )
        fold_batchnorm(out, example_inputs, inplace=True)
    weight = WeightQuantConfig(granularity="per_channel" if per_channel else "per_tensor", reduce_range=reduce_range)
    conv_weight = WeightQuantConfig(granularity="per_tensor", reduce_range=reduce_range)
    types = (nn.Linear, nn.Conv2d) if convs else (nn.Linear,)
    prepare_qat(out, weight, ActivationQuantConfig(scheme="dynamic"), filter_fn=regex_filter("."), module_types=types,
                conv_weight_config=conv_weight)  # fmt: skip
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

    ``op_types`` is ``MatMul``, plus ``Conv`` when ``model`` has fake-quantized convolutions (ORT then runs
    them as ``ConvInteger``, int8 weights per tensor) and ``Gather`` with ``quantize_embeddings``.

    Args:
        model: A model prepared with the dynamic activation scheme and 8-bit weights.
        quantize_embeddings: Also quantize embedding tables (smaller file; not simulated during QAT).

    Raises:
        ValueError: Static scheme, weight bits other than 8, mixed configurations, or per-channel conv weights.
    """
    from lit_compress.export.int8 import OrtQuantization

    layers = [m for _, m in fake_quantized_modules(model)]
    convs = [m for m in layers if isinstance(m, nn.Conv2d)]
    configs = {(m.weight_config.bits, m.weight_config.reduce_range, m.activation_config.scheme) for m in layers}
    granularities = {m.weight_config.granularity for m in layers if not isinstance(m, nn.Conv2d)} or {"per_tensor"}
    if len(configs) != 1 or len(granularities) != 1:
        raise ValueError(f"expected one QAT configuration across layers, found {configs} and {granularities}.")
    (bits, reduce_range, scheme), granularity = next(iter(configs)), next(iter(granularities))
    if scheme != "dynamic" or bits != 8:
        raise ValueError(
            f"ORT dynamic int8 reproduces QAT only for 8-bit weights and the dynamic activation scheme (got "
            f"bits={bits}, scheme={scheme!r}); export the static scheme with export_qdq_onnx."
        )
    if any(m.weight_config.axis is not None for m in convs):
        raise ValueError(
            "ORT dynamic int8 runs Conv as ConvInteger with one weight scale per tensor, but this model's convs "
            "are fake-quantized per channel; train them with per-tensor weights (QuantizationAwareTraining's "
            "conv_weight, the dynamic scheme's default) or export the static scheme with export_qdq_onnx."
        )
    op_types = ["MatMul", *(["Conv"] if convs else []), *(["Gather"] if quantize_embeddings else [])]
    return OrtQuantization(
        per_channel=granularity == "per_channel", quantize_embeddings=quantize_embeddings,
        reduce_range=reduce_range, op_types=op_types,
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

    ORT quantizes every ``MatMul`` with a constant weight (and, when the model has fake-quantized convs, every
    ``Conv``), including layers that were not fake-quantized (e.g. the classifier under the default
    encoder-only filter); fake-quantize all of them (``filter_fn="."``) for an artifact that computes exactly
    what QAT trained. For CNNs with BatchNorm train with ``QuantizationAwareTraining(fold_batchnorm=True)``: the
    exporter folds BN into the conv weights, which ORT then puts on a different per-tensor grid.

    Args:
        model: A model prepared with the dynamic activation scheme (not modified).
        fp32_path: Where the intermediate fp32 ONNX file goes.
        int8_path: Destination of the int8 artifact.
        sample_inputs: Example ``input_ids`` / ``attention_mask`` (texts) or ``pixel_values`` (images) for
            export and parity.
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
        sample_inputs: Example ``input_ids`` / ``attention_mask`` (texts) or ``pixel_values`` (images) for
            export and parity.
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
