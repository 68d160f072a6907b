"""Deployment stages of the main job: ONNX / int8 export of every student, then the side-by-side benchmark."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lit_compress.pipeline.config import EXPORT_DEFAULTS, BenchmarkOptions, ExportPlan
from lit_compress.pipeline.context import Deployable, RunContext, Stopwatch, TrainedModel
from lit_compress.pipeline.training import gate_examples, make_datamodule

#: Artifact kinds of the compressed students (the distilled student gets ``export.formats``).
COMPRESSED_FORMATS = {"pruned": ("onnx-fp32", "ort-dynamic-int8", "ort-static-int8"), "qat_dynamic": ("ort-dynamic-int8",)}
#: Row label of each (variant, kind): what the benchmark table shows. Labels are for people; the records
#: (:class:`~lit_compress.pipeline.context.Deployable`) carry the variant, kind and path.
_PREFIX = {"teacher": "teacher", "student": "student", "pruned": "pruned+trimmed", "qat_dynamic": "pruned+trimmed QAT",
           "qat_static": "pruned+trimmed QAT"}  # fmt: skip
_KIND = {"torch-fp32": "torch fp32", "onnx-fp32": "ORT fp32", "ort-dynamic-int8": "ORT dynamic int8",
         "ort-static-int8": "ORT static int8", "torch-dynamic-int8": "torch dynamic int8", "ort-int4": "ORT int4"}
TEACHER, STUDENT = "teacher torch fp32", "student torch fp32"


def label(variant: str, kind: str, trimmed: bool = True) -> str:
    """The benchmark row of ``variant`` as ``kind``: ``pruned+trimmed PTQ ORT static int8`` (``pruned ...`` when
    no vocabulary was trimmed, e.g. an image model)."""
    prefix = _PREFIX[variant] if trimmed else _PREFIX[variant].replace("+trimmed", "")
    if variant == "qat_static" and kind == "ort-static-int8":
        return f"{prefix} static int8 (Q/DQ)"
    ptq = " PTQ" if variant == "pruned" and "int" in kind else ""
    return f"{prefix}{ptq} {_KIND[kind]}"


def export_stage(ctx: RunContext, data: Mapping[str, Any], plan: ExportPlan, config: dict[str, Any]) -> list[Deployable]:
    """Export the distilled student (``plan.formats``) and the compressed students; return the artifacts made.

    The list follows the variants (student, pruned, QAT) and, within one, the kinds in the order asked; the
    static QAT's Q/DQ artifact (written by its stage) comes last.
    """
    stage = "export"
    out = ctx.stage_dir(stage)
    jobs: dict[str, tuple[TrainedModel, tuple[str, ...]]] = {}
    if ctx.student is not None:
        jobs["student"] = (ctx.student, tuple(plan.formats))
    for model in (ctx.pruned, *ctx.quantized):
        if model is not None and model.variant in COMPRESSED_FORMATS:
            jobs[model.variant] = (model, COMPRESSED_FORMATS[model.variant])
    if ctx.load_done(stage) is None:
        assert ctx.teacher is not None
        dm = make_datamodule(data, str(ctx.teacher.model_dir))
        calibration = dm.examples("train")[: plan.calibration_size]
        parity = gate_examples(dm, plan.int8_gate.min_texts)  # the validation split (topped up from train)
        refused: dict[str, dict[str, str]] = {}
        with Stopwatch(ctx, stage):
            for variant, (model, formats) in jobs.items():
                refused[variant] = export_gated(
                    str(model.model_dir), out / variant, formats, calibration_examples=calibration,
                    parity_examples=parity, max_length=getattr(dm, "max_length", EXPORT_DEFAULTS["max_length"]),
                    run_config=config, **{"int8_gate": plan.int8_gate, **plan.options})  # fmt: skip
        ctx.mark_done(stage, {"seconds": ctx.timings[stage], "refused": {k: v for k, v in refused.items() if v}})
    trimmed = bool(ctx.pruned is not None and ctx.pruned.vocabulary)
    artifacts = [a for variant in jobs for a in _exported(out / variant, variant, trimmed)]
    static = next((q for q in ctx.quantized if q.scheme == "static" and q.artifact is not None), None)
    if static is not None:
        artifacts.append(Deployable(label(static.variant, "ort-static-int8", trimmed), static.variant,
                                    "ort-static-int8", Path(static.artifact).parent))  # fmt: skip
    return artifacts


def export_gated(model_dir: str, out: Path, formats: Sequence[str], **options: Any) -> dict[str, str]:
    """``export_model`` of ``formats``; a kind refused by its int8 gate is left out (the message kept) and the
    others are exported again without it, so one artifact that does not compute what its simulating model computes
    is not shipped, and does not stop the run. Returns kind -> the gate's message for the refused kinds."""
    from lit_compress.export.api import export_model
    from lit_compress.export.parity import Int8GateError

    left, refused = list(formats), {}
    while left:
        try:
            export_model(model_dir, str(out), formats=list(left), **options)
            break
        except Int8GateError as err:
            kind = next((k for k in left if str(err).startswith(k)), None)
            if kind is None:
                raise
            refused[kind] = str(err)
            left.remove(kind)
            if not (out / kind / "manifest.json").exists():  # what the refused kind had written: not an artifact
                shutil.rmtree(out / kind, ignore_errors=True)
            print(f"[export] {out.name} {kind} not shipped, refused by its int8 gate: {err}")
    return refused


