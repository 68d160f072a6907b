"""Image classifiers through every export kind: a tiny ViT (patch embedding = a Conv2d) and a tiny ResNet-style
ImageClassifier, exported from their directories with preprocessed images as examples."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from transformers import ViTConfig, ViTForImageClassification

from lit_compress.export import (
    ImageInputs,
    Predictor,
    TextInputs,
    export_model,
    inputs_for,
    read_manifest,
)
from lit_compress.export.parity import derived_parity_inputs

CHANNELS, SIZE, CLASSES = 1, 16, 4
ALL_FORMATS = ["torch-fp32", "onnx-fp32", "ort-dynamic-int8", "ort-static-int8", "ort-int4", "torch-dynamic-int8"]
ONNX_KINDS = ["onnx-fp32", "ort-dynamic-int8", "ort-static-int8", "ort-int4"]


def images(n: int, seed: int) -> torch.Tensor:
    """``n`` preprocessed images (C, H, W): a class-dependent pattern (``i % 4``: horizontal, vertical or
    diagonal stripes, a centred blob) plus noise."""
    gen = torch.Generator().manual_seed(seed)
    grid = torch.linspace(-1, 1, SIZE)
    y, x = torch.meshgrid(grid, grid, indexing="ij")
    patterns = [torch.sin(6 * y), torch.sin(6 * x), torch.sin(6 * (x + y)), 2 * torch.exp(-(x**2 + y**2) / 0.2) - 1]
    noise = 0.3 * torch.randn(n, CHANNELS, SIZE, SIZE, generator=gen)
    return torch.stack([patterns[i % CLASSES].expand(CHANNELS, SIZE, SIZE) for i in range(n)]) + noise


def fitted(model: torch.nn.Module, steps: int = 40) -> torch.nn.Module:
    """``model`` fitted to the blob position (``i % 4``), so its decisions have margins that int8 noise should
    not flip (a random model's near-ties would make agreement tests meaningless)."""
    x, y = images(64, seed=9), torch.arange(64) % CLASSES
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(pixel_values=x).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def tiny_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    config = ViTConfig(image_size=SIZE, patch_size=4, num_channels=CHANNELS, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=64, num_labels=CLASSES)  # fmt: skip
    model = ViTForImageClassification(config).eval()
    return fitted(model)


def tiny_cnn(arch: str = "resnet18") -> torch.nn.Module:
    from lit_compress.vision.classifier import CNNClassifier

    torch.manual_seed(0)
    model = CNNClassifier(arch=arch, width=4, width_mult=0.25, num_channels=CHANNELS, image_size=SIZE,
                          num_labels=CLASSES).eval()  # fmt: skip
    return fitted(model)


#: ViT (Linear-dominated, a Conv patch embedding) and a ResNet-18-style CNN (BatchNorm folded into its convs)
BUILDERS = {"vit": tiny_vit, "cnn": tiny_cnn}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """(model, model directory, export directory) with every kind asked for."""
    model = BUILDERS[request.param]()
    model_dir = tmp_path_factory.mktemp(request.param) / "model"
    model.save_pretrained(model_dir)
    out = model_dir.parent / "export"
    export_model(str(model_dir), str(out), formats=ALL_FORMATS, calibration_examples=images(16, seed=1),
                 parity_examples=images(24, seed=2))  # fmt: skip
    return request.param, model, model_dir, out


def produced(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def test_every_onnx_kind_loads_in_ort_with_a_dynamic_batch_of_pixel_values(exported) -> None:
    name, model, _, out = exported
    kinds = [k for k in ONNX_KINDS if k in produced(out)["artifacts"]]
    assert kinds[:3] == ["onnx-fp32", "ort-dynamic-int8", "ort-static-int8"]
    for kind in kinds:
        session = ort.InferenceSession(str(out / kind / "model.onnx"), providers=["CPUExecutionProvider"])
        (graph_input,) = session.get_inputs()
        assert graph_input.name == "pixel_values" and graph_input.shape == ["batch", CHANNELS, SIZE, SIZE]
        for batch in (1, 3):
            logits = session.run(["logits"], {"pixel_values": images(batch, seed=5).numpy()})[0]
            assert logits.shape == (batch, CLASSES)


def test_fp32_parity_is_within_1e_4_on_fresh_images(exported) -> None:
    _, model, _, out = exported
    manifest = read_manifest(out / "onnx-fp32")
    assert manifest["parity"]["passed"] and manifest["parity"]["max_abs_diff"] <= 1e-4
    session = ort.InferenceSession(str(out / "onnx-fp32" / "model.onnx"), providers=["CPUExecutionProvider"])
    x = images(7, seed=11)
    with torch.no_grad():
        expected = model(pixel_values=x).logits.numpy()
    np.testing.assert_allclose(session.run(["logits"], {"pixel_values": x.numpy()})[0], expected, atol=1e-4)


def test_int8_kinds_run_integer_conv_and_matmul_kernels(exported) -> None:
    name, _, _, out = exported
    dynamic = read_manifest(out / "ort-dynamic-int8")
    static = read_manifest(out / "ort-static-int8")
    assert dynamic["runs_int8"] and static["runs_int8"] and not dynamic["warnings"]
    compute_dynamic, compute_static = dynamic["kernels"]["int8_compute"], static["kernels"]["int8_compute"]
    assert "Conv" in dynamic["quantization"]["op_types"]  # dynamic_int8_reference simulates ConvInteger
    assert compute_dynamic.get("ConvInteger", 0) >= 1
    assert compute_static.get("QLinearConv", 0) >= 1  # QDQ Conv fused by ORT
    assert read_manifest(out / "onnx-fp32")["kernels"]["float_conv"] >= 1 and static["kernels"]["float_conv"] == 0
    if name == "vit":
        assert compute_dynamic.keys() & {"MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
        assert compute_static.get("QLinearMatMul", 0) >= 1
    # the dynamic kind is gated against its fake-quantized reference, on every parity image
    assert dynamic["parity"]["gated"] and dynamic["parity"]["passed"] and dynamic["parity"]["texts"] == 24


def test_manifests_say_the_input_kind_and_shape(exported) -> None:
    name, _, _, out = exported
    index = produced(out)
    expected = {"kind": "image", "names": ["pixel_values"], "dtype": "float32",
                "shape": {"pixel_values": ["batch", CHANNELS, SIZE, SIZE]}}  # fmt: skip
    assert index["inputs"] == expected
    for kind in index["artifacts"]:
        assert read_manifest(out / kind)["inputs"] == expected
    assert read_manifest(out / "ort-static-int8")["quantization"]["calibration_examples"] == 16
    assert read_manifest(out / "ort-dynamic-int8")["quantization"]["embedding_storage"] == "fp32"  # no tables


def test_kinds_that_do_not_apply_to_a_cnn_are_skipped_with_the_reason(exported) -> None:
    name, _, _, out = exported
    skipped = produced(out)["skipped"]
    if name == "vit":  # Linear-dominated, MatMul weights: everything applies
        assert "ort-int4" in produced(out)["artifacts"] and "torch-dynamic-int8" in produced(out)["artifacts"]
        assert read_manifest(out / "ort-int4")["kernels"]["int8_compute"].get("MatMulNBits", 0) >= 1
        return
    assert set(skipped) == {"ort-int4", "torch-dynamic-int8"}
    assert "neither" in skipped["ort-int4"] and "convolutions" in skipped["torch-dynamic-int8"]
    assert not (out / "ort-int4").exists() and not (out / "torch-dynamic-int8").exists()


def test_predictor_on_an_artifact_directory_alone_matches_torch(exported, tmp_path: Path) -> None:
    _, model, _, out = exported
    x = images(32, seed=13)
    with torch.no_grad():
        expected = model(pixel_values=x).logits.argmax(-1).numpy()
    assert len(set(expected.tolist())) > 1, "the test needs a model whose prediction depends on the image"
    for kind in produced(out)["artifacts"]:
        alone = tmp_path / kind
        shutil.copytree(out / kind, alone)  # nothing outside the artifact directory
        predictor = Predictor.from_path(alone)
        assert isinstance(predictor.inputs, ImageInputs) and predictor.inputs.shape == (CHANNELS, SIZE, SIZE)
        predicted = predictor.logits(x).argmax(-1)
        agreement = float(np.mean(predicted == expected))
        assert agreement == 1.0 if kind in ("torch-fp32", "onnx-fp32") else agreement >= 0.9, (kind, agreement)
        single = predictor(x[0])
        assert len(single) == 1 and single[0]["label"] == model.config.id2label[int(expected[0])]


def test_inputs_for_tells_images_from_texts(exported, tmp_path: Path) -> None:
    _, model, model_dir, _ = exported
    assert isinstance(inputs_for(model_dir), ImageInputs) and isinstance(inputs_for(model), ImageInputs)
    from tests.conftest import word_tokenizer

    from lit_compress.models.tiny import tiny_bert

    text = inputs_for(tiny_bert(seed=0), tokenizer=word_tokenizer(["news", "sport"]), max_length=16)
    assert isinstance(text, TextInputs) and text.names == ("input_ids", "attention_mask") and text.max_length == 16
    with pytest.raises(ValueError, match="needs its tokenizer"):
        inputs_for(tiny_bert(seed=0))


def test_image_inputs_encode_batches_and_refuse_wrong_shapes() -> None:
    inputs = ImageInputs(CHANNELS, SIZE)
    x = images(5, seed=3)
    assert inputs.encode(x[0])["pixel_values"].shape == (1, CHANNELS, SIZE, SIZE)
    assert torch.equal(inputs.encode(list(x))["pixel_values"], x)
    assert inputs.encode(x, "np")["pixel_values"].dtype == np.float32
    assert [b["pixel_values"].shape[0] for b in inputs.parity_batches(x)] == [1, 4, 8]
    assert [b["pixel_values"].shape[0] for b in inputs.batches(x, 2)] == [2, 2, 1]
    with pytest.raises(ValueError, match=r"float \(C, H, W\) = \(1, 16, 16\); got .* shape \(2, 3, 16, 16\)"):
        inputs.encode(torch.zeros(2, 3, SIZE, SIZE))
    with pytest.raises(ValueError, match="got torch.int64"):
        inputs.encode(torch.zeros(1, CHANNELS, SIZE, SIZE, dtype=torch.long))
    with pytest.raises(ValueError, match="Preprocess images to float tensors first"):
        inputs.encode("a text")


def test_derived_parity_images_vary_the_batch_size_only() -> None:
    sample = ImageInputs(3, (8, 12)).sample()
    shapes = [tuple(b["pixel_values"].shape) for b in derived_parity_inputs(sample)]
    assert tuple(sample["pixel_values"].shape) == (2, 3, 8, 12)
    assert shapes == [(1, 3, 8, 12), (3, 3, 8, 12), (2, 3, 8, 12)]


def test_mobilenet_v2_depthwise_convs_run_as_integer_kernels(tmp_path: Path) -> None:
    from lit_compress.vision.classifier import CNNClassifier

    torch.manual_seed(0)
    model = CNNClassifier(arch="mobilenet_v2", width_mult=0.25, num_channels=CHANNELS, image_size=SIZE,
                          num_labels=CLASSES).eval()  # fmt: skip
    depthwise = sum(1 for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1)
    model.save_pretrained(tmp_path / "model")
    export_model(str(tmp_path / "model"), str(tmp_path / "out"), formats=["ort-dynamic-int8", "ort-static-int8"],
                 calibration_examples=images(8, seed=1), parity_examples=images(8, seed=2))  # fmt: skip
    convs = sum(1 for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    dynamic = read_manifest(tmp_path / "out" / "ort-dynamic-int8")
    static = read_manifest(tmp_path / "out" / "ort-static-int8")
    assert depthwise > 0 and dynamic["kernels"]["int8_compute"]["ConvInteger"] == convs
    assert static["kernels"]["int8_compute"]["QLinearConv"] == convs and static["kernels"]["float_conv"] == 0
    assert dynamic["parity"]["gated"] and dynamic["parity"]["passed"]  # depthwise ConvInteger = its reference
