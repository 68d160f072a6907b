"""Deployment stages of the main job: ONNX / int8 export of every student, then the side-by-side benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lit_compress.pipeline.config import BenchConfig, DataConfig, ExportConfig
from lit_compress.pipeline.context import RunContext, Stopwatch
from lit_compress.pipeline.training import make_datamodule

#: training-stage variant -> (artifact kinds to export, row label prefix)
COMPRESSED_FORMATS = {
    "pruned": ["onnx-fp32", "ort-dynamic-int8", "ort-static-int8"],
    "qat_dynamic": ["ort-dynamic-int8"],
}
ROW_NAMES = {
    ("student", "onnx-fp32"): "student ORT fp32",
    ("student", "ort-dynamic-int8"): "student ORT dynamic int8",
    ("student", "ort-static-int8"): "student ORT static int8",
    ("student", "torch-dynamic-int8"): "student torch dynamic int8",
    ("pruned", "onnx-fp32"): "pruned+trimmed ORT fp32",
    ("pruned", "ort-dynamic-int8"): "pruned+trimmed PTQ ORT dynamic int8",
    ("pruned", "ort-static-int8"): "pruned+trimmed PTQ ORT static int8",
    ("qat_dynamic", "ort-dynamic-int8"): "pruned+trimmed QAT ORT dynamic int8",
}


def export_stage(ctx: RunContext, data: DataConfig, cfg: ExportConfig, config: dict[str, Any]) -> dict[str, Path]:
    """Export the distilled student (all formats) and the compressed students; return row name -> artifact."""
    from lit_compress.export.api import export_model

    stage = "export"
    out = ctx.stage_dir(stage)
    done = ctx.load_done(stage)
    if done is None:
        dm = make_datamodule(data, str(ctx.models["teacher"]))
        calibration, parity = dm.texts("train")[: cfg.calibration_size], dm.texts("test")[:16]
        jobs = {"student": list(cfg.formats), **COMPRESSED_FORMATS}
        with Stopwatch(ctx, stage):
            for variant, formats in jobs.items():
                if variant not in ctx.models:
                    continue
                export_model(str(ctx.models[variant]), str(out / variant), formats=formats,
                             calibration_texts=calibration, parity_texts=parity, per_channel=cfg.per_channel,
                             quantize_embeddings=cfg.quantize_embeddings, embedding_bits=cfg.embedding_bits,
                             max_length=data.max_length, run_config=config)
        ctx.mark_done(stage, {"seconds": ctx.timings[stage]})
    artifacts = {}
    for (variant, kind), row in ROW_NAMES.items():
        if (out / variant / kind).is_dir():
            artifacts[row] = out / variant / kind
    static = ctx.run_dir / "qat_static" / "artifact"
    if static.is_dir():
        artifacts["pruned+trimmed QAT static int8 (Q/DQ)"] = static
    return artifacts


def benchmark_stage(ctx: RunContext, data: DataConfig, cfg: BenchConfig, artifacts: dict[str, Path]) -> str:
    """Benchmark the teacher, the student and every artifact side by side; return the Markdown table."""
    from lit_compress.bench.api import run_benchmark
    from lit_compress.bench.suite import BenchmarkSettings, Variant

    stage = "benchmark"
    out = ctx.stage_dir(stage)
    dm = make_datamodule(data, str(ctx.models["teacher"]))
    variants = [Variant("teacher torch fp32", str(ctx.models["teacher"])),
                Variant("student torch fp32", str(ctx.models["student"]))]
    variants += [Variant(name, str(path)) for name, path in artifacts.items()]
    final = _final_variant(artifacts)
    settings = BenchmarkSettings(threads=cfg.threads, runs=cfg.runs, warmup=cfg.warmup,
                                 batch_sizes=tuple(cfg.batch_sizes), throughput_runs=cfg.throughput_runs)
    with Stopwatch(ctx, stage):
        paths = run_benchmark(variants, dm.texts("test"), dm.labels("test") or [], str(out),
                              label_names=dm.label_names, settings=settings, baseline="teacher torch fp32",
                              highlight=final)
    ctx.mark_done(stage, {"seconds": ctx.timings[stage], "final": final, "paths": {k: str(v) for k, v in paths.items()}})
    return Path(paths["markdown"]).read_text()


def _final_variant(artifacts: dict[str, Path]) -> str | None:
    for name in ("pruned+trimmed QAT static int8 (Q/DQ)", "pruned+trimmed QAT ORT dynamic int8",
                 "pruned+trimmed PTQ ORT dynamic int8", "student ORT dynamic int8"):
        if name in artifacts:
            return name
    return None
