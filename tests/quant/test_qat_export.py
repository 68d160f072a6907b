"""Deployment of QAT models: ORT dynamic int8 on the trained grid, and Q/DQ ONNX on real int8 kernels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lit_compress.export.kernels import kernel_report
from lit_compress.export.parity import Int8Gate
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
from lit_compress.quant.targets import TARGETS, detect_target, kernel_is_exact

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


HOST = detect_target()
# The weight grids each test runs: this CPU's preset, 7-bit weights (exact on every kernel), full 8-bit weights
# (exact only where the kernel accumulates u8*s8 in int32: VNNI, AMX, arm64; AVX2 and AVX-512BW sum pairs in
# saturating int16, see lit_compress.quant.targets).
GRIDS = {"host": HOST, "7-bit": TARGETS["avx2"], "8-bit": TARGETS["avx512_vnni"]}


def _assert_qat_predicts_ort(grid: str, qat_gap: float, fp32_gap: float, model, artifact, inputs) -> None:
    if kernel_is_exact(HOST, GRIDS[grid].weight_qmax):
        # the fake quantizer reproduces ORT's weight grid and input quantization: only float rounding remains
        assert qat_gap < 1e-5 and qat_gap < fp32_gap / 20, (grid, HOST.name, qat_gap, fp32_gap)
    else:  # this CPU's kernel saturates on 8-bit weights: the QAT model still predicts the classes
        with torch.no_grad():
            same = model.eval()(**inputs).logits.argmax(-1) == _ort_logits(artifact, inputs).argmax(-1)
        assert bool(same.all()) and qat_gap > 0, (grid, HOST.name, qat_gap)


@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_dynamic_qat_matches_ort_dynamic_int8_better_than_fp32(tmp_path: Path, grid: str) -> None:
    inputs = _inputs()
    model = tiny_bert()
    # every Linear, as ORT quantizes every constant MatMul
    prepare_qat(model, weight_config=GRIDS[grid].weight_config(), filter_fn=regex_filter("."))
    lenient = Int8Gate(min_agreement=0.0, max_error_steps=1e9)  # judged below, per CPU
    int8 = export_dynamic_int8(model, tmp_path / "fp32.onnx", tmp_path / "int8.onnx", inputs, int8_gate=lenient)
    report = kernel_report(int8, expect_int8=True)
    assert report["runs_int8"] and sum(report["int8_compute"].values()) == 14
    _assert_qat_predicts_ort(grid, *_gaps(model, int8, inputs), model, int8, inputs)


@pytest.mark.parametrize("grid", ["host", "8-bit"])
def test_static_qdq_export_runs_int8_kernels_and_matches_qat(tmp_path: Path, grid: str) -> None:
    from lit_compress.export.onnx import read_export_metadata

    inputs = _inputs()
    model = tiny_bert()
    names = prepare_qat(model, weight_config=GRIDS[grid].weight_config(), activation_config=STATIC)
    model.train()
    with torch.no_grad():
        model(**inputs)  # calibrate the observers
    path = export_qdq_onnx(model, tmp_path / "qdq.onnx", inputs, parity_inputs=[inputs])
    gate = read_export_metadata(path)["parity"]
    assert gate["passed"] and gate["gated"] and gate["argmax_agreement"] == 1.0
    report = kernel_report(path, expect_int8=True)
    assert report["int8_compute"] == {"MatMulIntegerToFloat": len(names)}
    _assert_qat_predicts_ort(grid, *_gaps(model, path, inputs), model, path, inputs)


def test_the_host_preset_is_exact_on_this_cpu() -> None:
    """Whatever CPU runs the suite, its own preset's weight grid is one its int8 kernel computes exactly."""
    assert kernel_is_exact(HOST, HOST.weight_qmax), HOST


def test_dynamic_export_refuses_an_artifact_that_fails_the_gate(tmp_path: Path, monkeypatch) -> None:
    import lit_compress.export.int8 as int8_module
    from lit_compress.export.parity import Int8GateError

    real = int8_module.quantize_ort_dynamic

    def with_wrong_scheme(src, dst, scheme):  # quantize a different model than the one QAT trained
        import onnx
        from onnx import numpy_helper

        proto = onnx.load(str(src))
        for init in proto.graph.initializer:
            if init.data_type == onnx.TensorProto.FLOAT and len(init.dims) == 2:
                init.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(init), init.name))
        onnx.save_model(proto, str(src))
        return real(src, dst, scheme)

    monkeypatch.setattr(int8_module, "quantize_ort_dynamic", with_wrong_scheme)
    model = tiny_bert()
    prepare_qat(model, weight_config=HOST.weight_config(), filter_fn=regex_filter("."))
    model.train()
    with pytest.raises(Int8GateError, match="int8 gate failed"):
        export_dynamic_int8(model, tmp_path / "fp32.onnx", tmp_path / "int8.onnx", _inputs())
    assert not (tmp_path / "int8.onnx").exists() and model.training


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
