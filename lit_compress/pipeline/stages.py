"""Stages of the main job. Each writes into ``<run_dir>/<stage>/`` and records ``stage.json`` when done."""

from __future__ import annotations

from typing import Any

import lightning as L

from lit_compress.distill.classifier import ClassifierModule
from lit_compress.distill.module import DistillationModule
from lit_compress.models.hub import load_tokenizer
from lit_compress.models.io import save_model_dir
from lit_compress.pipeline.config import DataConfig, DistillConfig, TeacherConfig
from lit_compress.bench.suite import MB
from lit_compress.pipeline.context import RunContext, Stopwatch, dir_size
from lit_compress.pipeline.training import make_datamodule, make_trainer, test_metrics


def _record(ctx: RunContext, variant: str, stage: str, record: dict[str, Any]) -> None:
    ctx.models[variant] = ctx.run_dir / stage / "model"
    ctx.results[variant] = record["metrics"]


def _reuse(ctx: RunContext, variant: str, stage: str) -> bool:
    done = ctx.load_done(stage)
    if done is None:
        return False
    _record(ctx, variant, stage, done)
    print(f"[{stage}] reusing {ctx.run_dir / stage} (resume)")
    return True


def _model_metrics(model: Any, model_dir: Any, metrics: dict[str, float]) -> dict[str, Any]:
    params = sum(p.numel() for p in model.parameters())
    return {**metrics, "parameters": params, "size_mb": round(dir_size(model_dir) / MB, 2)}


def teacher_stage(ctx: RunContext, data: DataConfig, cfg: TeacherConfig) -> None:
    """Fine-tune the teacher on the run's data (or only evaluate it with ``finetune: false``)."""
    stage = "teacher"
    if _reuse(ctx, stage, stage):
        return
    out = ctx.stage_dir(stage)
    L.seed_everything(data.seed, workers=True)
    dm = make_datamodule(data, cfg.model)
    module = ClassifierModule(cfg.model, labels=dm.label_names, lr=cfg.train.lr,
                              weight_decay=cfg.train.weight_decay, warmup_ratio=cfg.train.warmup_ratio)
    trainer = make_trainer(cfg.train, out)
    with Stopwatch(ctx, stage):
        if cfg.finetune:
            trainer.fit(module, datamodule=dm)
        metrics = test_metrics(trainer, module, dm)
    model_dir = save_model_dir(module.model, out / "model", tokenizer=dm.tokenizer)
    record = {"metrics": _model_metrics(module.model, model_dir, metrics), "seconds": ctx.timings[stage]}
    ctx.mark_done(stage, record)
    _record(ctx, stage, stage, record)


def fit_distillation(
    ctx: RunContext, stage: str, data: DataConfig, tokenizer: str, module: DistillationModule,
    train: Any, callbacks: list[Any] | None = None,
) -> dict[str, float]:
    """Fit ``module`` on the run's data tokenized with ``tokenizer``; return its test metrics."""
    L.seed_everything(data.seed, workers=True)
    dm = make_datamodule(data, tokenizer)
    trainer = make_trainer(train, ctx.stage_dir(stage), callbacks=callbacks)
    with Stopwatch(ctx, stage):
        trainer.fit(module, datamodule=dm)
        return test_metrics(trainer, module, dm)


def finish_stage(ctx: RunContext, stage: str, variant: str, model: Any, tokenizer: Any,
                 metrics: dict[str, float], **extra: Any) -> None:
    """Save the stage's model with its tokenizer, then record the stage as done."""
    model_dir = save_model_dir(model, ctx.run_dir / stage / "model", tokenizer=tokenizer)
    record = {"metrics": _model_metrics(model, model_dir, metrics), "seconds": ctx.timings.get(stage), **extra}
    ctx.mark_done(stage, record)
    _record(ctx, variant, stage, record)


def distill_stage(ctx: RunContext, data: DataConfig, cfg: DistillConfig) -> None:
    """Distil the fine-tuned teacher into a smaller student."""
    stage, variant = "distill", "student"
    if _reuse(ctx, variant, stage):
        return
    teacher_dir = str(ctx.models["teacher"])
    module = DistillationModule(
        teacher=teacher_dir, student=cfg.student, student_layers=cfg.layers,
        labels=make_datamodule(data, teacher_dir).label_names,
        alpha=cfg.alpha, temperature=cfg.temperature, hidden_weight=cfg.hidden_weight,
        cosine_weight=cfg.cosine_weight, cache_teacher_logits=cfg.cache_teacher_logits,
        lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, warmup_ratio=cfg.train.warmup_ratio,
    )
    tokenizer_name = cfg.student or teacher_dir
    metrics = fit_distillation(ctx, stage, data, tokenizer_name, module, cfg.train)
    finish_stage(ctx, stage, variant, module.student, load_tokenizer(tokenizer_name), metrics)
