"""ONNX Runtime quantization of an exported fp32 model: dynamic int8, static int8 (QDQ), 4-bit weight-only.

Weights are stored as ``q = round(w / s) + z`` with ``w ≈ s (q - z)`` (Jacob et al., 2018, "Quantization and
Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference"): int8 matmul weights are
symmetric (``s = max|w| / 127``, ``z = 0``, one scale per tensor or per output channel). Dynamic quantization
quantizes activations at run time from their observed range; static quantization fixes activation ranges in
advance from a calibration set and writes QuantizeLinear/DequantizeLinear pairs (QDQ) that ORT fuses into
integer kernels. 4-bit weights use one symmetric scale per block of ``block_size`` values
(``s = -w_absmax / 8`` with ``w_absmax`` the block's value of largest magnitude, ``q`` in [-8, 7]), run
by ORT's ``MatMulNBits`` (int8 compute, ``accuracy_level=4``); 4-bit embedding tables are looked up by standard
ops that unpack the looked-up rows only (:mod:`lit_compress.export.int4_lookup`, bit-identical to ORT's
``GatherBlockQuantized`` and 1.6x faster for the whole main-job student), or by that kernel with
``int4_lookup="kernel"``.

Embedding tables hold most of a small BERT's weights (MiniLM-L6: 11.7M of 22.7M), so how they are stored
decides the file size: by default they are stored in 4-bit blocks (``embedding_bits=4``), with
``embedding_bits=8`` in 8 bits per tensor, with ``quantize_embeddings=False`` left in fp32. Measured on
MiniLM-L6 + a linear head on BBC News (400 test texts): fp32 ONNX 86.7 MB, 87.25% accuracy; dynamic int8
with int8 / int4 / fp32 embeddings: 21.8 / 17.3 / 55.9 MB at 87.00% / 87.75% / 86.50% (int4 tables cost
~7% latency); all 4-bit (``ort-int4``): 12.8 MB, 87.50%, ~1.6x slower than dynamic int8.

Found by trial: ORT's quantizers (onnxruntime 1.31; 1.32 accepts them) fail on dynamo exports until
``graph.value_info`` is cleared, so it is cleared on a copy, and ``quant_pre_process`` needs
``skip_symbolic_shape=True`` on them. ``reduce_range`` (7-bit weights) is set by the int8 target
(:mod:`lit_compress.quant.targets`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lit_compress.export.int4_lookup import unpack_int4_gathers
from lit_compress.utils.io import atomic_path

CalibrationMethod = Literal["minmax", "entropy", "percentile"]


@dataclass
class OrtQuantization:
    """How ORT quantizes a model; stored in the artifact's manifest.

    Attributes:
        per_channel: One scale per output channel of each int8 weight instead of one per tensor.
        quantize_embeddings: Quantize the embedding ``Gather`` tables (see the module docstring for measured
            sizes and accuracy).
        embedding_bits: 4 (blockwise, the smallest file) or 8 (per tensor) bits per embedding value.
        block_size: Values per scale of 4-bit blocks (a power of two, at least 16).
        reduce_range: 7-bit weights, for CPUs without VNNI whose int8 dot products can saturate.
        matmul_const_b_only: Quantize only MatMuls with a weight operand, not the attention products of
            two activations (ORT's ``MatMulConstBOnly``, applied to the dynamic and static schemes alike).
        op_types: Op types the int8 quantizers quantize; derived from the embedding and conv options when
            empty. When it names ``Gather`` explicitly, embeddings are quantized to int8 and the 4-bit pass is
            skipped.
        quantize_convs: Also quantize ``Conv`` (dynamic: ``ConvInteger``; static QDQ: fused to ``QLinearConv``)
            when ``op_types`` is derived.
        calibration_method: Static only: how activation ranges are estimated.
        int4_lookup: How 4-bit tables are looked up: ``"unpack"`` (standard ops on the looked-up rows,
            :func:`~lit_compress.export.int4_lookup.unpack_int4_gathers`) or ``"kernel"`` (ORT's
            ``GatherBlockQuantized``). Same values either way.
    """

    per_channel: bool = False
    quantize_embeddings: bool = True
    embedding_bits: int = 4
    block_size: int = 128
    reduce_range: bool = False
    matmul_const_b_only: bool = True
    op_types: list[str] = field(default_factory=list)
    calibration_method: CalibrationMethod = "minmax"
    quantize_convs: bool = False
    int4_lookup: Literal["unpack", "kernel"] = "unpack"

    def __post_init__(self) -> None:
        if self.calibration_method not in ("minmax", "entropy", "percentile"):
            raise ValueError(
                f"calibration_method={self.calibration_method!r}; use 'minmax', 'entropy' or 'percentile'."
            )
        if self.int4_lookup not in ("unpack", "kernel"):
            raise ValueError(f"int4_lookup={self.int4_lookup!r}; use 'unpack' or 'kernel'.")
        if self.embedding_bits not in (4, 8):
            raise ValueError(f"embedding_bits={self.embedding_bits}; use 4 or 8.")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size={self.block_size} must be a power of two >= 16 (e.g. 32 or 128).")
        if not self.op_types:
            int8_tables = self.quantize_embeddings and self.embedding_bits == 8
            self.op_types = ["MatMul", "Gemm", *(["Gather"] if int8_tables else []),
                             *(["Conv"] if self.quantize_convs else [])]  # fmt: skip

    @property
    def int4_embeddings(self) -> bool:
        """Whether a 4-bit pass quantizes the embedding tables after the int8 quantizer."""
        return self.quantize_embeddings and self.embedding_bits == 4 and "Gather" not in self.op_types

    @property
    def embedding_storage(self) -> str:
        """``"int4"``, ``"int8"`` or ``"fp32"``: how the int8 schemes store embedding tables."""
        return "int8" if "Gather" in self.op_types else "int4" if self.int4_embeddings else "fp32"

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form for manifests (with the resolved ``embedding_storage``)."""
        return {**asdict(self), "embedding_storage": self.embedding_storage}


class TokenizedBatches:
    """A ``CalibrationDataReader`` over input batches (numpy arrays keyed by input name): tokenized texts
    (integer ids, fed as int64) or images (``pixel_values``, fed as float32).

    Only the inputs the graph declares are passed on; the reader can be rewound with :meth:`rewind`.
    """

    def __init__(self, batches: Sequence[Mapping[str, Any]], input_names: Sequence[str]) -> None:
        if not batches:
            raise ValueError("Static quantization needs at least one calibration batch; pass calibration examples.")
        self._batches = [{n: _feed(b[n]) for n in input_names} for b in batches]
        self._iter: Iterator[dict[str, np.ndarray]] = iter(self._batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        """Next batch, or ``None`` when exhausted (the ORT protocol)."""
        return next(self._iter, None)

    def rewind(self) -> None:
        """Start again from the first batch."""
        self._iter = iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)


def _feed(values: Any) -> np.ndarray:
    array = values.numpy() if hasattr(values, "numpy") else np.asarray(values)
    return array.astype(np.float32 if np.issubdtype(array.dtype, np.floating) else np.int64, copy=False)


def int4_weight_count(path: str | os.PathLike[str]) -> int:
    """How many nodes :func:`quantize_ort_int4` can quantize in ``path``: ``MatMul`` with a 2-D weight and
    ``Gather`` from a 2-D table (a CNN has none: its convs and ``Gemm`` head stay fp32 in 4-bit weight-only)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    tables = {t.name for t in proto.graph.initializer if len(t.dims) == 2}
    return sum(1 for n in proto.graph.node if (n.op_type == "MatMul" and n.input[1] in tables)
               or (n.op_type == "Gather" and n.input[0] in tables))  # fmt: skip


def tokenize_batches(
    tokenizer: Any, texts: Sequence[str], *, batch_size: int = 8, max_length: int = 128
) -> list[dict[str, np.ndarray]]:
    """Tokenize ``texts`` into padded numpy batches (``input_ids``, ``attention_mask``, ...)."""
    out = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True,
                        max_length=max_length, return_tensors="np")  # fmt: skip
        out.append({k: np.asarray(v, dtype=np.int64) for k, v in enc.items()})
    return out


def quantize_ort_dynamic(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], scheme: OrtQuantization | None = None
) -> Path:
    """Write a dynamically quantized (int8 weights) copy of the fp32 ONNX model ``src`` to ``dst``.

    Args:
        src: fp32 ONNX file (e.g. from :func:`~lit_compress.export.onnx.export_onnx`).
        dst: Destination file (written atomically).
        scheme: Quantization options; default per-tensor int8 matmul weights, 4-bit embeddings.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    scheme = scheme or OrtQuantization()
    with _quiet_ort_quantizer(), _clean_copy(src) as clean, atomic_path(dst) as tmp:
        quantize_dynamic(
            str(clean), str(tmp), weight_type=QuantType.QInt8, per_channel=scheme.per_channel,
            reduce_range=scheme.reduce_range, op_types_to_quantize=scheme.op_types,
            extra_options={"MatMulConstBOnly": scheme.matmul_const_b_only},
        )  # fmt: skip
        if scheme.int4_embeddings:
            _quantize_4bit(tmp, tmp, ("Gather",), scheme.block_size, scheme.int4_lookup)
    return Path(dst)


def quantize_ort_int4(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], scheme: OrtQuantization | None = None
) -> Path:
    """Write a 4-bit weight-only copy of ``src``: matmul weights (``MatMulNBits``) and embeddings.

    ``Gemm`` layers (pooler, classifier) and, with ``quantize_embeddings=False``, the embeddings stay in
    fp32; ``embedding_bits`` is ignored (one weight format per artifact).
    """
    scheme = scheme or OrtQuantization()
    ops = ("MatMul", "Gather") if scheme.quantize_embeddings else ("MatMul",)
    with _quiet_ort_quantizer(), _clean_copy(src) as clean, atomic_path(dst) as tmp:
        _quantize_4bit(clean, tmp, ops, scheme.block_size, scheme.int4_lookup)
    return Path(dst)


