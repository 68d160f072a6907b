"""The Benchmark callback at the end of fit and test, with data from the datamodule or given explicitly."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lit_compress.bench import Benchmark, BenchmarkSettings
from lit_compress.models.tiny import tiny_bert

FAST = BenchmarkSettings(runs=3, warmup=1, batch_sizes=(1, 4), throughput_runs=1, progress=False)
LEGACY = {"exporter": "legacy"}  # export itself is covered by tests/export; legacy is fast


class TinyDistillation(L.LightningModule):
    """A minimal module shaped like DistillationModule: a trainable student and a frozen teacher."""

    def __init__(self, with_teacher: bool = True) -> None:
        super().__init__()
        self.student = tiny_bert(seed=0)
        self.teacher = tiny_bert(seed=1) if with_teacher else None

    @property
    def compression_target(self) -> torch.nn.Module:
        return self.student

    def training_step(self, batch, batch_idx):
        logits = self.student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return torch.nn.functional.cross_entropy(logits, batch["labels"])

    def configure_optimizers(self):
        return torch.optim.SGD(self.student.parameters(), lr=0.1)


class TextData(L.LightningDataModule):
    """The datamodule protocol the callback reads: texts(split), labels(split), label_names, tokenizer."""

    def __init__(self, tokenizer, texts, labels):
        super().__init__()
        self.tokenizer, self._texts, self._labels = tokenizer, texts, labels
        self.label_names = ["label_0", "label_1", "label_2"]

    def texts(self, split):
        return self._texts

    def labels(self, split):
        return self._labels

    def train_dataloader(self):
        enc = self.tokenizer(self._texts, padding=True, return_tensors="pt")
        rows = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                 "labels": torch.tensor(self._labels[i])} for i in range(len(self._texts))]  # fmt: skip
        return DataLoader(rows, batch_size=8)


def _trainer(callback):
    return L.Trainer(max_steps=2, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                     enable_model_summary=False, accelerator="cpu", callbacks=[callback])  # fmt: skip


def test_benchmark_after_fit_with_datamodule_data(tmp_path, tokenizer, texts, labels):
    formats = ["onnx-fp32", "ort-dynamic-int8", "ort-static-int8", "torch-dynamic-int8"]
    callback = Benchmark(str(tmp_path / "report"), settings=FAST, export_options=LEGACY, formats=formats)
    module = TinyDistillation()
    _trainer(callback).fit(module, datamodule=TextData(tokenizer, texts, labels))
    names = [r["name"] for r in callback.rows]
    assert names == ["teacher fp32 (torch)", "student fp32 (torch)", "student ORT fp32",
                     "student ORT dynamic int8", "student ORT static int8", "student torch dynamic int8"]
    report = json.loads((tmp_path / "report" / "benchmark.json").read_text())
    assert [r["baseline"] for r in report["rows"]] == ["teacher fp32 (torch)"] * 6
    assert report["meta"]["global_step"] == 2 and report["meta"]["settings"]["threads"] == 1
    assert (tmp_path / "report" / "benchmark.png").is_file() and (tmp_path / "report" / "benchmark.md").is_file()
    assert not (tmp_path / "report" / "artifacts").exists(), "artifacts live in a temporary directory"


def test_benchmark_after_test_with_explicit_data(tmp_path, tokenizer, texts, labels):
    class Testable(TinyDistillation):
        def test_step(self, batch, batch_idx):
            return None

    callback = Benchmark(str(tmp_path), on="test", examples=texts, labels=labels, tokenizer=tokenizer,
                         formats=["ort-dynamic-int8", "ort-static-int8"], settings=FAST, export_options=LEGACY,
                         keep_artifacts=True)  # fmt: skip
    trainer = _trainer(callback)
    with pytest.warns(UserWarning, match="skips ort-static-int8: no calibration examples"):
        trainer.test(Testable(with_teacher=False), dataloaders=DataLoader([{"input_ids": torch.zeros(1)}]))
    assert [r["name"] for r in callback.rows] == ["student fp32 (torch)", "student ORT dynamic int8"]
    assert (tmp_path / "artifacts" / "export" / "ort-dynamic-int8" / "manifest.json").is_file()


def test_misconfiguration_is_explained(tmp_path, texts):
    with pytest.raises(ValueError, match=r"formats \['torch-fp32'\] are not exportable"):
        Benchmark(formats=["torch-fp32"])
    with pytest.raises(ValueError, match="Pass both examples and labels"):
        Benchmark(examples=texts)
    callback = Benchmark(str(tmp_path), settings=FAST)
    with pytest.raises(RuntimeError, match="needs evaluation data"):
        callback.benchmark_data(L.Trainer(logger=False, enable_progress_bar=False))
