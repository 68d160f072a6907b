"""``lit-compress pipeline``: the main job, a sequence of stages writing into one run directory."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from lit_compress.pipeline.config import (
    BenchConfig,
    DataConfig,
    DistillConfig,
    ExportConfig,
    PruneConfig,
    QATConfig,
    TeacherConfig,
)
from lit_compress.errors import UserInputError
from lit_compress.pipeline.context import DONE_FILE, RunContext
from lit_compress.pipeline.report import summary_table, write_summary
from lit_compress.pipeline.stages import distill_stage, teacher_stage


def run_pipeline(
    run_dir: str = "runs/main",
    resume: bool = False,
    threads: int | None = None,
    data: DataConfig | None = None,
    teacher: TeacherConfig | None = None,
    distill: DistillConfig | None = None,
    prune: PruneConfig | None = None,
    qat: QATConfig | None = None,
    export: ExportConfig | None = None,
    benchmark: BenchConfig | None = None,
) -> dict:
    """Fine-tune the teacher, distil a student, compress and export it, and benchmark every variant.

    Stages, each writing into ``run_dir/<stage>/``: ``teacher`` → ``distill`` → ``prune`` (vocabulary
    trimming + gradual structured pruning while distilling) → ``qat_dynamic`` / ``qat_static``
    (quantization-aware distillation) → ``export`` (ONNX, ORT int8, torch int8, with manifests) →
    ``benchmark`` (the side-by-side table and plot). The resolved configuration is saved as
    ``run_dir/config.yaml``; the final table as ``run_dir/results.md`` and ``run_dir/benchmark/``.

    Args:
        run_dir: Output directory of the run.
        resume: Reuse stages already completed in ``run_dir`` (their ``stage.json`` exists).
        threads: torch intra-op threads for training (default: all cores).
        data: Dataset and tokenization.
        teacher: Teacher fine-tuning.
        distill: Student distillation.
        prune: Vocabulary trimming and structured pruning (``enabled: false`` skips it).
        qat: Quantization-aware training (``schemes: []`` skips it).
        export: ONNX / int8 export.
        benchmark: Benchmark settings (``enabled: false`` skips export and benchmark).

    Returns:
        The training-stage results per variant.
    """
    import torch

    sections = {
        "data": data or DataConfig(), "teacher": teacher or TeacherConfig(), "distill": distill or DistillConfig(),
        "prune": prune or PruneConfig(), "qat": qat or QATConfig(), "export": export or ExportConfig(),
        "benchmark": benchmark or BenchConfig(),
    }
    if threads:
        torch.set_num_threads(threads)
    ctx = RunContext(run_dir=Path(run_dir), resume=resume)
    check_inputs(ctx, sections)
    created = not ctx.run_dir.exists()
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    try:
        resolved = save_resolved_config(ctx.run_dir, run_dir=run_dir, threads=threads, **sections)
        _train(ctx, sections)
    except UserInputError:
        if created:
            _remove_unfinished(ctx.run_dir)
        raise
    table = summary_table(ctx)
    print("\nTraining stages (test split, PyTorch):\n" + table)
    bench = sections["benchmark"]
    if bench.enabled:
        from lit_compress.pipeline.deploy import benchmark_stage, export_stage

        artifacts = export_stage(ctx, sections["data"], sections["export"], resolved)
        bench_table = benchmark_stage(ctx, sections["data"], bench, artifacts)
        print("\nBenchmark (test split, batch 1 latency, %d thread(s)):\n%s" % (bench.threads, bench_table))
        table += "\n\n## Benchmark\n\n" + bench_table
    write_summary(ctx, table)
    return ctx.results


def check_inputs(ctx: RunContext, sections: dict[str, Any]) -> None:
    """Refuse bad data or model inputs before the run directory exists (cheap checks, no training).

    Local data files must exist, read as their format and have the text/label columns; the teacher (and a
    given student) must resolve to a local directory, a readable ``.ckpt``, the embedded default, or a hub
    model that is cached or reachable. Stages already completed in a resumed run are not re-checked.

    Raises:
        UserInputError: What is wrong and which option fixes it.
    """
    from lit_compress.data.sources import check_source
    from lit_compress.models.hub import check_model
    from lit_compress.pipeline.training import make_datamodule

    teacher, distill = sections["teacher"], sections["distill"]
    check_source(make_datamodule(sections["data"], teacher.model).source)
    if ctx.load_done("teacher") is None:
        check_model(teacher.model)
    if distill.student and ctx.load_done("distill") is None:
        check_model(distill.student)


def _remove_unfinished(run_dir: Path) -> None:
    """Remove a run directory this invocation created when no stage finished in it (bad input found late)."""
    import shutil

    if not any(run_dir.rglob(DONE_FILE)):
        shutil.rmtree(run_dir, ignore_errors=True)


def _train(ctx: RunContext, sections: dict[str, Any]) -> None:
    from lit_compress.pipeline.compress import prune_stage, qat_stage

    data, export = sections["data"], sections["export"]
    teacher_stage(ctx, data, sections["teacher"])
    distill_stage(ctx, data, sections["distill"])
    prune_stage(ctx, data, sections["prune"])
    for scheme in sections["qat"].schemes:
        qat_stage(ctx, data, sections["qat"], scheme, export)


def save_resolved_config(out_dir: Path, **sections: object) -> dict[str, Any]:
    """Write the fully resolved configuration of the run as YAML (atomically) and return it."""
    import yaml

    from lit_compress.utils.io import write_text_atomic

    def plain(value: object) -> object:
        return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value  # type: ignore[arg-type]

    resolved: dict[str, Any] = {k: plain(v) for k, v in sections.items()}
    resolved["lit_compress_version"] = _version()
    resolved["cwd"] = os.getcwd()
    write_text_atomic(out_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    return resolved


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lit-compress")
    except PackageNotFoundError:
        return "unknown"
