"""Trainer plumbing shared by the pipeline's training stages."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities.warnings import PossibleUserWarning

from lit_compress.pipeline.recipes import (
    deep_merge,
    instantiate,
    instantiate_datamodule,
    recipe_callbacks,
    takes_argument,
    with_callbacks,
    write_recipe,
)


def make_datamodule(data: Mapping[str, Any], tokenizer: str) -> Any:
    """The run's datamodule (a recipe's ``data`` section), tokenizing with ``tokenizer`` (a model directory or name)."""
    return instantiate_datamodule(with_tokenizer(data, tokenizer))


def with_tokenizer(data: Mapping[str, Any], tokenizer: str) -> dict[str, Any]:
    """A copy of the ``data`` section whose ``init_args.tokenizer`` is ``tokenizer`` (text datamodules; a datamodule
    that takes no tokenizer, such as the image one, is returned as is)."""
    if not takes_argument(data, "tokenizer"):
        return dict(data)
    return deep_merge(data, {"init_args": {"tokenizer": str(tokenizer)}})


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


def with_stage_outputs(recipe: Mapping[str, Any], out_dir: Path) -> dict[str, Any]:
    """A copy of ``recipe`` whose Trainer writes into ``out_dir``: ``default_root_dir``, and CSV metrics in
    ``out_dir/logs`` unless the recipe names a logger (offline, no account)."""
    logger = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(out_dir), "name": "logs"}}
    trainer = dict(recipe.get("trainer") or {})
    trainer.setdefault("default_root_dir", str(out_dir))
    trainer.setdefault("logger", logger)
    return {**recipe, "trainer": trainer}


CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"


def with_checkpoints(recipe: Mapping[str, Any], out_dir: Path, every_n_steps: int) -> dict[str, Any]:
    """A copy of ``recipe`` that keeps ``out_dir/checkpoints/last.ckpt`` every ``every_n_steps`` optimizer steps
    (Lightning's ``ModelCheckpoint``, written atomically) with the random state in it
    and the loader's position (:class:`~lit_compress.utils.resume.ExactResume`), so a killed stage can continue; 0: as is."""
    if every_n_steps <= 0:
        return dict(recipe)
    callbacks = recipe_callbacks(recipe)
    checkpoint = {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                  "init_args": {"dirpath": str(out_dir / CHECKPOINTS), "save_last": True, "save_top_k": 0,
                                "every_n_train_steps": every_n_steps, "enable_version_counter": False}}  # fmt: skip
    state = {"class_path": "lit_compress.utils.resume.ExactResume"}
    return with_callbacks(recipe, [*callbacks, state, checkpoint], enable_checkpointing=True)


def fit_recipe(recipe: Mapping[str, Any], out_dir: Path, stage: str, *, fit: bool = True,
               resume: bool = False) -> tuple[Any, dict[str, float]]:  # fmt: skip
    """Write ``recipe`` as ``out_dir/recipe.yaml``, build it as ``lit-compress fit --config`` would, fit, test.

    With ``resume`` and a ``checkpoints/last.ckpt`` left by an interrupted fit of this stage, the fit continues
    from it (``ckpt_path``) instead of starting over.

    Returns:
        The LightningCLI object (``.model``, ``.datamodule``, ``.trainer``) and the validation metrics.
    """
    write_recipe(out_dir / "recipe.yaml", recipe, stage)
    quiet_lightning()
    cli = instantiate(recipe)
    if fit:
        last = out_dir / CHECKPOINTS / LAST
        ckpt_path = str(last) if resume and last.is_file() else None
        if ckpt_path:
            print(f"[{stage}] continuing from {last} (resume)")
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
    return cli, validation_metrics(cli.trainer, cli.model, cli.datamodule)


def validation_metrics(trainer: L.Trainer, module: L.LightningModule, dm: L.LightningDataModule) -> dict[str, float]:
    """Accuracy and macro-F1 of the stage's final model on the validation split, as plain floats.

    The test split is read once per run, by the benchmark stage, for the report; nothing else in the main job
    evaluates on it.
    """
    out = trainer.validate(module, datamodule=dm, verbose=False)[0]
    return {"val_accuracy": float(out["val/acc"]), "val_macro_f1": float(out["val/f1"])}


def gate_examples(dm: Any, minimum: int = 256) -> list[Any]:
    """The examples (texts, or preprocessed images) int8 artifacts are gated on: the validation split of ``dm``,
    topped up from the training split (in order) when it holds fewer than ``minimum`` (agreement needs enough
    examples; never the test split)."""
    examples = list(dm.examples("validation"))
    return examples + list(dm.examples("train")[: max(0, minimum - len(examples))])


def datamodule_tokenizer(dm: Any) -> Any:
    """The datamodule's tokenizer, or ``None`` for data that is not tokenized (images)."""
    return dm.tokenizer if hasattr(type(dm), "tokenizer") else None
