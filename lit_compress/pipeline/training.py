"""Trainer plumbing shared by the pipeline's training stages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger

from lit_compress.data.datamodule import TextClassificationDataModule
from lit_compress.pipeline.config import DataConfig, TrainConfig


def make_datamodule(data: DataConfig, tokenizer: str) -> TextClassificationDataModule:
    """The run's datamodule, tokenizing with ``tokenizer`` (a model directory or name)."""
    return TextClassificationDataModule(
        dataset=data.dataset,
        dataset_config=data.dataset_config,
        data_files=data.data_files,
        text_column=data.text_column,
        label_column=data.label_column,
        text_mode=data.text_mode,
        tokenizer=tokenizer,
        max_length=data.max_length,
        batch_size=data.batch_size,
        num_workers=data.num_workers,
        seed=data.seed,
    )


def make_trainer(train: TrainConfig, out_dir: Path, callbacks: list[Callback] | None = None, **kwargs: Any) -> L.Trainer:
    """A Trainer that logs CSV metrics into ``out_dir/logs`` and keeps no checkpoints of its own."""
    defaults: dict[str, Any] = {
        "max_epochs": train.epochs,
        "max_steps": train.max_steps,
        "accelerator": "auto",
        "devices": 1,
        "logger": CSVLogger(str(out_dir), name="logs"),
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "log_every_n_steps": 10,
        "callbacks": callbacks or [],
    }
    defaults.update(kwargs)
    return L.Trainer(**defaults)


def test_metrics(trainer: L.Trainer, module: L.LightningModule, dm: L.LightningDataModule) -> dict[str, float]:
    """Accuracy and macro-F1 on the test split, as plain floats."""
    out = trainer.test(module, datamodule=dm, verbose=False)[0]
    return {"accuracy": float(out["test/acc"]), "macro_f1": float(out["test/f1"])}
