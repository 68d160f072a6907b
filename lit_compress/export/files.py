"""What an artifact weighs: its files (external data included), their gzip size, parameter and nonzero counts.

Size on disk says what a deployment ships; the gzip size shows what unstructured zeros buy (they do not
shrink a dense file, they only make it compress better). Parameter counts are reported next to nonzero
counts so sparsity is never presented as a smaller model.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from lit_compress.export.int4_lookup import PACKED_SUFFIX, packed_table_counts

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx")
QUANT_SUFFIXES = ("_scale", "_zero_point", "_scales", "_zero_points")


def artifact_files(path: str | os.PathLike[str]) -> list[Path]:
    """The files that hold an artifact's weights.

    * an ``.onnx`` file: itself plus every external-data file its initializers point to;
    * a directory with ``.onnx`` files: those files and their external data;
    * any other directory (a ``save_pretrained`` dir): its weight files (``*.safetensors``, ``*.bin``,
      ``*.pt``, ``*.pth``), not tokenizer or config files;
    * any other file: itself.

    Raises:
        FileNotFoundError: ``path`` does not exist or a directory holds no weight file.
    """
    src = Path(path)
    if not src.exists():
        raise FileNotFoundError(f"No artifact at {src}.")
    if src.is_file():
        return onnx_files(src) if src.suffix == ".onnx" else [src]
    onnx_models = sorted(src.glob("*.onnx"))
    if onnx_models:
        return sorted({f for model in onnx_models for f in onnx_files(model)})
    weights = sorted(p for p in src.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not weights:
        raise FileNotFoundError(f"{src} holds no weight file ({', '.join(WEIGHT_SUFFIXES)}).")
    return weights


def onnx_files(path: str | os.PathLike[str]) -> list[Path]:
    """An ONNX file and the external-data files its initializers reference (read without loading data)."""
    import onnx

    model_path = Path(path)
    proto = onnx.load(str(model_path), load_external_data=False)
    files = {model_path}
    for tensor in _all_initializers(proto.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = next(e.value for e in tensor.external_data if e.key == "location")
            files.add(model_path.parent / location)
    return sorted(files)


def size_bytes(files: Iterable[str | os.PathLike[str]]) -> int:
    """Total size on disk of ``files`` in bytes."""
    return sum(Path(f).stat().st_size for f in files)


def gzip_size(files: Iterable[str | os.PathLike[str]], level: int = 6, chunk: int = 1 << 20) -> int:
    """Bytes of ``files`` after gzip compression (each file compressed on its own, nothing written)."""
    total = 0
    for name in files:
        compressor = zlib.compressobj(level, zlib.DEFLATED, 31)  # wbits=31: gzip container
        with open(name, "rb") as fh:
            while block := fh.read(chunk):
                total += len(compressor.compress(block))
        total += len(compressor.flush())
    return total


def file_table(files: Iterable[str | os.PathLike[str]], root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """``[{"path": relative path, "bytes": size}]`` for a manifest."""
    return [{"path": os.path.relpath(f, root), "bytes": Path(f).stat().st_size} for f in files]


def torch_parameter_counts(model: nn.Module) -> dict[str, int]:
    """``{"parameters", "nonzero"}`` of a PyTorch model, dynamic-int8 ``Linear`` weights included.

    Quantized linears keep their weights in packed params, not ``parameters()``, so they are unpacked.
    Shared (tied) tensors are counted once.
    """
    tensors: list[Tensor] = list(model.parameters())  # deduplicates tied parameters
    for module in model.modules():
        if getattr(module, "_packed_params", None) is not None and callable(getattr(module, "weight", None)):
            bias = module.bias()
            tensors += [module.weight().dequantize(), *([bias] if bias is not None else [])]
    total = sum(t.numel() for t in tensors)
    nonzero = sum(int(t.count_nonzero()) for t in tensors)
    return {"parameters": total, "nonzero": nonzero}


def onnx_parameter_counts(path: str | os.PathLike[str]) -> dict[str, int]:
    """``{"parameters", "nonzero"}`` of an ONNX model's weights.

    Weights are the floating-point, 8-bit and 4-bit initializers with at least one dimension, except
    quantization scales and zero points (``*_scale(s)``, ``*_zero_point(s)``) and integer shape constants. A
    quantized weight is nonzero where it differs from its zero point (its dequantized value is nonzero); the
    packed 4-bit weights of ``MatMulNBits`` count ``K x N`` values (symmetric: zero point 8; with explicit
    zero points every value is counted as nonzero, an upper bound), packed 4-bit tables
    (:mod:`~lit_compress.export.int4_lookup`) their unpadded rows x hidden. What is counted is
    what the file stores: the exporter's optimizer folds all-zero biases away and merges identical constants
    (e.g. untrained all-ones LayerNorm scales), so this can be below the PyTorch count of the same model.
    """
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    arrays = {t.name: t for t in _all_initializers(proto.graph)}
    packed = {n.input[1]: n for n in proto.graph.node if n.op_type == "MatMulNBits"}
    weight_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                    onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT4,
                    onnx.TensorProto.UINT4}  # fmt: skip
    total = nonzero = 0
    for name, tensor in arrays.items():
        if tensor.data_type not in weight_types or not tensor.dims or name.endswith(QUANT_SUFFIXES):
            continue
        values = numpy_helper.to_array(tensor, base_dir=str(Path(path).parent))
        if name in packed:
            size, nonzero_values = _matmul_nbits_counts(packed[name], values)
        elif name.endswith(PACKED_SUFFIX):
            size, nonzero_values = packed_table_counts(values, tensor.doc_string)
        else:
            size, nonzero_values = values.size, int(np.count_nonzero(values != _zero_point(arrays, name, values)))
        total, nonzero = total + size, nonzero + nonzero_values
    return {"parameters": total, "nonzero": nonzero}


def _matmul_nbits_counts(node: Any, packed: np.ndarray) -> tuple[int, int]:
    """``(K * N, nonzero)`` of a ``MatMulNBits`` weight: 4-bit values packed two per byte, zero point 8."""
    import onnx

    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    size = int(attrs["K"]) * int(attrs["N"])
    has_zero_points = len(node.input) > 3 and bool(node.input[3])
    if attrs.get("bits", 4) != 4 or has_zero_points:
        return size, size
    nibbles = np.concatenate([packed & 0x0F, packed >> 4], axis=None)
    return size, int(np.count_nonzero(nibbles != 8))  # block padding is quantized zeros: 8


def _zero_point(arrays: dict[str, Any], name: str, values: np.ndarray) -> Any:
    from onnx import numpy_helper

    base = name.removesuffix("_quantized")
    tensor = arrays.get(f"{base}_zero_point") if base != name else None
    if tensor is None:
        return 0
    zero = numpy_helper.to_array(tensor)
    try:
        np.broadcast_shapes(zero.shape, values.shape)
    except ValueError:
        return 0
    return zero.astype(values.dtype)


def _all_initializers(graph: Any) -> Iterable[Any]:
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.g.node or attr.g.initializer:
                yield from _all_initializers(attr.g)
            for sub in attr.graphs:
                yield from _all_initializers(sub)
