"""``lit-compress pipeline``: the main job, a sequence of stages writing into one run directory."""

from __future__ import annotations

import os
from pathlib import Path

from lit_compress.pipeline.config import DataConfig, DistillConfig, TeacherConfig
from lit_compress.pipeline.context import RunContext
from lit_compress.pipeline.report import summary_table, write_summary
from lit_compress.pipeline.stages import distill_stage, teacher_stage


def run_pipeline(
    run_dir: str = "runs/main",
    resume: bool = False,
    threads: int | None = None,
    data: DataConfig | None = None,
    teacher: TeacherConfig | None = None,
    distill: DistillConfig | None = None,
) -> dict:
    """Fine-tune the teacher, distil a student, compress and export it, and benchmark every variant.

    Every stage writes into ``run_dir/<stage>/``; the resolved configuration is saved as
    ``run_dir/config.yaml`` and the final table as ``run_dir/results.{md,json}``.

    Args:
        run_dir: Output directory of the run.
        resume: Reuse stages already completed in ``run_dir`` (their ``stage.json`` exists).
        threads: torch intra-op threads for training (default: all cores).
        data: Dataset and tokenization.
        teacher: Teacher fine-tuning.
        distill: Student distillation.

    Returns:
        The results per variant.
    """
    import torch

    data, teacher, distill = data or DataConfig(), teacher or TeacherConfig(), distill or DistillConfig()
    if threads:
        torch.set_num_threads(threads)
    ctx = RunContext(run_dir=Path(run_dir), resume=resume)
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    save_resolved_config(ctx.run_dir, run_dir=run_dir, threads=threads, data=data, teacher=teacher, distill=distill)
    teacher_stage(ctx, data, teacher)
    distill_stage(ctx, data, distill)
    table = summary_table(ctx)
    print("\n" + table)
    write_summary(ctx, table)
    return ctx.results


def save_resolved_config(out_dir: Path, **sections: object) -> Path:
    """Write the fully resolved configuration of the run as YAML (atomically)."""
    import dataclasses

    import yaml

    from lit_compress.utils.io import write_text_atomic

    def plain(value: object) -> object:
        return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value  # type: ignore[arg-type]

    resolved = {k: plain(v) for k, v in sections.items()}
    resolved["lit_compress_version"] = _version()
    resolved["cwd"] = os.getcwd()
    return write_text_atomic(out_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lit-compress")
    except PackageNotFoundError:
        return "unknown"
