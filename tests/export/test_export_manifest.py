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


def test_manifest_details_per_kind(exported):
    fp32, dyn, static, torch_int8 = (read_manifest(exported / k) for k in
                                     ("onnx-fp32", "ort-dynamic-int8", "ort-static-int8", "torch-dynamic-int8"))
    assert fp32["onnx"] == {"opset": 18, "exporter": "dynamo", "inputs": ["input_ids", "attention_mask"]}
    assert fp32["parity"]["passed"] and fp32["parity"]["max_abs_diff"] <= 1e-4 and fp32["quantization"] is None
    assert [b["shape"][0] for b in fp32["parity"]["batches"]] == [1, 4, 8]
    assert any(b["padding_tokens"] > 0 for b in fp32["parity"]["batches"])
    assert fp32["runs_int8"] is False
    assert dyn["quantization"]["scheme"] == "ort-dynamic" and dyn["quantization"]["per_channel"] is False
    assert dyn["quantization"]["embedding_storage"] == "int4" and "Gather" not in dyn["quantization"]["op_types"]
    assert dyn["runs_int8"] is True and dyn["kernels"]["int8_compute"] and dyn["warnings"] == []
    assert dyn["parity"]["gated"] is False and dyn["parity"]["argmax_agreement"] >= 0.8
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


def test_unavailable_torch_int8_is_skipped_with_reason(model_dir, tmp_path, monkeypatch):
    import lit_compress.export.api as api

    monkeypatch.setattr(api, "torch_dynamic_int8_unavailable", lambda: "removed in this torch")
    with pytest.warns(UserWarning, match="skipping torch-dynamic-int8: removed in this torch"):
        index = export_model(str(model_dir), str(tmp_path), formats=["torch-dynamic-int8"])
    assert json.loads(index.read_text())["skipped"] == {"torch-dynamic-int8": "removed in this torch"}


@pytest.mark.parametrize("formats, calibration, message", [
    (["onnx"], None, r"Unknown export formats \['onnx'\]"),
    (["ort-static-int8"], None, "ort-static-int8 needs calibration_texts"),
])  # fmt: skip
def test_bad_formats_are_explained(model_dir, tmp_path, formats, calibration, message):
    with pytest.raises(ValueError, match=message):
        export_model(str(model_dir), str(tmp_path), formats=formats, calibration_texts=calibration)