def quantize_ort_static(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    calibration: Sequence[Mapping[str, np.ndarray]],
    scheme: OrtQuantization | None = None,
) -> Path:
    """Write a statically quantized QDQ copy of ``src`` (uint8 activations, int8 weights) to ``dst``.

    Args:
        src: fp32 ONNX file.
        dst: Destination file (written atomically).
        calibration: Input batches drawn from the training data (tokenized texts, see :func:`tokenize_batches`,
            or ``{"pixel_values": (B, C, H, W)}`` images).
        scheme: Quantization options.
    """
    from onnxruntime.quantization import CalibrationMethod as Method
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    scheme = scheme or OrtQuantization()
    method = {"minmax": Method.MinMax, "entropy": Method.Entropy, "percentile": Method.Percentile}
    with _quiet_ort_quantizer(), _clean_copy(src) as clean, tempfile.TemporaryDirectory(prefix="lc-static-") as work:
        pre = Path(work) / "preprocessed.onnx"
        quant_pre_process(str(clean), str(pre), skip_symbolic_shape=True)
        reader = TokenizedBatches(calibration, _graph_inputs(pre))
        excluded = _activation_matmuls(pre) if scheme.matmul_const_b_only else []
        with atomic_path(dst) as tmp:
            quantize_static(
                str(pre), str(tmp), reader, quant_format=QuantFormat.QDQ, per_channel=scheme.per_channel,
                reduce_range=scheme.reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                op_types_to_quantize=scheme.op_types, calibrate_method=method[scheme.calibration_method],
                nodes_to_exclude=excluded,
            )  # fmt: skip
            if scheme.int4_embeddings:
                _quantize_4bit(tmp, tmp, ("Gather",), scheme.block_size, scheme.int4_lookup)
    return Path(dst)


