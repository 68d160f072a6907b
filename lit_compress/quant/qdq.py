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

from lit_compress.quant.fake_quant import FakeQuantizedConv2d, FakeQuantizedLinear, fake_quantized_modules
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
    input's ``QuantizeLinear`` into ``MatMulIntegerToFloat``. A 2-D input (a CNN's or ViT's head) is
    multiplied as ``1 x B x in``: ORT turns a 2-D ``MatMul + Add`` into a float ``Gemm`` first otherwise. Codes and scales are those the fake quantizer
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
        self.register_buffer("qweight", _weight_codes(module).t().contiguous())
        self.register_buffer("weight_scale", scale)
        self.register_buffer("weight_zero_point", zero_point.to(torch.int64))
        self.per_tensor_scale = float(scale) if self.weight_axis is None else None
        self.bias = None if module.bias is None else nn.Parameter(module.bias.detach().clone())

    def dequantized_weight(self) -> Tensor:
        """``DQ(W_q)`` as ``in x out`` float32."""
        ops = quantized_decomposed_ops()
        if self.weight_axis is None:  # a Python float: the exporter cannot trace float() of a buffer
            return ops.dequantize_per_tensor(self.qweight, self.per_tensor_scale, 0, -128, 127, torch.int8)
        return ops.dequantize_per_channel(
            self.qweight, self.weight_scale, self.weight_zero_point, 1, -128, 127, torch.int8
        )

    @property
    def weight(self) -> Tensor:
        """``DQ(W_q)`` as ``out x in`` float32, for code that reads a Linear's ``weight``."""
        return self.dequantized_weight().t()

    def forward(self, x: Tensor) -> Tensor:
        ops = quantized_decomposed_ops()
        args = (self.input_scale, self.input_zero_point, *self.input_qrange, self.input_dtype)
        x = ops.dequantize_per_tensor(ops.quantize_per_tensor(x, *args), *args)
        if x.dim() == 2:  # as 1 x B x in: ORT would fuse a 2-D MatMul + Add into a float Gemm before its int8 pass
            y = torch.matmul(x.unsqueeze(0), self.dequantized_weight())
            return (y if self.bias is None else y + self.bias).squeeze(0)
        y = torch.matmul(x, self.dequantized_weight())
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"input_scale={self.input_scale:.4g}, input_zero_point={self.input_zero_point}"
        )


