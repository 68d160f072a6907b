"""Deployment of QAT models: ORT dynamic int8 on the trained grid, and Q/DQ ONNX on real int8 kernels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lit_compress.export.kernels import kernel_report
from lit_compress.models.tiny import tiny_bert
from lit_compress.quant import (
    ActivationQuantConfig,
    QDQLinear,
    convert_to_qdq,
    export_dynamic_int8,
    export_qdq_onnx,
    fake_quantized_modules,
    ort_dynamic_scheme,
    prepare_qat,
    regex_filter,
    strip_fake_quant,
)

STATIC = ActivationQuantConfig(scheme="static", observer="minmax")


def _inputs() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 128, (4, 16), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 10:], mask[3, 5:] = 0, 0
    return {"input_ids": ids, "attention_mask": mask}


def _ort_logits(path: Path, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(["logits"], {k: v.numpy() for k, v in inputs.items()})[0])


@torch.no_grad()
def _gaps(model: torch.nn.Module, artifact: Path, inputs: dict[str, torch.Tensor]) -> tuple[float, float]:
    """max |QAT - ORT| and max |fp32 - ORT| logits (same weights, fake quantization on / stripped)."""
    ort_out = _ort_logits(artifact, inputs)
    qat = model.eval()(**inputs).logits
    fp32 = strip_fake_quant(model).eval()(**inputs).logits
    return (qat - ort_out).abs().max().item(), (fp32 - ort_out).abs().max().item()


def test_dynamic_qat_matches_ort_dynamic_int8_better_than_fp32(tmp_path: Path) -> None:
    inputs = _inputs()
    model = tiny_bert()
    prepare_qat(model, filter_fn=regex_filter("."))  # every Linear, as ORT quantizes every constant MatMul
    int8 = export_dynamic_int8(model, tmp_path / "fp32.onnx", tmp_path / "int8.onnx", inputs)
    report = kernel_report(int8, expect_int8=True)
    assert report["runs_int8"] and sum(report["int8_compute"].values()) == 14
    qat_gap, fp32_gap = _gaps(model, int8, inputs)
    # the fake quantizer reproduces ORT's weight grid and DynamicQuantizeLinear: only float rounding remains
    assert qat_gap < 1e-5 and qat_gap < fp32_gap / 20, (qat_gap, fp32_gap)


def test_static_qdq_export_runs_int8_kernels_and_matches_qat(tmp_path: Path) -> None:
    from lit_compress.export.onnx import read_export_metadata

    inputs = _inputs()
    model = tiny_bert()
    names = prepare_qat(model, activation_config=STATIC)
    model.train()
    with torch.no_grad():
        model(**inputs)  # calibrate the observers
    path = export_qdq_onnx(model, tmp_path / "qdq.onnx", inputs)
    assert read_export_metadata(path)["parity"]["passed"]
    report = kernel_report(path, expect_int8=True)
    assert report["int8_compute"] == {"MatMulIntegerToFloat": len(names)}
    qat_gap, fp32_gap = _gaps(model, path, inputs)
    assert qat_gap < 1e-5 and qat_gap < fp32_gap / 20, (qat_gap, fp32_gap)


def test_qdq_linear_stores_int8_codes_of_the_fake_quantizer() -> None:
    model = tiny_bert()
    prepare_qat(model, activation_config=STATIC)
    model.train()
    model(**_inputs())
    converted = convert_to_qdq(model)
    fq = dict(fake_quantized_modules(model))
    for name, module in fq.items():
        qdq = converted.get_submodule(name)
        assert isinstance(qdq, QDQLinear) and qdq.qweight.dtype == torch.int8
        assert qdq.qweight.shape == (module.in_features, module.out_features)
        assert torch.allclose(qdq.dequantized_weight().t(), module.quantized_weight(), atol=1e-7)
        assert int(qdq.qweight.abs().max()) == 127


def test_conversion_errors_are_actionable() -> None:
    dynamic = tiny_bert()
    prepare_qat(dynamic)
    with pytest.raises(ValueError, match="static-scheme"):
        convert_to_qdq(dynamic)
    unobserved = tiny_bert()
    prepare_qat(unobserved, activation_config=STATIC)
    with pytest.raises(ValueError, match="observer has seen data"):
        convert_to_qdq(unobserved)
    with pytest.raises(ValueError, match="dynamic activation scheme"):
        ort_dynamic_scheme(unobserved)
    with pytest.raises(ValueError, match="no FakeQuantizedLinear"):
        convert_to_qdq(tiny_bert())
    assert ort_dynamic_scheme(dynamic).per_channel


def test_qdq_embedding_is_int8_and_exports_gather_then_dequantize(tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    from lit_compress.quant import QDQEmbedding

    embedding = torch.nn.Embedding(50, 8)
    qdq = QDQEmbedding(embedding)
    ids = torch.tensor([[0, 7, 49], [3, 3, 1]])
    assert qdq.qweight.dtype == torch.int8 and int(qdq.qweight.abs().max()) == 127
    error = (qdq(ids) - embedding(ids)).abs().max().item()
    assert error <= qdq.scale / 2 + 1e-7  # one rounding of the table
    path = tmp_path / "emb.onnx"
    torch.onnx.export(qdq, (ids,), str(path), dynamo=True, external_data=False, verbose=False)
    graph = onnx.load(str(path)).graph
    assert [n.op_type for n in graph.node] == ["Gather", "DequantizeLinear"]
    assert {i.data_type for i in graph.initializer if list(i.dims) == [50, 8]} == {onnx.TensorProto.INT8}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: ids.numpy()})[0]
    assert torch.allclose(torch.from_numpy(out), qdq(ids), atol=1e-7)
