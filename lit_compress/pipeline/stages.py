"""Training stages of the main job. Each fills its fit recipe with what earlier stages made, writes it as
``<run_dir>/<stage>/recipe.yaml``, trains it as ``lit-compress fit`` would, and records ``stage.json`` when done."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from lit_compress.bench.suite import MB
from lit_compress.models.io import save_model_dir
from lit_compress.pipeline.config import StagePlan
from lit_compress.pipeline.context import RunContext, Stopwatch, TrainedModel, dir_size
from lit_compress.pipeline.recipes import deep_merge, recipe_callbacks, with_callbacks
from lit_compress.pipeline.training import (
    CHECKPOINTS,
    datamodule_tokenizer,
    fit_recipe,
    with_checkpoints,
    with_stage_outputs,
    with_tokenizer,
)

T = TypeVar("T", bound=TrainedModel)


def reuse(ctx: RunContext, stage: str, kind: type[T]) -> T | None:
    """The result of ``stage`` when resuming a run that completed it, else ``None``."""
    done = ctx.load_done(stage)
    if done is None:
        return None
    print(f"[{stage}] reusing {ctx.run_dir / stage} (resume)")
    if "model_dir" not in done:  # a stage.json written before typed results: the layout was the same
        done = {**done, "stage": stage, "model_dir": str(ctx.run_dir / stage / "model")}
    return kind.from_record(done)


def fill(recipe: Mapping[str, Any], out_dir: Path, tokenizer: str | Path, **model_args: Any) -> dict[str, Any]:
    """The stage's recipe with its inputs filled in: the datamodule's tokenizer (text data), ``model.init_args``
    from earlier stages, and the Trainer's output directory."""
    filled = {**recipe, "data": with_tokenizer(recipe["data"], str(tokenizer))}
    if model_args:
        filled = deep_merge(filled, {"model": {"init_args": {k: str(v) if isinstance(v, Path) else v
                                                             for k, v in model_args.items()}}})  # fmt: skip
    return with_stage_outputs(filled, out_dir)


def train(ctx: RunContext, stage: str, recipe: Mapping[str, Any], *, fit: bool = True) -> tuple[Any, dict[str, float]]:
    """Fit and test the filled ``recipe`` of ``stage``, timed."""
    out = ctx.stage_dir(stage)
    if fit:
        recipe = with_checkpoints(recipe, out, ctx.checkpoint_every_n_steps)
    with Stopwatch(ctx, stage):
        return fit_recipe(recipe, out, stage, fit=fit, resume=ctx.resume)


def finish(ctx: RunContext, kind: type[T], stage: str, variant: str, model: Any, tokenizer: Any,
           metrics: dict[str, float], **extra: Any) -> T:  # fmt: skip
    """Save the stage's model (with its tokenizer, for text), record the stage as done, return its typed result."""
    model_dir = save_model_dir(model, ctx.run_dir / stage / "model", tokenizer=tokenizer)
    params = sum(p.numel() for p in model.parameters())
    metrics = {**metrics, "parameters": params, "size_mb": round(dir_size(model_dir) / MB, 2)}
    result = kind(stage=stage, variant=variant, model_dir=Path(model_dir), metrics=metrics,
                  recipe=ctx.run_dir / stage / "recipe.yaml", **extra)  # fmt: skip
    ctx.mark_done(stage, result.record(ctx.timings.get(stage)))
    shutil.rmtree(ctx.run_dir / stage / CHECKPOINTS, ignore_errors=True)  # done: the model directory is the result
    return result


def teacher_stage(ctx: RunContext, plan: StagePlan) -> TrainedModel:
    """Fine-tune the teacher on the run's data (or only evaluate it with ``finetune: false``)."""
    stage = "teacher"
    done = reuse(ctx, stage, TrainedModel)
    if done is not None:
        return done
    out = ctx.stage_dir(stage)
    model = plan.recipe["model"].get("init_args", {}).get("model")
    named = isinstance(model, (str, Path))  # a name or directory (its tokenizer too), else a class_path entry
    recipe = fill(plan.recipe, out, tokenizer=model) if named else with_stage_outputs(plan.recipe, out)
    if plan.options.finetune:
        recipe = with_callbacks(recipe, [*recipe_callbacks(recipe), *plan.options.early_stopping.callbacks()])
    cli, metrics = train(ctx, stage, recipe, fit=plan.options.finetune)
    metrics = {**metrics, **record_convergence(cli.trainer, out)}
    return finish(ctx, TrainedModel, stage, "teacher", cli.model.model, datamodule_tokenizer(cli.datamodule), metrics)


def record_convergence(trainer: Any, out: Path) -> dict[str, Any]:
    """Write the validation curve kept by :class:`~lit_compress.pipeline.convergence.RestoreBestWeights` as
    ``out/val_curve.csv`` (and as a line plot to a W&B logger), and return the stage's convergence figures
    (``best_epoch`` 0-based, ``epochs`` validated); nothing when the stage ran without early stopping."""
    from lit_compress.pipeline.convergence import RestoreBestWeights, curve_csv
    from lit_compress.utils.io import write_text_atomic

    best = next((c for c in trainer.callbacks if isinstance(c, RestoreBestWeights)), None)
    if best is None or not best.history:
        return {}
    write_text_atomic(out / "val_curve.csv", curve_csv(best.history))
    summary = best.summary()
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger":
            _log_wandb_curve(logger, best.history, summary)
    print(f"[teacher] best {summary['monitor']} {summary['best']:.4f} at epoch {summary['best_epoch'] + 1} of "
          f"{summary['epochs']} (weights of that epoch restored; curve in {out / 'val_curve.csv'})")
    return {"best_epoch": summary["best_epoch"], "epochs": summary["epochs"], "monitor": summary["monitor"]}


def _log_wandb_curve(logger: Any, history: list[dict[str, float]], summary: dict[str, Any]) -> None:
    import wandb

    columns = sorted({k for row in history for k in row})
    table = wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in history])
    monitor = summary["monitor"]
    logger.experiment.log({"teacher/val_curve": wandb.plot.line(table, "epoch", monitor, title="teacher " + monitor)})
    logger.experiment.summary.update({"teacher/best_epoch": summary["best_epoch"], "teacher/epochs": summary["epochs"]})


def distill_stage(ctx: RunContext, plan: StagePlan) -> TrainedModel:
    """Distil the fine-tuned teacher into a smaller student (``student_layers`` of it, or a given ``student``)."""
    stage = "distill"
    done = reuse(ctx, stage, TrainedModel)
    if done is not None:
        return done
    assert ctx.teacher is not None
    out = ctx.stage_dir(stage)
    teacher_dir = ctx.teacher.model_dir
    student = plan.recipe["model"].get("init_args", {}).get("student")
    tokenizer = student if isinstance(student, (str, Path)) else teacher_dir
    recipe = seeded(fill(plan.recipe, out, tokenizer=tokenizer, teacher=teacher_dir))
    cli, metrics = train(ctx, stage, recipe)
    return finish(ctx, TrainedModel, stage, "student", cli.model.student, datamodule_tokenizer(cli.datamodule), metrics)


def seeded(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """``recipe`` with :class:`~lit_compress.pipeline.seeding.SeedBeforeFit` first among its callbacks (the
    distillation stages: their models are built from earlier stages' directories, which may draw random numbers)."""
    callbacks = recipe_callbacks(recipe)
    seed = {"class_path": "lit_compress.pipeline.seeding.SeedBeforeFit",
            "init_args": {"seed": int(recipe.get("seed_everything") or 0)}}  # fmt: skip
    return with_callbacks(recipe, [seed, *callbacks])