def _quantize_4bit(
    src: Path, dst: Path, op_types: tuple[str, ...], block_size: int, lookup: str = "kernel"
) -> None:
    """Blockwise symmetric 4-bit weights for ``op_types`` (``MatMul`` -> MatMulNBits, ``Gather`` ->
    GatherBlockQuantized, rewritten into standard ops when ``lookup="unpack"``), along the reduction axis of
    matmuls and the hidden axis of embedding tables.

    The block is capped at the shortest quantized axis (rounded down to a power of two), so small models are
    not padded to a block larger than their weights.
    """
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    proto = onnx.load(str(src))
    block = min(block_size, _shortest_axis(proto, op_types))
    stack = contextlib.ExitStack()
    stack.enter_context(_quiet_ort_quantizer())
    config = DefaultWeightOnlyQuantConfig(block_size=max(16, block), is_symmetric=True, accuracy_level=4,
                                          op_types_to_quantize=op_types,
                                          quant_axes=(("MatMul", 0), ("Gather", 1)))  # fmt: skip
    with stack:
        quantizer = MatMulNBitsQuantizer(proto, algo_config=config)
        quantizer.process()
    if lookup == "unpack":
        unpack_int4_gathers(quantizer.model.model)
    onnx.save_model(quantizer.model.model, str(dst))


