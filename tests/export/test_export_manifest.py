"""export_model: manifests per artifact and the index, atomicity, validation of formats."""

from __future__ import annotations

import json
import os

import pytest

from lit_compress.export import ARTIFACT_KINDS, export_model, read_manifest
from lit_compress.export.files import artifact_files, gzip_size


def test_index_lists_every_artifact(exported):
    index = json.loads((exported / "manifest.json").read_text())
    assert set(index["artifacts"]) == set(ARTIFACT_KINDS) and index["skipped"] == {}
    assert index["source"]["checkpoint"] == "last.ckpt" and index["config"] == {"run": "test"}
    for kind, entry in index["artifacts"].items():
        assert (exported / entry["manifest"]).is_file()
        assert read_manifest(exported / kind)["kind"] == kind


@pytest.mark.parametrize("kind", ARTIFACT_KINDS)
def test_manifest_fields(exported, kind):
    manifest = read_manifest(exported / kind)
    directory = exported / kind
    files = artifact_files(directory)
    assert manifest["schema"] == "lit_compress.artifact/1"
    assert [f["path"] for f in manifest["files"]] == [os.path.relpath(f, directory) for f in files]
    assert manifest["size_bytes"] == sum(f.stat().st_size for f in files) > 0
    assert manifest["gzip_bytes"] == gzip_size(files)
    assert {"torch", "onnx", "onnxruntime", "transformers", "lit-compress"} <= set(manifest["versions"])
    assert manifest["versions"]["torch"] and manifest["versions"]["onnxruntime"]
    assert manifest["source"]["model_dir"].endswith("tiny") and manifest["config"] == {"run": "test"}
    assert manifest["parameters"]["parameters"] >= manifest["parameters"]["nonzero"] > 0
    assert (directory / "tokenizer.json").is_file() or (directory / "vocab.txt").is_file()
    int8 = manifest["int8"]  # every manifest says which CPU it was made on and for which int8 target
    assert int8["cpu"]["machine"] and isinstance(int8["cpu"]["int8_flags"], list)
    assert int8["target"]["name"] == int8["host_target"] and int8["target_is_host"]


def test_manifest_details_per_kind(exported):
    fp32, dyn, static, torch_int8 = (read_manifest(exported / k) for k in
                                     ("onnx-fp32", "ort-dynamic-int8", "ort-static-int8", "torch-dynamic-int8"))
    assert fp32["onnx"] == {"opset": 20, "exporter": "dynamo", "inputs": ["input_ids", "attention_mask"]}
    assert fp32["parity"]["passed"] and fp32["parity"]["max_abs_diff"] <= 1e-4 and fp32["quantization"] is None
    assert [b["shape"][0] for b in fp32["parity"]["batches"]] == [1, 4, 8]
    assert any(b["padding_tokens"] > 0 for b in fp32["parity"]["batches"])
    assert fp32["runs_int8"] is False
    assert dyn["quantization"]["scheme"] == "ort-dynamic" and dyn["quantization"]["per_channel"] is False
    assert dyn["quantization"]["embedding_storage"] == "int4" and "Gather" not in dyn["quantization"]["op_types"]
    assert dyn["runs_int8"] is True and dyn["kernels"]["int8_compute"] and dyn["warnings"] == []
    # ORT dynamic int8 is gated against the fake-quantized model that simulates it; static PTQ only recorded
    gate = dyn["parity"]
    assert gate["gated"] is True and gate["passed"] and gate["reference"].startswith("fake-quantized")
    assert gate["argmax_agreement"] >= gate["gate"]["min_agreement"] == 0.99
    assert gate["error_steps"] == pytest.approx(gate["max_abs_diff"] / gate["logit_step"]) and gate["error_steps"] <= 16
    assert dyn["quantization"]["target"]["name"] == dyn["int8"]["target"]["name"]
    assert dyn["quantization"]["reduce_range"] == dyn["quantization"]["target"]["reduce_range"]
    assert static["parity"]["gated"] is False and "error_steps" in static["parity"]
    assert static["quantization"]["scheme"] == "ort-static-qdq" and static["quantization"]["calibration_examples"] == 16
    assert static["runs_int8"] is True
    assert torch_int8["quantization"]["scheme"] == "torch-dynamic" and torch_int8["parity"]["max_abs_diff"] > 0
    assert dyn["size_bytes"] < fp32["size_bytes"]


