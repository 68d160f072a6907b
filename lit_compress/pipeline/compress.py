"""Compression stages of the main job: vocabulary trimming + structured pruning, then QAT.

Both stages distil from the fine-tuned teacher while they compress (Lightning issue #11047 asked for exactly
this combination). Vocabulary trimming is applied to the teacher *and* the student with the same kept ids, so
they keep sharing one tokenizer and the teacher-logit cache stays valid.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lit_compress.distill.module import DistillationModule
from lit_compress.models.hub import load_tokenizer
from lit_compress.models.io import load_model_dir, save_model_dir
from lit_compress.pipeline.config import DataConfig, ExportConfig, PruneConfig, QATConfig, TrainConfig
from lit_compress.pipeline.context import RunContext
from lit_compress.pipeline.stages import _reuse, finish_stage, fit_distillation
from lit_compress.pipeline.training import gate_texts, make_datamodule


def total_steps(ctx: RunContext, data: DataConfig, tokenizer: str, train: TrainConfig) -> int:
    """Optimizer steps a stage will take (for schedules expressed as fractions of the stage)."""
    dm = make_datamodule(data, tokenizer)
    steps = train.epochs * math.ceil(len(dm.raw()["train"]) / data.batch_size)
    return min(steps, train.max_steps) if train.max_steps > 0 else steps


def trim_pair(teacher_dir: Path, student_dir: Path, texts: list[str], min_frequency: int) -> tuple[Any, Any, Any, dict]:
    """Load teacher and student and trim both vocabularies to the tokens of ``texts`` (same kept ids)."""
    from lit_compress.prune.vocab import trim_vocabulary

    teacher, student = load_model_dir(teacher_dir), load_model_dir(student_dir)
    tokenizer = load_tokenizer(str(student_dir))
    if min_frequency <= 0:
        return teacher, student, tokenizer, {}
    new_tok, report = trim_vocabulary(student, tokenizer, texts, min_frequency=min_frequency)
    _, teacher_report = trim_vocabulary(teacher, load_tokenizer(str(teacher_dir)), texts, min_frequency=min_frequency)
    if teacher_report.kept_ids != report.kept_ids:
        raise RuntimeError("Teacher and student tokenizers differ; vocabulary trimming needs a shared tokenizer.")
    return teacher, student, new_tok, report.summary()


def prune_stage(ctx: RunContext, data: DataConfig, cfg: PruneConfig) -> None:
    """Trim the vocabulary, then distil with gradual structured pruning of heads and FFN channels."""
    from lit_compress.prune.schedules import PolynomialDecay
    from lit_compress.prune.structured_callback import StructuredPruning

    stage, variant = "prune", "pruned"
    if not cfg.enabled:
        return
    out = ctx.stage_dir(stage)
    if _reuse(ctx, variant, stage):
        ctx.models["teacher_trimmed"] = out / "teacher"
        return
    texts = make_datamodule(data, str(ctx.models["student"])).texts("train")
    teacher, student, tokenizer, vocab = trim_pair(ctx.models["teacher"], ctx.models["student"], texts,
                                                    cfg.vocab_min_frequency)
    teacher_dir = save_model_dir(teacher, out / "teacher", tokenizer=tokenizer)
    ctx.models["teacher_trimmed"] = teacher_dir
    steps = total_steps(ctx, data, str(teacher_dir), cfg.train)
    end, every = max(1, int(cfg.schedule_end * steps)), max(1, steps // 50)
    end -= end % every
    end = max(end, every)

    def ramp(final: float) -> PolynomialDecay:
        return PolynomialDecay(0.0, final, begin_step=0, end_step=end, frequency=every)

    pruning = StructuredPruning(ramp(cfg.head_ratio), ramp(cfg.ffn_ratio), importance=cfg.importance,  # type: ignore[arg-type]
                                scope=cfg.scope, every_n_steps=every)  # type: ignore[arg-type]
    module = DistillationModule(teacher=teacher, student=student, labels=list(teacher.config.id2label.values()),
                                alpha=cfg.alpha, temperature=cfg.temperature, lr=cfg.train.lr,
                                weight_decay=cfg.train.weight_decay, warmup_ratio=cfg.train.warmup_ratio)
    metrics = fit_distillation(ctx, stage, data, str(teacher_dir), module, cfg.train, callbacks=[pruning])
    from lit_compress.prune.architecture import current_architecture

    arch = current_architecture(module.student).to_dict()
    finish_stage(ctx, stage, variant, module.student, tokenizer, metrics, vocabulary=vocab, architecture=arch)


def qat_stage(ctx: RunContext, data: DataConfig, cfg: QATConfig, scheme: str, export: ExportConfig) -> None:
    """Quantization-aware distillation of the (pruned) student with the ``scheme`` activation quantizer.

    Weights are fake-quantized on the grid of the int8 target (``export.target``: 7-bit on CPUs whose kernel
    saturates), so the QAT model predicts what the int8 kernel computes. ``dynamic``: the trained weights are
    saved unwrapped to fp32; the export stage quantizes them with ORT dynamic int8 on the same grid.
    ``static``: the learned scales are exported here as a Q/DQ ONNX artifact (``qat_static/artifact``), gated
    against the QAT model on the validation texts, with its manifest and int8-kernel report.
    """
    from lit_compress.quant import ActivationQuantConfig, QuantizationAwareTraining, strip_fake_quant
    from lit_compress.quant.targets import resolve_target

    stage, variant = f"qat_{scheme}", f"qat_{scheme}"
    if _reuse(ctx, variant, stage):
        return
    teacher_dir = ctx.models.get("teacher_trimmed", ctx.models["teacher"])
    student_dir = ctx.models.get("pruned", ctx.models["student"])
    steps = total_steps(ctx, data, str(student_dir), cfg.train)
    target = resolve_target(export.target)
    callback = QuantizationAwareTraining(
        weight=target.weight_config(per_channel=export.per_channel),
        activation=ActivationQuantConfig(scheme=scheme),  # type: ignore[arg-type]
        start_step=int(cfg.start_fraction * steps),
        freeze_observers_step=max(1, int(cfg.freeze_fraction * steps)) if scheme == "static" else None,
        filter_fn=".",  # every Linear, the classifier too: ORT quantizes all of them
    )
    teacher, student = load_model_dir(teacher_dir), load_model_dir(student_dir)
    module = DistillationModule(teacher=teacher, student=student, labels=list(teacher.config.id2label.values()),
                                alpha=cfg.alpha, temperature=cfg.temperature, lr=cfg.train.lr,
                                weight_decay=cfg.train.weight_decay, warmup_ratio=cfg.train.warmup_ratio)
    metrics = fit_distillation(ctx, stage, data, str(student_dir), module, cfg.train, callbacks=[callback])
    tokenizer = load_tokenizer(str(student_dir))
    extra: dict[str, Any] = {"int8_target": target.name}
    if scheme == "static":
        texts = gate_texts(make_datamodule(data, str(student_dir)), export.int8_gate.min_texts)
        extra["artifact"] = str(write_qdq_artifact(module.student.eval(), tokenizer, ctx.run_dir / stage / "artifact",
                                                   export.quantize_embeddings, str(student_dir), texts=texts,
                                                   max_length=data.max_length, gate=export.int8_gate,
                                                   target=target))
    finish_stage(ctx, stage, variant, strip_fake_quant(module.student), tokenizer, metrics, **extra)


def write_qdq_artifact(model: Any, tokenizer: Any, out: Path, quantize_embeddings: bool, source: str, *,
                       texts: list[str] | None = None, max_length: int = 128, gate: Any = None,
                       target: Any = None) -> Path:  # fmt: skip
    """Export a static-scheme QAT model as Q/DQ ONNX, gated on ``texts``, with tokenizer, config and a manifest."""
    from lit_compress.export.files import onnx_parameter_counts
    from lit_compress.export.kernels import kernel_report
    from lit_compress.export.manifest import build_manifest, write_manifest
    from lit_compress.export.api import gate_batches
    from lit_compress.export.onnx import read_export_metadata
    from lit_compress.quant import export_qdq_onnx
    from lit_compress.quant.targets import int8_environment

    out.mkdir(parents=True, exist_ok=True)
    sample = dict(tokenizer(["lit compress exports this model.", "a second, longer sentence for tracing."],
                            padding=True, return_tensors="pt"))
    sample = {k: v for k, v in sample.items() if k in ("input_ids", "attention_mask")}
    path = export_qdq_onnx(model, out / "model.onnx", sample, quantize_embeddings=quantize_embeddings,
                           parity_inputs=gate_batches(tokenizer, texts, max_length), int8_gate=gate)
    tokenizer.save_pretrained(out)
    model.config.save_pretrained(out)
    kernels = kernel_report(path, expect_int8=True)
    meta = read_export_metadata(path)
    manifest = build_manifest(
        "ort-static-int8", path, source={"model_dir": source, "training": "quantization-aware (static scheme)"},
        onnx={k: meta.get(k) for k in ("opset", "exporter", "inputs") if k in meta},
        quantization={"scheme": "qat-static-qdq", "weights": "int8 symmetric", "activations": "uint8 learned scales",
                      "embeddings": "int8" if quantize_embeddings else "fp32",
                      "target": target.to_dict() if target is not None else None},
        parameters=onnx_parameter_counts(path), parity=meta.get("parity"), kernels=kernels,
        warnings=[kernels["warning"]] if kernels.get("warning") else [], int8=int8_environment(target),
    )
    write_manifest(out, manifest)
    return path
