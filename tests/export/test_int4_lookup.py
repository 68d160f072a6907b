"""4-bit table lookups in standard ops: the same rows as ORT's GatherBlockQuantized, bit for bit."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from lit_compress.export.int4_lookup import PACKED_SUFFIX, pack_int4_halves, unpack_int4_gathers
from lit_compress.export.int8 import _quantize_4bit
from lit_compress.quant.functional import blockwise_int4


def _table_model(tmp_path, table: np.ndarray, ids_rank: int | None):
    shape = [None] * ids_rank if ids_rank else None  # None: a shapeless input (its rank unknown to the rewrite)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0)], "emb",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, shape)],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(table, "table")],
    )  # fmt: skip
    src = tmp_path / "emb.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), str(src))
    return src


def _run(path, ids):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]


def test_packing_puts_column_k_low_and_column_k_plus_half_high():
    codes = np.array([[-8, -1, 0, 7, 3, -4]], np.int8)  # H = 6, block 4: padded to 8 with code 0 (u = 8)
    packed = pack_int4_halves(codes, 4)
    u = [0, 7, 8, 15, 11, 4, 8, 8]
    assert packed.dtype == np.uint8 and packed.shape == (1, 4)
    assert packed.tolist() == [[u[k] | (u[k + 4] << 4) for k in range(4)]]


@pytest.mark.parametrize("rows, hidden, block, ids_rank",
                         [(300, 40, 16, 1), (200, 64, 32, 2), (120, 384, 128, 2), (90, 40, 16, None)])
def test_unpacked_lookup_equals_orts_kernel_and_the_simulated_table(tmp_path, rows, hidden, block, ids_rank):
    table = torch.randn(rows, hidden, generator=torch.Generator().manual_seed(hidden)) * 0.3
    table[3] = 0.0  # an all-zero row: scale 0, codes 0
    src = _table_model(tmp_path, table.numpy(), ids_rank)
    kernel, unpacked = tmp_path / "kernel.onnx", tmp_path / "unpacked.onnx"
    _quantize_4bit(src, kernel, ("Gather",), block, "kernel")
    _quantize_4bit(src, unpacked, ("Gather",), block, "unpack")

    proto = onnx.load(str(unpacked))
    ops = {n.op_type for n in proto.graph.node}
    assert "GatherBlockQuantized" not in ops and {"BitwiseAnd", "BitShift", "Gather"} <= ops
    packed = {t.name: t for t in proto.graph.initializer}["table_Q4" + PACKED_SUFFIX]
    padded = -(-hidden // block) * block
    assert packed.data_type == TensorProto.UINT8 and list(packed.dims) == [rows, padded // 2]

    assert ("Shape" in ops) == (ids_rank is None)  # reshape targets: constants where the rank is known
    ids = np.random.default_rng(0).integers(0, rows, (7,) if ids_rank == 1 else (2, 9)).astype(np.int64)
    ids.flat[0] = 3
    expected = blockwise_int4(table, block).numpy()[ids]
    got, reference = _run(unpacked, ids), _run(kernel, ids)
    assert got.shape == ids.shape + (hidden,)
    assert np.array_equal(got, reference) and np.array_equal(got, expected)


def test_a_small_table_is_stored_dequantized_for_a_plain_gather(tmp_path):
    table = torch.randn(2, 64, generator=torch.Generator().manual_seed(1))
    src, dst = _table_model(tmp_path, table.numpy(), 2), tmp_path / "small.onnx"
    _quantize_4bit(src, dst, ("Gather",), 32, "unpack")
    proto = onnx.load(str(dst))
    assert [n.op_type for n in proto.graph.node] == ["Gather"]
    assert {t.name: t.data_type for t in proto.graph.initializer} == {"table_Q4_fp32": TensorProto.FLOAT}
    ids = np.array([[1, 0, 1]], np.int64)
    assert np.array_equal(_run(dst, ids), blockwise_int4(table, 32).numpy()[ids])


def test_lookups_it_cannot_reproduce_are_left_to_orts_kernel():
    """A lookup with zero points (asymmetric codes) is not rewritten."""
    codes = helper.make_tensor("t", TensorProto.UINT4, [4, 32], [1] * 128)
    scales = numpy_helper.from_array(np.ones((4, 1), np.float32), "s")
    zeros = helper.make_tensor("z", TensorProto.UINT4, [4, 1], [8] * 4)
    node = helper.make_node("GatherBlockQuantized", ["t", "ids", "s", "z"], ["rows"], domain="com.microsoft",
                            block_size=32, gather_axis=0, quantize_axis=1)  # fmt: skip
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [None])],
                              [helper.make_tensor_value_info("rows", TensorProto.FLOAT, None)],
                              [codes, scales, zeros])  # fmt: skip
    proto = helper.make_model(graph)
    assert unpack_int4_gathers(proto) == 0 and [n.op_type for n in proto.graph.node] == ["GatherBlockQuantized"]


def test_packed_tables_count_their_unpadded_values(tmp_path):
    from lit_compress.export.files import onnx_parameter_counts

    table = torch.randn(30, 40, generator=torch.Generator().manual_seed(2))
    table[:, :5] = 0.0  # 150 zero values
    src, dst = _table_model(tmp_path, table.numpy(), 1), tmp_path / "packed.onnx"
    _quantize_4bit(src, dst, ("Gather",), 16, "unpack")  # padded to 48 columns
    counts = onnx_parameter_counts(dst)
    assert counts["parameters"] == 30 * 40
    assert counts["nonzero"] == int(np.count_nonzero(blockwise_int4(table, 16).numpy()))
