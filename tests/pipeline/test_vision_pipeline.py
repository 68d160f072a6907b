"""The main job on images, a few optimizer steps per stage, for a tiny CNN and a tiny ViT on synthetic images:
teacher (trained from scratch) → student (narrower CNN / ViT from teacher layers) → structured pruning (CNN
channels with Torch-Pruning; ViT heads and MLP) → QAT (dynamic, static; Conv2d and Linear) → export → int8
kernels → benchmark, then the pruned model reloaded from its directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lit_compress.bench.suite import BenchmarkSettings
from lit_compress.models.io import load_model_dir
from lit_compress.pipeline import BenchmarkOptions, run_pipeline

pytest.importorskip("PIL")
CLASSES = ("disc", "bar", "cross")
SIZE = 16


def _image(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A 16x16 grey image of a shape class at a random offset, with noise (learnable in a few steps)."""
    img = rng.normal(40, 20, (SIZE, SIZE))
    dy, dx = rng.integers(-2, 3, size=2)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    cy, cx = SIZE // 2 + dy, SIZE // 2 + dx
    if kind == "disc":
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= 16] = 220
    elif kind == "bar":
        img[max(0, cy - 1) : cy + 2, 2:-2] = 220
    else:
        img[cy, 2:-2] = 220
        img[2:-2, cx] = 220
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``train/<class>/*.png`` (40 per class) and ``test/<class>/*.png`` (12 per class)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 12)):
        for kind in CLASSES:
            (root / split / kind).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(_image(kind, rng), mode="L").save(root / split / kind / f"{i}.png")
    return root


def _cnn(width: int) -> dict:
    return {"class_path": "lit_compress.vision.CNNClassifier",
            "init_args": {"arch": "resnet18", "width": width, "num_channels": 1, "image_size": SIZE, "num_labels": 3}}


VIT = {"class_path": "lit_compress.vision.ViTClassifier",
       "init_args": {"image_size": SIZE, "patch_size": 4, "num_channels": 1, "hidden_size": 32, "num_hidden_layers": 4,
                     "num_attention_heads": 4, "intermediate_size": 64, "num_labels": 3}}  # fmt: skip


def vision_run(folder: Path, family: str) -> dict:
    trainer = {"max_epochs": 3, "max_steps": 8, "accelerator": "cpu", "enable_progress_bar": False,
               "enable_checkpointing": False, "enable_model_summary": False, "num_sanity_val_steps": 0}
    if family == "cnn":
        teacher, distill = _cnn(16), {"student": _cnn(8)}
        pruning = {"class_path": "lit_compress.prune.ChannelPruning", "init_args": {"channel_pruning_ratio": 0.5}}
    else:
        teacher, distill = VIT, {"student_layers": [0, 3]}
        pruning = {"class_path": "lit_compress.prune.StructuredPruning",
                   "init_args": {"head_pruning_ratio": 0.5, "ffn_pruning_ratio": 0.5}}
    data = {"class_path": "lit_compress.vision.ImageClassificationDataModule",
            "init_args": {"dataset": f"folder:{folder}", "image_size": SIZE, "channels": 1, "val_size": 24,
                          "batch_size": 16}}  # fmt: skip
    return {
        "defaults": {"seed_everything": 42, "data": data, "model": {"init_args": {"lr": 2e-3}}, "trainer": trainer},
        "teacher": {"model": {"init_args": {"model": teacher, "lr": 2e-3}}},
        "distill": {"model": {"init_args": distill}},
        "prune": {"trainer": {"callbacks": [pruning]}},
        "qat": {"schemes": ["dynamic", "static"], "model": {"init_args": {"lr": 1e-4}},
                "trainer": {"max_steps": 4, "max_epochs": 1}},
        "export": {"formats": ["onnx-fp32", "ort-dynamic-int8", "ort-static-int8"], "per_channel": True},
        "benchmark": BenchmarkOptions(BenchmarkSettings(runs=3, warmup=1, batch_sizes=(1,), throughput_runs=1)),
    }


@pytest.mark.parametrize("family", ["cnn", "vit"])
def test_main_job_on_images(family: str, image_folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    results = run_pipeline(run_dir=str(run), **vision_run(image_folder, family))

    assert results.pruned is not None and results.pruned.vocabulary == {}
    student, pruned = load_model_dir(results.student.model_dir), load_model_dir(results.pruned.model_dir)
    n_student = sum(p.numel() for p in student.parameters())
    n_pruned = sum(p.numel() for p in pruned.parameters())
    assert n_pruned < 0.75 * n_student  # the cuts shrank the tensors, not masked them
    if family == "vit":
        assert results.pruned.architecture["num_heads"] == [2, 2]
        assert results.pruned.architecture["intermediate_sizes"] == [32, 32]
    else:
        assert results.pruned.architecture["layer_shapes"]  # recorded channel counts of the cut layers
    x = torch.randn(2, 1, SIZE, SIZE)
    again = load_model_dir(results.pruned.model_dir)
    with torch.no_grad():
        assert torch.equal(pruned(pixel_values=x).logits, again(pixel_values=x).logits)

    assert [q.scheme for q in results.quantized] == ["dynamic", "static"]
    for artifact in ("student/onnx-fp32", "pruned/onnx-fp32"):
        manifest = json.loads((run / "export" / artifact / "manifest.json").read_text())
        assert manifest["parity"]["max_abs_diff"] <= 1e-4
    for artifact in ("student/ort-dynamic-int8", "pruned/ort-dynamic-int8", "pruned/ort-static-int8",
                     "qat_dynamic/ort-dynamic-int8"):
        manifest = json.loads((run / "export" / artifact / "manifest.json").read_text())
        assert manifest["kernels"]["runs_int8"], f"{family} {artifact} computes in float"
    static = json.loads((results.quantized[1].artifact.parent / "manifest.json").read_text())
    assert static["kernels"]["runs_int8"]
    if family == "cnn":  # the convolutions themselves run on integers
        ops = static["kernels"]["int8_compute"]
        assert any(op in ops for op in ("QLinearConv", "ConvInteger")), ops

    bench = json.loads((run / "benchmark" / "benchmark.json").read_text())
    names = [row["name"] for row in bench["rows"]]
    assert names[0] == "teacher torch fp32" and results.final is not None and results.final.name in names
    assert not any("trimmed" in name for name in names)
    assert (run / "results.md").read_text().count("|") > 10
