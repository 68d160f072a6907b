"""Fixtures of the tune tests: a tiny ``lit-compress fit`` recipe (tiny BERT teacher, synthetic CSV data)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml


def tiny_recipe_dict(csv_files: dict[str, str], model_dir: Path) -> dict[str, Any]:
    """A distillation recipe that trains in about a second on CPU."""
    return {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "max_epochs": 2, "logger": False, "enable_checkpointing": False,
                    "enable_progress_bar": False, "enable_model_summary": False},
        "model": {"class_path": "lit_compress.distill.DistillationModule",
                  "init_args": {"teacher": str(model_dir), "student_layers": [1], "alpha": 0.5, "temperature": 2.0,
                                "lr": 1.0e-3}},
        "data": {"class_path": "lit_compress.data.TextClassificationDataModule",
                 "init_args": {"dataset": "local", "data_files": dict(csv_files), "tokenizer": str(model_dir),
                               "batch_size": 8, "max_length": 16}},
    }  # fmt: skip


@pytest.fixture()
def tiny_recipe(tmp_path: Path, csv_files: dict[str, str], tiny_model_dir: Path) -> Path:
    """Path of the tiny recipe YAML."""
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict(csv_files, tiny_model_dir), sort_keys=False))
    return path

