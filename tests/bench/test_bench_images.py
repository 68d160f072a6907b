"""run_benchmark on image variants: a tiny ViT's torch fp32 directory (the teacher row), its ONNX fp32 and ORT
dynamic int8 artifacts, measured on preprocessed images through the same predictors as texts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import ViTConfig, ViTForImageClassification

from lit_compress.bench import BenchmarkSettings, Variant, read_selection, run_benchmark
from lit_compress.export import Predictor, export_model

FAST = BenchmarkSettings(runs=6, warmup=1, batch_sizes=(1, 4), throughput_runs=2, eval_batch_size=8, progress=False)
CHANNELS, SIZE, CLASSES = 3, 8, 3


def images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, CHANNELS, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def vit_variants(tmp_path_factory: pytest.TempPathFactory) -> list[Variant]:
    torch.manual_seed(0)
    config = ViTConfig(image_size=SIZE, patch_size=4, num_channels=CHANNELS, hidden_size=16, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=32, num_labels=CLASSES)  # fmt: skip
    model = ViTForImageClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(40.0)
    root = tmp_path_factory.mktemp("vit")
    model.save_pretrained(root / "teacher")
    export_model(str(root / "teacher"), str(root / "export"), formats=["onnx-fp32", "ort-dynamic-int8"],
                 parity_examples=images(8, seed=1), exporter="legacy")  # fmt: skip
    return [Variant("teacher torch fp32", str(root / "teacher")),
            Variant("ViT ORT fp32", str(root / "export" / "onnx-fp32")),
            Variant("ViT ORT dynamic int8", str(root / "export" / "ort-dynamic-int8"))]  # fmt: skip


def test_run_benchmark_on_images_reports_and_chooses(vit_variants: list[Variant], tmp_path: Path) -> None:
    test_x, val_x = images(12, seed=2), images(10, seed=3)
    teacher = Predictor.from_path(vit_variants[0].path)
    test_y = teacher.logits(test_x).argmax(-1).tolist()  # the teacher's own labels: accuracy 1 by construction
    val_y = [(y + i) % CLASSES for i, y in enumerate(teacher.logits(val_x).argmax(-1).tolist())]
    paths = run_benchmark(vit_variants, test_x, test_y, str(tmp_path), settings=FAST,
                          selection_examples=list(val_x), selection_labels=val_y, accuracy_budget=100.0)  # fmt: skip
    report = json.loads(paths["json"].read_text())
    rows = {r["name"]: r for r in report["rows"]}
    assert list(rows) == [v.name for v in vit_variants]
    assert [rows[v.name]["kind"] for v in vit_variants] == ["torch", "onnx-fp32", "ort-dynamic-int8"]
    for variant in vit_variants:
        row = rows[variant.name]
        predicted = Predictor.from_path(variant.path).logits(val_x).argmax(-1)
        assert row["val_accuracy"] == pytest.approx(float(np.mean(predicted == np.asarray(val_y))))
        assert row["n_eval"] == 12 and row["n_val"] == 10 and row["latency_runs"] == FAST.runs
        assert 0 < row["latency_p50_ms"] <= row["latency_p99_ms"] and row["throughput_bs4"] > 0
        assert row["size_bytes"] > 0 and row["parameters"] > 0
    assert rows["teacher torch fp32"]["accuracy"] == 1.0
    assert rows["ViT ORT fp32"]["accuracy"] == 1.0  # fp32 parity: the same classes as torch
    selection = read_selection(paths["json"])
    assert selection is not None and selection.chosen in {"ViT ORT fp32", "ViT ORT dynamic int8"}
    assert selection.chosen in paths["markdown"].read_text() and paths["plot"].stat().st_size > 0
    assert report["meta"]["machine"]["cpus"] and "int8_flags" in report["meta"]["machine"]


class ImageData:
    """The datamodule protocol the Benchmark callback reads for images: examples(split), labels(split)."""

    label_names = ["a", "b", "c"]

    def __init__(self) -> None:
        self.x = images(12, seed=4)

    def examples(self, split: str) -> list[torch.Tensor]:
        return list(self.x) if split != "train" else list(images(8, seed=5))

    def labels(self, split: str) -> list[int]:
        return [i % CLASSES for i in range(len(self.x))]


def test_benchmark_callback_exports_and_measures_an_image_student(tmp_path: Path) -> None:
    import lightning as L

    from lit_compress.bench import Benchmark

    torch.manual_seed(0)
    config = ViTConfig(image_size=SIZE, patch_size=4, num_channels=CHANNELS, hidden_size=16, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=32, num_labels=CLASSES)  # fmt: skip
    module = L.LightningModule()
    module.student = ViTForImageClassification(config).eval()
    module.compression_target = module.student
    trainer = L.Trainer(logger=False, enable_progress_bar=False, accelerator="cpu")
    trainer.datamodule = ImageData()  # type: ignore[misc]  (what fit(datamodule=...) would set)
    callback = Benchmark(str(tmp_path), formats=["onnx-fp32", "ort-dynamic-int8", "ort-static-int8"], settings=FAST,
                         export_options={"exporter": "legacy"})  # fmt: skip
    rows = callback.run(trainer, module)
    assert [r["name"] for r in rows] == ["student fp32 (torch)", "student ORT fp32", "student ORT dynamic int8",
                                         "student ORT static int8"]  # fmt: skip
    assert all(r["n_eval"] == 12 and r["latency_p50_ms"] > 0 for r in rows)
    assert rows[0]["accuracy"] == rows[1]["accuracy"]  # fp32 parity: same predictions as torch
