"""Trainer plumbing shared by the pipeline's training stages."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.warnings import PossibleUserWarning

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


#: Loggers of Lightning's ``rank_zero_info`` (the pytorch one is used at runtime; fabric's is the fallback).
_RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


def _drop_tips(record: logging.LogRecord) -> bool:
    """Drop Lightning's advertisement lines ("💡 Tip: ... try installing litlogger / litmodels") and the
    per-Trainer device census ("GPU available: False, used: False"; the stages use ``accelerator="auto"``)."""
    return not record.getMessage().startswith(("💡 Tip:", "GPU available:", "TPU available:", "HPU available:"))


def quiet_lightning() -> None:
    """Silence what Lightning says on every pipeline stage that is known to be harmless there.

    - "Found N module(s) in eval mode at the start of training": the frozen teacher of every distillation
      stage is in eval mode on purpose (no dropout in its targets); ``CompressionModule.on_fit_start`` puts
      the trained modules in train mode and ``DistillationModule.train`` keeps only the teacher in eval.
    - "`isinstance(treespec, LeafSpec)` is deprecated": Lightning's own use of a torch API that torch 2.13
      deprecates; nothing for a user to change.
    - "💡 Tip: ... litlogger" (once per Trainer, because the stages log to CSV on purpose: offline, no account).
    - "GPU available: False, used: False" / "TPU available: ..." (once per Trainer; the stages pick the
      accelerator with ``accelerator="auto"``).
    """
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training",
                            category=PossibleUserWarning)
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
    for name in _RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if _drop_tips not in logger.filters:
            logger.addFilter(_drop_tips)


def make_trainer(train: TrainConfig, out_dir: Path, callbacks: list[Callback] | None = None, **kwargs: Any) -> L.Trainer:
    """A Trainer that logs CSV metrics into ``out_dir/logs`` and keeps no checkpoints of its own.

    The model summary is off and the harmless per-stage warnings are filtered (:func:`quiet_lightning`), so
    a run shows the progress bars and one line per finished stage.
    """
    quiet_lightning()
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


def gate_texts(dm: Any, minimum: int = 256) -> list[str]:
    """The texts int8 artifacts are gated on: the validation split of ``dm``, topped up from the training split
    (in order) when it holds fewer than ``minimum`` (agreement needs enough texts; never the test split)."""
    texts = dm.texts("validation")
    return texts + dm.texts("train")[: max(0, minimum - len(texts))]
