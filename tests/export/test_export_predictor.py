"""Predictor: same labels as the PyTorch model for every artifact, scores, session options, bad paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lit_compress.export import OnnxPredictor, Predictor, TorchPredictor
from lit_compress.models.io import load_model_dir


@pytest.fixture(scope="module")
def torch_labels(model_dir, tokenizer, texts):
    model = load_model_dir(model_dir)
    logits = []
    with torch.inference_mode():
        for text in texts:  # one at a time: no padding involved in the reference
            enc = tokenizer(text, return_tensors="pt")
            logits.append(model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[0])
    logits = torch.stack(logits)
    return [model.config.id2label[int(i)] for i in logits.argmax(-1)], torch.softmax(logits, -1).max(-1).values


@pytest.mark.parametrize("kind", ["torch-fp32", "onnx-fp32"])
def test_float_predictors_return_the_torch_models_labels_and_scores(exported, kind, texts, torch_labels):
    labels, scores = torch_labels
    assert len(set(labels)) > 1, "the fixture model must not predict one class for everything"
    predictor = Predictor.from_path(exported / kind)
    out = predictor(texts)
    assert [p["label"] for p in out] == labels
    np.testing.assert_allclose([p["score"] for p in out], scores.numpy(), atol=1e-5)
    (single,) = predictor(texts[3])  # a bare string gives a one-element list
    assert single["label"] == out[3]["label"] and single["score"] == pytest.approx(out[3]["score"], abs=1e-5)


@pytest.mark.parametrize("kind", ["ort-dynamic-int8", "ort-static-int8", "torch-dynamic-int8"])
def test_int8_predictors_mostly_agree(exported, kind, texts, torch_labels):
    out = Predictor.from_path(exported / kind)(texts)
    agreement = np.mean([p["label"] == t for p, t in zip(out, torch_labels[0])])
    assert agreement >= 0.85


def test_from_path_picks_the_backend(exported, model_dir):
    assert isinstance(Predictor.from_path(exported / "onnx-fp32" / "model.onnx"), OnnxPredictor)
    assert isinstance(Predictor.from_path(exported / "ort-dynamic-int8"), OnnxPredictor)
    assert isinstance(Predictor.from_path(model_dir), TorchPredictor)
    int8 = Predictor.from_path(exported / "torch-dynamic-int8")
    assert isinstance(int8, TorchPredictor) and "quantized" in type(int8.model.classifier).__module__


def test_session_options_are_applied(exported):
    import onnxruntime as ort

    predictor = Predictor.from_path(exported / "onnx-fp32", threads=2, graph_optimization="basic")
    options = predictor.session.get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert predictor.input_names == ["input_ids", "attention_mask"]
    assert Predictor.from_path(exported / "onnx-fp32").session.get_session_options().intra_op_num_threads == 1
    with pytest.raises(ValueError, match="graph optimization level 'max'"):
        Predictor.from_path(exported / "onnx-fp32", graph_optimization="max")  # type: ignore[arg-type]


def test_logits_shape_and_truncation(exported, texts):
    predictor = Predictor.from_path(exported / "onnx-fp32")
    assert predictor.logits(texts[:7]).shape == (7, 3)
    assert predictor.max_length == 64  # the tiny model's max_position_embeddings
    assert predictor.logits(" ".join(texts) * 3).shape == (1, 3)  # longer than 64 tokens: truncated


def test_bad_paths_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not an artifact: expected an .onnx file"):
        Predictor.from_path(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(Exception):
        Predictor.from_path(tmp_path)
