"""ONNX export: round trip with dynamic axes, padding, parity gate, exporter fallback, atomic writes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from lit_compress.export import LogitsOnly, ParityError, check_parity, export_onnx, read_export_metadata
from lit_compress.export import onnx as onnx_module


@pytest.fixture(scope="module")
def fp32_path(exported):
    return exported / "onnx-fp32" / "model.onnx"


def _ort_logits(path, batch):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {k: v.numpy() for k, v in batch.items()})[0]


@pytest.mark.parametrize("rows, cols", [(1, 3), (3, 17), (9, 40), (16, 64)])
def test_round_trip_other_batch_sizes_and_lengths_with_padding(fp32_path, model_dir, rows, cols):
    from lit_compress.models.io import load_model_dir

    model = load_model_dir(model_dir)
    gen = torch.Generator().manual_seed(rows * cols)
    ids = torch.randint(5, 40, (rows, cols), generator=gen)
    mask = torch.ones_like(ids)
    for r in range(1, rows):  # right padding of different lengths
        mask[r, 1 + r % cols :] = 0
    ids = ids.masked_fill(mask == 0, 0)
    batch = {"input_ids": ids, "attention_mask": mask}
    expected = model(**batch).logits.detach().numpy()
    np.testing.assert_allclose(_ort_logits(fp32_path, batch), expected, atol=1e-4, rtol=0)


def test_padding_does_not_change_a_rows_logits(fp32_path, tokenizer, texts):
    short, long_ = texts[0], texts[4]
    alone = tokenizer([short], return_tensors="pt")
    padded = tokenizer([short, long_], padding=True, return_tensors="pt")
    assert padded["attention_mask"][0].eq(0).any(), "the short text must be padded in the pair"
    a = _ort_logits(fp32_path, {k: alone[k] for k in ("input_ids", "attention_mask")})
    b = _ort_logits(fp32_path, {k: padded[k] for k in ("input_ids", "attention_mask")})
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)


def test_graph_is_self_contained_with_dynamic_axes_and_logits_only(fp32_path):
    proto = onnx.load(str(fp32_path), load_external_data=False)
    assert [i.name for i in proto.graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    for value in proto.graph.input:
        assert [d.dim_param for d in value.type.tensor_type.shape.dim] == ["batch", "sequence"]
    assert not list(fp32_path.parent.glob("*.data")), "weights must be inside the .onnx file"
    assert len(proto.graph.value_info) == 0 and not any(n.metadata_props for n in proto.graph.node)
    meta = read_export_metadata(fp32_path)
    assert meta["exporter"] == "dynamo" and meta["opset"] == 20
    assert meta["id2label"] == {"0": "label_0", "1": "label_1", "2": "label_2"}
    assert meta["parity"]["passed"] and meta["parity"]["max_abs_diff"] <= 1e-4


def test_parity_gate_catches_a_weight_perturbed_after_export(fp32_path, model_dir, batch):
    from lit_compress.models.io import load_model_dir

    model = load_model_dir(model_dir)
    assert check_parity(LogitsOnly(model), fp32_path, [batch])["passed"]
    with torch.no_grad():
        model.classifier.bias[1] += 0.01
    with pytest.raises(ParityError, match=r"max \|Δlogit\| = 1\.00\de-02 > atol 1e-04, at parity input #0 "
                                          r"\(shape 5x\d+\), row \d \(\d+ padding tokens\), logit 1"):
        check_parity(LogitsOnly(model), fp32_path, [batch])


class _ExportOnlyShift(torch.nn.Module):
    """Adds 1 to the logits only while being exported (traced): eager and exported graphs disagree."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        exporting = torch.compiler.is_exporting() or torch.jit.is_tracing()
        return logits + 1.0 if exporting else logits


def test_failed_gate_leaves_no_file(tmp_path, make_model, batch):
    target = tmp_path / "model.onnx"
    with pytest.raises(ParityError, match=r"max \|Δlogit\| = 1\.000e\+00"):
        export_onnx(_ExportOnlyShift(make_model()), target, batch, exporter="legacy")
    assert not target.exists() and not list(tmp_path.iterdir())


def test_interrupted_write_leaves_no_file(tmp_path, make_model, batch, monkeypatch):
    def crash(proto, path, *args, **kwargs):
        open(path, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(onnx, "save_model", crash)
    target = tmp_path / "model.onnx"
    with pytest.raises(OSError, match="disk full"):
        export_onnx(make_model(), target, batch, exporter="legacy")
    assert not list(tmp_path.iterdir())


def test_fallback_to_legacy_exporter_is_recorded(tmp_path, make_model, batch, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("unsupported op")

    monkeypatch.setattr(onnx_module, "_export_dynamo", broken)
    model = make_model().train()
    path = export_onnx(model, tmp_path / "model.onnx", batch)
    meta = read_export_metadata(path)
    assert meta["exporter"] == "legacy" and "unsupported op" in meta["dynamo_error"] and meta["opset"] == 17
    assert meta["parity"]["passed"]
    assert model.training, "the caller's train/eval mode is restored"
    with pytest.raises(RuntimeError, match="unsupported op"):
        export_onnx(model, tmp_path / "other.onnx", batch, exporter="dynamo")


def test_bad_sample_inputs_are_named(make_model, tmp_path, batch):
    with pytest.raises(ValueError, match=r"must hold 'input_ids' and 'attention_mask'.*'labels'"):
        export_onnx(make_model(), tmp_path / "m.onnx", {**batch, "labels": torch.zeros(5)})


@pytest.mark.parametrize("eager", [True, False])
def test_attention_is_exported_eager_and_the_models_setting_restored(tmp_path, make_model, batch, eager):
    """SDPA's export carries mask plumbing (IsNaN/Where on the scores); the eager export has none."""
    model = make_model()
    model.set_attn_implementation("sdpa")
    path = export_onnx(model, tmp_path / "m.onnx", batch, eager_attention=eager)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert ("IsNaN" in ops) is not eager and "Softmax" in ops
    assert model.config._attn_implementation == "sdpa"
    expected = model(**batch).logits.detach().numpy()
    np.testing.assert_allclose(_ort_logits(path, batch), expected, atol=1e-4, rtol=0)
