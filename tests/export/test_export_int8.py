"""Int8 artifacts: ORT dynamic and static quantization, kernel detection, PyTorch dynamic int8."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from lit_compress.export import (
    LogitsOnly,
    NoInt8KernelWarning,
    OrtQuantization,
    Predictor,
    kernel_report,
    load_torch_dynamic_int8,
    quantize_ort_dynamic,
    save_torch_dynamic_int8,
    torch_parameter_counts,
)
from lit_compress.export.parity import torch_logits
from lit_compress.export.int4_lookup import PACKED_SUFFIX


@pytest.fixture(scope="module")
def fp32(exported):
    return exported / "onnx-fp32" / "model.onnx"


def _initializers(path):
    return {t.name: t for t in onnx.load(str(path)).graph.initializer}


def test_dynamic_int8_loads_runs_int8_kernels_and_agrees(exported, fp32, texts):
    path = exported / "ort-dynamic-int8" / "model.onnx"
    report = kernel_report(path, expect_int8=True)
    assert report["runs_int8"] and report["warning"] is None
    assert {"DynamicQuantizeMatMul", "MatMulIntegerToFloat"} & set(report["int8_compute"])
    assert path.stat().st_size < 0.6 * fp32.stat().st_size
    quantized, reference = Predictor.from_path(path), Predictor.from_path(fp32)
    agree = np.mean([a["label"] == b["label"] for a, b in zip(quantized(texts), reference(texts))])
    assert agree >= 0.8  # the fixture's head is scaled 30x, which magnifies quantization noise


def test_static_qdq_int8_runs_qlinear_kernels(exported):
    report = kernel_report(exported / "ort-static-int8" / "model.onnx", expect_int8=True)
    assert report["runs_int8"] and {"QLinearMatMul", "QGemm"} & set(report["int8_compute"])


def test_fp32_model_runs_no_int8_kernel(fp32):
    report = kernel_report(fp32, expect_int8=False)
    assert not report["runs_int8"] and report["float_matmul"] > 0 and report["warning"] is None


def test_int8_storage_with_float_compute_is_flagged(fp32, tmp_path):
    """Quantizing only the embedding Gather stores int8 but computes every matmul in fp32."""
    path = quantize_ort_dynamic(fp32, tmp_path / "gather_only.onnx", OrtQuantization(op_types=["Gather"]))
    with pytest.warns(NoInt8KernelWarning, match="runs no integer matmul or conv kernel"):
        report = kernel_report(path, expect_int8=True)
    assert report["runs_int8"] is False and report["float_matmul"] > 0


def test_embedding_storage_options(fp32, tmp_path):
    sizes, word = {}, "model.bert.embeddings.word_embeddings.weight"
    for name, scheme in [("int4", OrtQuantization()), ("int8", OrtQuantization(embedding_bits=8)),
                         ("fp32", OrtQuantization(quantize_embeddings=False))]:  # fmt: skip
        assert scheme.embedding_storage == name
        path = quantize_ort_dynamic(fp32, tmp_path / f"{name}.onnx", scheme)
        sizes[name] = path.stat().st_size
        tables = {n: t.data_type for n, t in _initializers(path).items() if n.startswith(word)}
        ops = {n.op_type for n in onnx.load(str(path)).graph.node}
        assert kernel_report(path, expect_int8=True)["runs_int8"]
        if name == "int4":  # two codes per byte, unpacked by standard ops (tests/export/test_int4_lookup.py)
            assert "GatherBlockQuantized" not in ops and "BitShift" in ops
            assert tables[word + "_Q4" + PACKED_SUFFIX] == onnx.TensorProto.UINT8
        elif name == "int8":
            assert tables[word + "_quantized"] in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
        else:
            assert tables == {word: onnx.TensorProto.FLOAT}
    assert sizes["int4"] < sizes["int8"] < sizes["fp32"]
    with pytest.raises(ValueError, match="embedding_bits=2; use 4 or 8"):
        OrtQuantization(embedding_bits=2)


def test_int4_weight_only_runs_matmul_nbits(exported, texts):
    path = exported / "ort-int4" / "model.onnx"
    report = kernel_report(path, expect_int8=True)
    assert report["int8_compute"].get("MatMulNBits", 0) > 0 and report["ops"].get("BitShift", 0) > 0
    dynamic = exported / "ort-dynamic-int8" / "model.onnx"
    assert path.stat().st_size < dynamic.stat().st_size
    int4, fp32 = Predictor.from_path(path)(texts), Predictor.from_path(exported / "onnx-fp32")(texts)
    agree = np.mean([a["label"] == b["label"] for a, b in zip(int4, fp32)])
    assert agree >= 0.85


def test_per_channel_scales(fp32, tmp_path):
    path = quantize_ort_dynamic(fp32, tmp_path / "pc.onnx", OrtQuantization(per_channel=True))
    scales = [numpy_helper.to_array(t) for n, t in _initializers(path).items() if n.endswith("_scale")]
    assert any(s.size > 1 for s in scales), "per-channel quantization stores one scale per output channel"


def test_quantizes_a_model_carrying_value_info_for_its_weights(fp32, tmp_path):
    """Dynamo exports list their weights in graph.value_info (which some ORT releases refuse): ours succeeds."""
    proto = onnx.load(str(fp32))
    proto.graph.value_info.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                                  for t in proto.graph.initializer)  # fmt: skip
    raw = tmp_path / "raw.onnx"
    onnx.save_model(proto, str(raw))
    path = quantize_ort_dynamic(raw, tmp_path / "q.onnx")
    assert kernel_report(path, expect_int8=True)["runs_int8"]
    assert len(onnx.load(str(raw)).graph.value_info) > 0  # the source is left as it was


def test_torch_dynamic_int8_round_trip(make_model, tokenizer, batch, tmp_path):
    model = make_model()
    weights = save_torch_dynamic_int8(model, tmp_path / "int8", tokenizer)
    assert weights.name == "model_int8.pt"
    loaded = load_torch_dynamic_int8(tmp_path / "int8")
    assert type(loaded.classifier).__module__.startswith("torch.ao.nn.quantized.dynamic")
    reference = torch_logits(LogitsOnly(model), [batch])[0]
    quantized = torch_logits(LogitsOnly(loaded), [batch])[0]
    assert np.abs(quantized - reference).max() < 0.5 and (quantized.argmax(-1) == reference.argmax(-1)).all()
    assert not np.array_equal(quantized, reference), "int8 weights must change the logits a little"
    assert torch_parameter_counts(loaded)["parameters"] == torch_parameter_counts(model)["parameters"]
    assert torch.load(weights, weights_only=True)


def test_static_needs_calibration(fp32, tmp_path):
    from lit_compress.export import quantize_ort_static

    with pytest.raises(ValueError, match="at least one calibration batch"):
        quantize_ort_static(fp32, tmp_path / "s.onnx", [])
    assert not (tmp_path / "s.onnx").exists()


@pytest.mark.parametrize("hidden, block", [(40, 16), (64, 32)])
def test_blockwise_int4_reproduces_orts_4bit_embedding_table(tmp_path, hidden, block):
    """The simulating model's int4 table is the one ORT's GatherBlockQuantized looks up (last block shorter)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from lit_compress.export.int8 import _quantize_4bit
    from lit_compress.quant.functional import blockwise_int4

    table = torch.randn(50, hidden, generator=torch.Generator().manual_seed(hidden)) * 0.3
    table[3] = 0.0  # an all-zero row: scale 0, codes 0
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0)], "emb",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [None])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, [None, hidden])],
        [numpy_helper.from_array(table.numpy(), "table")],
    )  # fmt: skip
    src, dst = tmp_path / "emb.onnx", tmp_path / "emb4.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), str(src))
    _quantize_4bit(src, dst, ("Gather",), block)
    assert "GatherBlockQuantized" in {n.op_type for n in onnx.load(str(dst)).graph.node}
    ids = np.arange(50, dtype=np.int64)
    rows = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]
    expected = blockwise_int4(table, block).numpy()
    assert np.abs(rows - expected).max() <= 1e-7 and not np.array_equal(expected, table.numpy())


def test_harmless_quantizer_messages_are_dropped_and_the_filter_removed(fp32, tmp_path, caplog):
    import logging

    with caplog.at_level(logging.WARNING):
        quantize_ort_dynamic(fp32, tmp_path / "q.onnx")  # 4-bit embeddings too: the opset-21 notice
        logging.getLogger().warning("Please consider to run pre-processing before quantization (a user's own)")
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "opset of the input model is under 21" in m], messages
    assert messages == ["Please consider to run pre-processing before quantization (a user's own)"]
