"""Artifact sizes (external data included), gzip sizes, parameter and nonzero counts."""

from __future__ import annotations

import gzip

import onnx
import pytest
import torch

from lit_compress.export import (
    Predictor,
    artifact_files,
    gzip_size,
    onnx_parameter_counts,
    quantize_torch_dynamic,
    size_bytes,
    torch_parameter_counts,
)


@pytest.fixture(scope="module")
def external(exported, tmp_path_factory):
    """The fp32 export re-saved with its weights in a sidecar, next to a copy of its tokenizer."""
    src = exported / "onnx-fp32"
    out = tmp_path_factory.mktemp("external")
    proto = onnx.load(str(src / "model.onnx"))
    onnx.save_model(proto, str(out / "model.onnx"), save_as_external_data=True, location="model.onnx.data")
    for f in src.iterdir():
        if f.name != "model.onnx" and f.name != "manifest.json":
            (out / f.name).write_bytes(f.read_bytes())
    return out


def test_size_counts_external_data(external):
    files = artifact_files(external / "model.onnx")
    assert [f.name for f in files] == ["model.onnx", "model.onnx.data"]
    assert artifact_files(external) == files
    data = (external / "model.onnx.data").stat().st_size
    assert size_bytes(files) == (external / "model.onnx").stat().st_size + data
    assert data > 0.8 * 4 * onnx_parameter_counts(external / "model.onnx")["parameters"]  # tensors >= 1 KiB


def test_external_data_artifact_still_predicts(external, exported, texts):
    sidecar, inline = Predictor.from_path(external), Predictor.from_path(exported / "onnx-fp32")
    assert [p["label"] for p in sidecar(texts)] == [p["label"] for p in inline(texts)]


def test_gzip_size_matches_gzip_module(exported):
    files = artifact_files(exported / "onnx-fp32")
    expected = sum(len(gzip.compress(f.read_bytes(), compresslevel=6)) for f in files)
    assert gzip_size(files) == expected


def test_model_dir_counts_weights_not_tokenizer(model_dir):
    assert [f.name for f in artifact_files(model_dir)] == ["model.safetensors"]
    with pytest.raises(FileNotFoundError, match="No artifact"):
        artifact_files(model_dir / "missing")


def test_parameter_counts_agree_between_torch_and_onnx(exported, make_model):
    model = make_model()
    counts = torch_parameter_counts(model)
    assert counts["parameters"] == sum(p.numel() for p in model.parameters())
    assert counts["nonzero"] == sum(int(p.count_nonzero()) for p in model.parameters())
    assert onnx_parameter_counts(exported / "onnx-fp32" / "model.onnx") == counts  # all biases are nonzero
    int8 = onnx_parameter_counts(exported / "ort-dynamic-int8" / "model.onnx")
    assert int8["parameters"] == counts["parameters"] and int8["nonzero"] <= counts["nonzero"]


def test_nonzero_counts_pruned_weights(make_model):
    model = make_model()
    before = torch_parameter_counts(model)
    with torch.no_grad():
        model.classifier.weight[:, :8] = 0  # random normal weights: none of these was zero before
    after = torch_parameter_counts(model)
    assert after["parameters"] == before["parameters"]
    assert before["nonzero"] - after["nonzero"] == 8 * model.classifier.out_features
    assert torch_parameter_counts(quantize_torch_dynamic(model))["parameters"] == after["parameters"]