def _shortest_axis(proto: Any, op_types: tuple[str, ...]) -> int:
    """Largest power of two not above the shortest quantized axis among ``op_types``' 2-D weights."""
    shapes = {t.name: list(t.dims) for t in proto.graph.initializer if len(t.dims) == 2}
    axes = [shapes[n.input[1]][0] for n in proto.graph.node if n.op_type == "MatMul" and "MatMul" in op_types
            and n.input[1] in shapes]  # fmt: skip
    axes += [shapes[n.input[0]][1] for n in proto.graph.node if n.op_type == "Gather" and "Gather" in op_types
             and n.input[0] in shapes]  # fmt: skip
    return 1 << (min(axes).bit_length() - 1) if axes else 1 << 30


#: ORT quantizer messages that are harmless here, each with why: the dynamic scheme needs no static shape
#: pre-processing (the static one runs it), and the int4 pass's forced opset 21 / IR 10 model is checked by
#: loading it in ORT and gating it (:mod:`lit_compress.export.parity`).
_HARMLESS_ORT_MESSAGES = (
    "Please consider to run pre-processing before quantization",
    "The opset of the input model is under 21 and doesn't support int4",
    "doesn't support int4 data type. Force to update it to 10",
)


def _harmless(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not any(text in message for text in _HARMLESS_ORT_MESSAGES)


@contextlib.contextmanager
def _quiet_ort_quantizer() -> Iterator[None]:
    """Drop :data:`_HARMLESS_ORT_MESSAGES` (ORT logs them on the root logger and its nbits quantizer's), and
    numpy's "invalid value encountered in divide" from the 4-bit quantizer, which divides an all-zero block by
    its zero scale inside ``np.where(scale == 0, 0, data / scale)`` and keeps the 0 (a padding row, a pruned
    channel)."""
    loggers = [logging.getLogger(), logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")]
    for logger in loggers:
        logger.addFilter(_harmless)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="invalid value encountered in divide", category=RuntimeWarning,
                                    module="onnxruntime.quantization.matmul_nbits_quantizer")
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(_harmless)


@contextlib.contextmanager
def _clean_copy(src: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary copy of ``src`` without ``graph.value_info`` (ORT's quantizers fail on it)."""
    import onnx

    if not Path(src).is_file():
        raise FileNotFoundError(f"No ONNX model at {src}; export one with export_onnx first.")
    with tempfile.TemporaryDirectory(prefix="lc-quant-") as work:
        proto = onnx.load(str(src))
        del proto.graph.value_info[:]
        path = Path(work) / "clean.onnx"
        onnx.save_model(proto, str(path))
        yield path


def _activation_matmuls(path: Path) -> list[str]:
    """Names of MatMul nodes neither of whose operands is a weight (attention scores and context)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "MatMul" and not weights.intersection(n.input)]


def _graph_inputs(path: Path) -> list[str]:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    initializers = {t.name for t in proto.graph.initializer}
    return [i.name for i in proto.graph.input if i.name not in initializers]

