"""The convert step of static-scheme QAT: int8 Q/DQ modules that the dynamo ONNX exporter turns into
``QuantizeLinear`` / ``DequantizeLinear`` and ONNX Runtime into integer kernels.

The ``quantized_decomposed`` op *definitions* are registered by importing
``torch.ao.quantization.fx._decomposed`` (torch 2.13 ships them nowhere else, and onnxscript's torch_lib holds
their ONNX translations). They are used here for export only; nothing builds on the deprecated
``torch.ao.quantization`` flows (observers, ``prepare_qat``, ``convert``).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_compress.quant.fake_quant import FakeQuantizedLinear, fake_quantized_modules
from lit_compress.quant.functional import fake_quantize, quantize, symmetric_qparams


def quantized_decomposed_ops() -> Any:
    """``torch.ops.quantized_decomposed``, registering its definitions on first use (export only).

    Found by trial: the ops must be registered before ``torch.onnx.export`` starts (it collects the ONNX
    translations of the ops that exist at that moment), so :class:`QDQLinear` registers them when built.
    """
    import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers the op library)

    return torch.ops.quantized_decomposed


class QDQLinear(nn.Module):
    """Export form of a static-scheme :class:`FakeQuantizedLinear`: ``y = DQ(Q(x)) @ DQ(W_q) + b``.

    ``W_q`` is stored as int8 and *transposed* (``in x out``) so the exported graph is
    ``DequantizeLinear(W_q) -> MatMul`` with no Transpose between, the pattern ONNX Runtime fuses with the
    input's ``QuantizeLinear`` into ``MatMulIntegerToFloat``. Codes and scales are those the fake quantizer
    used, so this module computes what the QAT model computed (up to float rounding).
    """

    qweight: Tensor
    weight_scale: Tensor
    weight_zero_point: Tensor

    def __init__(self, module: FakeQuantizedLinear) -> None:
        super().__init__()
        act = module.activation_config
        qparams = module.input_qparams()
        if act.scheme != "static" or qparams is None:
            raise ValueError(
                "QDQLinear needs a static-scheme FakeQuantizedLinear whose observer has seen data; train (or run "
                "calibration batches in train mode) first, or export the dynamic scheme with export_dynamic_int8."
            )
        if act.bits != 8:
            raise ValueError(f"Q/DQ export needs 8-bit activations, got bits={act.bits}.")
        quantized_decomposed_ops()  # the ONNX exporter builds its op table before tracing: register now
        self.in_features, self.out_features = module.in_features, module.out_features
        self.input_scale, self.input_zero_point = float(qparams[0]), int(qparams[1])
        self.input_dtype = torch.int8 if act.signed else torch.uint8
        self.input_qrange = act.qrange
        self.weight_axis = module.weight_config.axis
        scale, zero_point = module.weight_qparams()
        with torch.no_grad():
            qmin, qmax = module.weight_config.qrange
            fq = fake_quantize(module.weight, scale, zero_point, qmin, qmax, axis=self.weight_axis)
            divisor = scale[:, None] if self.weight_axis == 0 else scale
            codes = torch.round(fq / divisor).to(torch.int8)
        self.register_buffer("qweight", codes.t().contiguous())
        self.register_buffer("weight_scale", scale)
        self.register_buffer("weight_zero_point", zero_point.to(torch.int64))
        self.bias = None if module.bias is None else nn.Parameter(module.bias.detach().clone())

    def dequantized_weight(self) -> Tensor:
        """``DQ(W_q)`` as ``in x out`` float32."""
        ops = quantized_decomposed_ops()
        if self.weight_axis is None:
            return ops.dequantize_per_tensor(self.qweight, float(self.weight_scale), 0, -128, 127, torch.int8)
        return ops.dequantize_per_channel(
            self.qweight, self.weight_scale, self.weight_zero_point, 1, -128, 127, torch.int8
        )

    def forward(self, x: Tensor) -> Tensor:
        ops = quantized_decomposed_ops()
        args = (self.input_scale, self.input_zero_point, *self.input_qrange, self.input_dtype)
        x = ops.dequantize_per_tensor(ops.quantize_per_tensor(x, *args), *args)
        y = torch.matmul(x, self.dequantized_weight())
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"input_scale={self.input_scale:.4g}, input_zero_point={self.input_zero_point}"
        )


class QDQEmbedding(nn.Module):
    """int8 embedding table, symmetric per tensor: ``E[ids] = S * Gather(E_q, ids)`` (dequantize after lookup).

    Same layout as ONNX Runtime's dynamic ``Gather`` quantization: the lookup reads int8 rows and only the
    gathered rows are dequantized, so the file holds 1 byte per table entry (the table dominates a small
    BERT's size). Not simulated during QAT; its error is one rounding of the table, ``|e| <= S / 2``.
    """

    qweight: Tensor

    def __init__(self, embedding: nn.Embedding) -> None:
        super().__init__()
        quantized_decomposed_ops()
        weight = embedding.weight.detach()
        scale, zero_point = symmetric_qparams(*torch.aminmax(weight), 127)
        self.scale = float(scale)
        self.register_buffer("qweight", quantize(weight, scale, zero_point, -128, 127).to(torch.int8))

    def forward(self, ids: Tensor) -> Tensor:
        rows = F.embedding(ids, self.qweight)
        return quantized_decomposed_ops().dequantize_per_tensor(rows, self.scale, 0, -128, 127, torch.int8)


def convert_to_qdq(model: nn.Module, inplace: bool = False, quantize_embeddings: bool = False) -> nn.Module:
    """Replace every static-scheme :class:`FakeQuantizedLinear` by a :class:`QDQLinear` (eval mode).

    Args:
        model: A model prepared for QAT with ``ActivationQuantConfig(scheme="static")`` and trained/calibrated.
        inplace: Modify ``model`` itself instead of a deep copy.
        quantize_embeddings: Also replace every ``nn.Embedding`` the forward looks up by a :class:`QDQEmbedding`
            (int8 table); tables read as weights (DeBERTa's ``rel_embeddings``) stay fp32.

    Raises:
        ValueError: No fake-quantized layer, a dynamic-scheme layer, or an observer without data.
    """
    out = model if inplace else copy.deepcopy(model)
    layers = list(fake_quantized_modules(out))
    if not layers:
        raise ValueError("convert_to_qdq: the model has no FakeQuantizedLinear; prepare it with prepare_qat first.")
    for fqn, module in layers:
        try:
            out.set_submodule(fqn, QDQLinear(module))
        except ValueError as err:
            raise ValueError(f"cannot convert {fqn!r}: {err}") from err
    if quantize_embeddings:
        from lit_compress.models.surgery import lookup_tables

        for fqn in lookup_tables(out):  # only tables the forward looks up (ORT quantizes Gather, not raw weights)
            module = out.get_submodule(fqn)
            if type(module) is nn.Embedding:
                out.set_submodule(fqn, QDQEmbedding(module))
    return out.eval()