def test_failed_quantization_leaves_no_manifest(model_dir, tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("quantizer crashed")

    monkeypatch.setattr("onnxruntime.quantization.quantize_dynamic", crash)
    with pytest.raises(RuntimeError, match="quantizer crashed"):
        export_model(str(model_dir), str(tmp_path), formats=["ort-dynamic-int8"], exporter="legacy")
    assert not (tmp_path / "manifest.json").exists()
    assert not (tmp_path / "ort-dynamic-int8" / "manifest.json").exists()
    assert not (tmp_path / "ort-dynamic-int8" / "model.onnx").exists()


def test_int8_gate_failure_names_the_artifact_and_leaves_nothing(model_dir, tmp_path, monkeypatch):
    import torch

    import lit_compress.quant.export as qexport
    from lit_compress.export.parity import Int8GateError

    real = qexport.dynamic_int8_reference

    def wrong_reference(model, *args):  # a simulation that does not match the artifact
        out = real(model, *args)
        with torch.no_grad():
            out.classifier.weight.mul_(-3.0)
        return out

    monkeypatch.setattr(qexport, "dynamic_int8_reference", wrong_reference)
    with pytest.raises(Int8GateError, match=r"ort-dynamic-int8 .*int8 gate failed: argmax agreement .*logit steps"):
        export_model(str(model_dir), str(tmp_path), formats=["ort-dynamic-int8"])
    assert not (tmp_path / "ort-dynamic-int8" / "model.onnx").exists()
    assert not (tmp_path / "ort-dynamic-int8" / "manifest.json").exists() and not (tmp_path / "manifest.json").exists()


def test_target_avx2_stores_7_bit_weights(model_dir, tmp_path):
    import numpy as np
    import onnx
    from onnx import numpy_helper

    export_model(str(model_dir), str(tmp_path), formats=["ort-dynamic-int8"], target="avx2", per_channel=True)
    manifest = read_manifest(tmp_path / "ort-dynamic-int8")
    assert manifest["quantization"]["reduce_range"] is True and manifest["int8"]["target"]["name"] == "avx2"
    proto = onnx.load(str(tmp_path / "ort-dynamic-int8" / "model.onnx"))
    codes = [numpy_helper.to_array(t) for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert codes and max(int(np.abs(c.astype(np.int32)).max()) for c in codes) == 64  # -64..64, never 127
    assert manifest["parity"]["passed"]


def test_unknown_target_is_refused(model_dir, tmp_path):
    with pytest.raises(ValueError, match=r"unknown int8 target 'avx3'.*'avx2'"):
        export_model(str(model_dir), str(tmp_path), formats=["ort-dynamic-int8"], target="avx3")


def test_unavailable_torch_int8_is_skipped_with_reason(model_dir, tmp_path, monkeypatch):
    import lit_compress.export.api as api

    monkeypatch.setattr(api, "torch_dynamic_int8_unavailable", lambda: "removed in this torch")
    with pytest.warns(UserWarning, match="skipping torch-dynamic-int8: removed in this torch"):
        index = export_model(str(model_dir), str(tmp_path), formats=["torch-dynamic-int8"])
    assert json.loads(index.read_text())["skipped"] == {"torch-dynamic-int8": "removed in this torch"}


@pytest.mark.parametrize("formats, calibration, message", [
    (["onnx"], None, r"Unknown export formats \['onnx'\]"),
    (["ort-static-int8"], None, "ort-static-int8 needs calibration_examples"),
])  # fmt: skip
def test_bad_formats_are_explained(model_dir, tmp_path, formats, calibration, message):
    with pytest.raises(ValueError, match=message):
        export_model(str(model_dir), str(tmp_path), formats=formats, calibration_examples=calibration)