def _exported(directory: Path, variant: str, trimmed: bool) -> list[Deployable]:
    """The artifacts listed in an export's index manifest (skipped kinds are not there)."""
    from lit_compress.export.manifest import MANIFEST_NAME

    index = json.loads((directory / MANIFEST_NAME).read_text())
    return [Deployable(label(variant, kind, trimmed), variant, kind, directory / entry["dir"])
            for kind, entry in index["artifacts"].items()]  # fmt: skip


def benchmark_stage(ctx: RunContext, data: Mapping[str, Any], cfg: BenchmarkOptions,
                    artifacts: list[Deployable], accuracy_budget: float = 1.0) -> tuple[Deployable, str]:  # fmt: skip
    """Benchmark the teacher, the student and every artifact side by side, choose the final artifact.

    Every variant is scored on the validation split (to choose) and on the test split (to report), its
    latency, throughput and size measured once. The final artifact is the fastest by p50 single-query latency
    among the students and artifacts whose validation accuracy is within ``accuracy_budget`` points of the
    teacher's (:func:`~lit_compress.bench.select.select_final`); the choice and its reason are printed, drawn
    in the report and recorded in ``stage.json`` (``final`` with its variant, kind and path, ``final_reason``,
    ``selection``).

    Returns:
        The chosen record, and the Markdown report (the final artifact's line, then the table).
    """
    from lit_compress.bench.api import read_selection, run_benchmark
    from lit_compress.bench.suite import Variant

    stage = "benchmark"
    out = ctx.stage_dir(stage)
    assert ctx.teacher is not None and ctx.student is not None
    dm = make_datamodule(data, str(ctx.teacher.model_dir))
    records = [Deployable(TEACHER, "teacher", "torch-fp32", ctx.teacher.model_dir),
               Deployable(STUDENT, "student", "torch-fp32", ctx.student.model_dir), *artifacts]  # fmt: skip
    val_labels, test_labels = dm.labels("validation"), dm.labels("test")
    if not val_labels or not test_labels:
        raise ValueError("The benchmark needs labelled validation (to choose the final artifact) and test (to "
                         "report) splits; the data has no labels for one of them.")  # fmt: skip
    with Stopwatch(ctx, stage):
        paths = run_benchmark([Variant(r.name, str(r.path)) for r in records], dm.examples("test"), test_labels,
                              str(out), label_names=dm.label_names, settings=cfg.settings, baseline=TEACHER,
                              teacher=TEACHER, selection_examples=dm.examples("validation"),
                              selection_labels=val_labels, accuracy_budget=accuracy_budget)  # fmt: skip
    selection = read_selection(paths["json"])
    if selection is None:  # run_benchmark always chooses when given selection texts
        raise RuntimeError(f"{paths['json']} holds no selection block.")
    final = next(r for r in records if r.name == selection.chosen)
    print(f"final artifact: {final.name} — {selection.reason}")
    record = {"seconds": ctx.timings[stage], "final": final.as_dict(), "final_reason": selection.reason,
              "selection": selection.as_dict(), "paths": {k: str(v) for k, v in paths.items()}}  # fmt: skip
    ctx.mark_done(stage, record)
    return final, Path(paths["markdown"]).read_text()
