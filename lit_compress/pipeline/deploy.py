"""Deployment stages of the main job: ONNX / int8 export of every student, then the side-by-side benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lit_compress.pipeline.config import BenchConfig, DataConfig, ExportConfig
from lit_compress.pipeline.context import RunContext, Stopwatch
from lit_compress.pipeline.training import gate_texts, make_datamodule

#: training-stage variant -> (artifact kinds to export, row label prefix)
COMPRESSED_FORMATS = {
    "pruned": ["onnx-fp32", "ort-dynamic-int8", "ort-static-int8"],
    "qat_dynamic": ["ort-dynamic-int8"],
}
TEACHER, STUDENT = "teacher torch fp32", "student torch fp32"
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
        calibration = dm.texts("train")[: cfg.calibration_size]
        parity = gate_texts(dm, cfg.int8_gate.min_texts)  # the validation split (topped up from train)
        jobs = {"student": list(cfg.formats), **COMPRESSED_FORMATS}
        with Stopwatch(ctx, stage):
            for variant, formats in jobs.items():
                if variant not in ctx.models:
                    continue
                export_model(str(ctx.models[variant]), str(out / variant), formats=formats,
                             calibration_texts=calibration, parity_texts=parity, per_channel=cfg.per_channel,
                             quantize_embeddings=cfg.quantize_embeddings, embedding_bits=cfg.embedding_bits,
                             max_length=data.max_length, run_config=config, target=cfg.target,
                             int8_gate=cfg.int8_gate)
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
    """Benchmark the teacher, the student and every artifact side by side, choose the final artifact.

    Every variant is scored on the validation split (to choose) and on the test split (to report), its
    latency, throughput and size measured once. The final artifact is the fastest by p50 single-query latency
    among the students and artifacts whose validation accuracy is within ``cfg.accuracy_budget`` points of the
    teacher's (:func:`~lit_compress.bench.select.select_final`); the choice and its reason are printed, drawn
    in the report and recorded in ``stage.json`` (``final``, ``final_reason``, ``final_path``, ``selection``).

    Returns:
        The Markdown report (the final artifact's line, then the table).
    """
    from lit_compress.bench.api import read_selection, run_benchmark
    from lit_compress.bench.suite import BenchmarkSettings, Variant

    stage = "benchmark"
    out = ctx.stage_dir(stage)
    dm = make_datamodule(data, str(ctx.models["teacher"]))
    variants = [Variant(TEACHER, str(ctx.models["teacher"])), Variant(STUDENT, str(ctx.models["student"]))]
    variants += [Variant(name, str(path)) for name, path in artifacts.items()]
    val_labels, test_labels = dm.labels("validation"), dm.labels("test")
    if not val_labels or not test_labels:
        raise ValueError("The benchmark needs labelled validation (to choose the final artifact) and test (to "
                         "report) splits; the data has no labels for one of them.")  # fmt: skip
    settings = BenchmarkSettings(threads=cfg.threads, runs=cfg.runs, warmup=cfg.warmup,
                                 batch_sizes=tuple(cfg.batch_sizes), throughput_runs=cfg.throughput_runs)
    with Stopwatch(ctx, stage):
        paths = run_benchmark(variants, dm.texts("test"), test_labels, str(out), label_names=dm.label_names,
                              settings=settings, baseline=TEACHER, teacher=TEACHER,
                              selection_texts=dm.texts("validation"), selection_labels=val_labels,
                              accuracy_budget=cfg.accuracy_budget)  # fmt: skip
    selection = read_selection(paths["json"])
    if selection is None:  # run_benchmark always chooses when given selection texts
        raise RuntimeError(f"{paths['json']} holds no selection block.")
    print(f"final artifact: {selection.chosen} — {selection.reason}")
    record = {"seconds": ctx.timings[stage], "final": selection.chosen, "final_reason": selection.reason,
              "final_path": {v.name: v.path for v in variants}[selection.chosen], "selection": selection.as_dict(),
              "paths": {k: str(v) for k, v in paths.items()}}  # fmt: skip
    ctx.mark_done(stage, record)
    return Path(paths["markdown"]).read_text()