class QDQConv2d(nn.Module):
    """Export form of a static-scheme :class:`FakeQuantizedConv2d`: ``y = DQ(Q(conv(DQ(Q(x)), DQ(W_q)) + DQ(b_q)))``.

    ``W_q``: the fake quantizer's int8 codes (``O x I/g x kh x kw``, per output channel or per tensor);
    ``b_q = round(b / (S_x S_w))`` as int32 with scale ``S_x S_w`` (per channel), zero point 0; the output is
    quantized with the frozen output range. ONNX Runtime fuses exactly this pattern (DQ on input, weight and
    int32 bias, Q on the output) into ``QLinearConv``, which computes ``round((S_x S_w / S_y) acc) + Z_y`` from
    the integer accumulator ``acc`` (Jacob et al., 2018, eq. 7), so this module computes what the kernel does
    up to float rounding.
    """

    qweight: Tensor
    weight_scale: Tensor
    weight_zero_point: Tensor
    qbias: Tensor | None

    def __init__(self, module: FakeQuantizedConv2d) -> None:
        super().__init__()
        act = module.activation_config
        qin, qout = module.input_qparams(), module.output_qparams()
        if act.scheme != "static" or qin is None or qout is None:
            raise ValueError(
                "QDQConv2d needs a static-scheme FakeQuantizedConv2d whose observer has seen data; train (or run "
                "calibration batches in train mode) first, or export the dynamic scheme with export_dynamic_int8."
            )
        if act.bits != 8:
            raise ValueError(f"Q/DQ export needs 8-bit activations, got bits={act.bits}.")
        quantized_decomposed_ops()
        self.conv = {"stride": module.stride, "padding": module.padding, "dilation": module.dilation,
                     "groups": module.groups}  # fmt: skip
        if module.padding_mode != "zeros":
            raise ValueError(f"QDQConv2d supports padding_mode='zeros' only, got {module.padding_mode!r}.")
        self.activation = (*act.qrange, torch.int8 if act.signed else torch.uint8)
        self.input_qparams = (float(qin[0]), int(qin[1]))
        self.output_qparams = (float(qout[0]), int(qout[1]))
        scale, _ = module.weight_qparams()
        scale = scale.expand(module.out_channels).contiguous()  # per tensor: the same scale in every channel
        codes = _weight_codes(module)
        self.register_buffer("qweight", codes)
        self.register_buffer("weight_scale", scale)
        self.register_buffer("weight_zero_point", torch.zeros(module.out_channels, dtype=torch.int64))
        self.per_channel = module.weight_config.axis is not None
        bias_scale = (scale.double() * self.input_qparams[0]).float()
        qbias = None if module.bias is None else torch.round(module.bias.detach().double() / bias_scale.double())
        self.register_buffer("qbias", None if qbias is None else qbias.clamp(-(2**31), 2**31 - 1).to(torch.int32))
        self.register_buffer("bias_scale", bias_scale)

    def _qdq(self, x: Tensor, qparams: tuple[float, int]) -> Tensor:
        ops = quantized_decomposed_ops()
        args = (*qparams, *self.activation)
        return ops.dequantize_per_tensor(ops.quantize_per_tensor(x, *args), *args)

    def dequantized_weight(self) -> Tensor:
        """``DQ(W_q)`` as float32, the shape of the conv weight."""
        ops = quantized_decomposed_ops()
        return ops.dequantize_per_channel(self.qweight, self.weight_scale, self.weight_zero_point, 0, -128, 127,
                                          torch.int8)  # fmt: skip

    @property
    def weight(self) -> Tensor:
        """``DQ(W_q)``, for code that reads a conv's ``weight`` (a ViT casts its pixels to ``weight.dtype``)."""
        return self.dequantized_weight()

    def dequantized_bias(self) -> Tensor | None:
        """``DQ(b_q) = S_x S_w b_q`` (``None`` without bias)."""
        if self.qbias is None:
            return None
        ops = quantized_decomposed_ops()
        return ops.dequantize_per_channel(self.qbias, self.bias_scale, self.weight_zero_point, 0, -(2**31),
                                          2**31 - 1, torch.int32)  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        x = self._qdq(x, self.input_qparams)
        y = F.conv2d(x, self.dequantized_weight(), self.dequantized_bias(), **self.conv)
        return self._qdq(y, self.output_qparams)

    def extra_repr(self) -> str:
        return (
            f"{tuple(self.qweight.shape)}, {self.conv}, per_channel={self.per_channel}, "
            f"input_scale={self.input_qparams[0]:.4g}, output_scale={self.output_qparams[0]:.4g}"
        )


def _weight_codes(module: FakeQuantizedConv2d | FakeQuantizedLinear) -> Tensor:
    """The int8 codes ``round(fq(W) / S)`` of the fake quantizer's weight (scales broadcast over axis 0)."""
    scale, zero_point = module.weight_qparams()
    qmin, qmax = module.weight_config.qrange
    axis = module.weight_config.axis
    with torch.no_grad():
        fq = fake_quantize(module.weight, scale, zero_point, qmin, qmax, axis=axis)
        divisor = scale.reshape(-1, *[1] * (fq.dim() - 1)) if axis == 0 else scale
        return torch.round(fq / divisor).to(torch.int8)


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
    """Replace every static-scheme :class:`FakeQuantizedLinear` by a :class:`QDQLinear` and every
    :class:`FakeQuantizedConv2d` by a :class:`QDQConv2d` (eval mode).

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
            out.set_submodule(fqn, QDQConv2d(module) if isinstance(module, FakeQuantizedConv2d) else QDQLinear(module))
        except ValueError as err:
            raise ValueError(f"cannot convert {fqn!r}: {err}") from err
    if quantize_embeddings:
        from lit_compress.models.surgery import lookup_tables

        for fqn in lookup_tables(out):  # only tables the forward looks up (ORT quantizes Gather, not raw weights)
            module = out.get_submodule(fqn)
            if type(module) is nn.Embedding:
                out.set_submodule(fqn, QDQEmbedding(module))
    return out.eval()


