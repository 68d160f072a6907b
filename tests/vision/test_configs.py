from __future__ import annotations

from pathlib import Path

import pytest

from lit_compress.cli import trainer_cli
from lit_compress.prune import GradualPruning, LotteryTicket, PolynomialDecay
from lit_compress.vision import LeNetModule, MNISTDataModule

VISION = Path(__file__).resolve().parents[2] / "configs" / "vision"
#: The main job's recipes for vision (``lit-compress pipeline --config``); the others are ``fit`` configs.
PIPELINES = sorted(VISION.glob("fashion_mnist_*.yaml"))
CONFIGS = sorted(set(VISION.glob("*.yaml")) - set(PIPELINES))


def test_there_are_vision_configs() -> None:
    names = {p.stem for p in CONFIGS}
    assert {"lenet_baseline", "lenet_gradual_pruning", "lenet_global_l1", "lenet_lottery_ticket"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_starts_with_its_command_and_runs(path: Path, tmp_path: Path) -> None:
    assert path.read_text().splitlines()[0] == f"# lit-compress fit --config configs/vision/{path.name}"
    cli = trainer_cli(  # what `lit-compress fit --config ...` builds, without running it
        ["--config", str(path), "--trainer.max_steps=2", "--trainer.logger=false",
         f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false",
         "--trainer.enable_model_summary=false", "--trainer.limit_val_batches=1", "--data.init_args.limit=200"],
        run=False,
    )
    assert isinstance(cli.model, LeNetModule) and isinstance(cli.datamodule, MNISTDataModule)
    pruning = [c for c in cli.trainer.callbacks if isinstance(c, GradualPruning)]
    if "pruning" in path.stem:
        assert isinstance(pruning[0].schedule, PolynomialDecay)
        assert pruning[0].schedule(1100) == pytest.approx(0.8) and pruning[0].schedule(880) == pytest.approx(0.5)
    if "lottery" in path.stem:
        assert isinstance(pruning[0], LotteryTicket) and pruning[0].schedule(3 * 440) == pytest.approx(0.488)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 2


def test_there_are_pipeline_recipes_for_a_cnn_and_a_vit() -> None:
    assert {p.stem for p in PIPELINES} == {"fashion_mnist_cnn", "fashion_mnist_vit"}


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_pipeline_recipe_starts_with_its_command_and_parses(path: Path) -> None:
    import yaml

    from lit_compress.pipeline.compress import pruning_callback
    from lit_compress.pipeline.config import TRAINING_STAGES, build_plan

    assert path.read_text().splitlines()[0] == f"# lit-compress pipeline --config configs/vision/{path.name}"
    recipe = yaml.safe_load(path.read_text())
    plan = build_plan(None, recipe["defaults"], {s: recipe.get(s) for s in TRAINING_STAGES}, recipe["export"], None)
    for stage in TRAINING_STAGES:  # every stage reads the same images
        assert plan.training[stage].recipe["data"]["class_path"] == "lit_compress.vision.ImageClassificationDataModule"
    expected = "ChannelPruning" if "cnn" in path.stem else "StructuredPruning"
    assert pruning_callback(plan.training["prune"].recipe) == f"lit_compress.prune.{expected}"
    assert set(plan.export.formats) >= {"onnx-fp32", "ort-static-int8"}
