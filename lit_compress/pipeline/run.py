"""``lit-compress pipeline``: the main job, a sequence of ``lit-compress fit`` recipes writing into one run directory."""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lit_compress.errors import UserInputError
from lit_compress.pipeline.config import BenchmarkOptions, Plan, StageName, build_plan
from lit_compress.pipeline.recipes import deep_merge, expand_dotted
from lit_compress.pipeline.context import DONE_FILE, Deployable, PrunedModel, QuantizedModel, RunContext, TrainedModel
from lit_compress.pipeline.report import summary_table, write_summary
from lit_compress.pipeline.search import SearchOptions, SearchResult
from lit_compress.pipeline.stages import distill_stage, teacher_stage


#: A section of the YAML, kept as plain data (``dict[str, Any]`` would make jsonargparse build every
#: ``class_path`` it holds while parsing the command line; the stages' recipes are parsed by LightningCLI).
Section = dict


@dataclass(frozen=True)
class RunResults:
    """What a run made.

    Attributes:
        teacher: The fine-tuned teacher.
        student: The distilled student.
        pruned: The trimmed and pruned student (``None`` when the stage did not run).
        quantized: The QAT students, one per scheme.
        final: The final artifact chosen by the benchmark (``None`` when it did not run).
        search: The search stage's choice and Pareto front (``None`` without a search).
    """

    teacher: TrainedModel
    student: TrainedModel
    pruned: PrunedModel | None = None
    quantized: tuple[QuantizedModel, ...] = ()
    final: Deployable | None = None
    search: SearchResult | None = None


def run_pipeline(
    run_dir: str = "runs/main",
    resume: bool = False,
    threads: int | None = None,
    checkpoint_every_n_steps: int = 50,
    stages: list[StageName] | None = None,
    defaults: Section | None = None,
    teacher: Section | None = None,
    distill: Section | None = None,
    prune: Section | None = None,
    qat: Section | None = None,
    export: Section | None = None,
    benchmark: BenchmarkOptions | None = None,
    accuracy_budget: float = 1.0,
    search_minutes: float = 0.0,
    search: SearchOptions | None = None,
) -> RunResults:
    """Fine-tune the teacher, distil a student, compress and export it, and benchmark every variant.

    Stages, each writing into ``run_dir/<stage>/``: ``teacher`` → ``distill`` → ``prune`` (vocabulary
    trimming + gradual structured pruning while distilling) → ``qat_dynamic`` / ``qat_static``
    (quantization-aware distillation) → ``export`` (ONNX, ORT int8, torch int8, with manifests) →
    ``benchmark`` (the side-by-side table and plot, and the final artifact).

    Each training stage's section (``teacher``, ``distill``, ``prune``, ``qat``) is a ``lit-compress fit``
    recipe — ``seed_everything``, ``data``, ``model`` and ``trainer`` (callbacks included) as ``class_path`` /
    ``init_args`` — plus the stage's own knobs (:mod:`lit_compress.pipeline.config`). ``defaults`` is
    deep-merged under each of them and the stage's keys win (mappings merge key by key, lists and scalars are
    replaced, and a section naming another ``class_path`` than ``defaults`` starts afresh); a dotted option on
    the command line (``--prune.trainer.max_epochs 2``) lands in the same place. The pipeline fills in what a
    stage receives from the earlier ones (the teacher and student directories, the tokenizer, the Trainer's
    output directory and CSV logger, the callbacks' step schedules) and writes the result as
    ``run_dir/<stage>/recipe.yaml``, which ``lit-compress fit --config`` runs on its own. The resolved
    configuration is saved as ``run_dir/config.yaml``; the final table as ``run_dir/results.md`` and
    ``run_dir/benchmark/``.

    Args:
        run_dir: Output directory of the run.
        resume: Reuse stages already completed in ``run_dir`` (their ``stage.json`` exists) and continue a
            stage that was interrupted from its last checkpoint (same weights, optimizer, schedules, callback
            states, random state and position in the epoch's shuffled order: the result equals an
            uninterrupted run's).
        threads: torch intra-op threads for training (default: all cores).
        checkpoint_every_n_steps: Training stages write ``<stage>/checkpoints/last.ckpt`` (atomically) every this
            many optimizer steps, for ``resume``; 0 disables it. Removed when the stage is done.
        stages: The stages to run (default all; ``teacher`` and ``distill`` always run).
        defaults: Recipe keys shared by every training stage (data, common Trainer keys, distillation loss).
        teacher: The teacher's recipe (``model``: a ``ClassifierModule``) and ``finetune``.
        distill: The distillation recipe (``model``: a ``DistillationModule``; ``student_layers`` or ``student``).
        prune: The pruning recipe (a ``StructuredPruning`` callback), ``vocab_min_frequency``, ``schedule_end``.
        qat: The QAT recipe (a ``QuantizationAwareTraining`` callback), ``schemes``, ``start_fraction``,
            ``freeze_fraction``.
        export: ``formats`` of the distilled student, ``calibration_size``, and ``export_model``'s own options
            (``per_channel``, ``target``, ``int8_gate``, ``quantize_embeddings``, ...).
        benchmark: Benchmark settings (threads, timed runs, batch sizes).
        accuracy_budget: Validation accuracy points the final artifact may lose against the teacher (1.0:
            ``val_acc >= teacher_val_acc - 0.01``). The search keeps its candidates within it, and the benchmark
            picks the fastest variant within it as the final artifact.
        search_minutes: Minutes the ``search`` stage (after the teacher) spends on Optuna trials of the
            compression recipe — student layers, head/FFN pruning ratios, temperature/alpha, augmented text —
            before the chosen recipe replaces those keys of the ``distill`` / ``prune`` / ``qat`` sections;
            ``0``: no search, the sections are the recipe (see :mod:`lit_compress.pipeline.search`).
        search: The search space and proxy settings (:class:`~lit_compress.pipeline.search.SearchOptions`).

    Returns:
        The trained models and the final artifact.
    """
    import torch

    plan = build_plan(stages, defaults, {"teacher": teacher, "distill": distill, "prune": prune, "qat": qat},
                      export, benchmark, accuracy_budget)  # fmt: skip
    search_plan = check_search(plan, search_minutes, search)
    if threads:
        torch.set_num_threads(threads)
    if checkpoint_every_n_steps < 0:
        raise UserInputError(f"checkpoint_every_n_steps must be >= 0 (0: no mid-stage checkpoints), got "
                             f"{checkpoint_every_n_steps}")  # fmt: skip
    ctx = RunContext(run_dir=Path(run_dir), resume=resume, checkpoint_every_n_steps=checkpoint_every_n_steps)
    check_inputs(ctx, plan)
    created = not ctx.run_dir.exists()
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    try:
        searched = {"search_minutes": search_plan[0], "search": dataclasses.asdict(search_plan[1])} if search_plan else {}
        resolved = save_resolved_config(ctx.run_dir, plan, run_dir=run_dir, threads=threads, **searched)
        _train(ctx, plan, resolved, search_plan)
    except UserInputError:
        if created:
            _remove_unfinished(ctx.run_dir)
        raise
    table = summary_table(ctx)
    print("\nTraining stages (validation split, PyTorch):\n" + table)
    final = None
    data = plan.training["teacher"].recipe["data"]
    if plan.runs("export") or plan.runs("benchmark"):
        from lit_compress.pipeline.deploy import benchmark_stage, export_stage

        artifacts = export_stage(ctx, data, plan.export, resolved) if plan.runs("export") else []
        if plan.runs("benchmark"):
            final, bench_table = benchmark_stage(ctx, data, plan.benchmark, artifacts, plan.accuracy_budget)
            print("\nBenchmark (test split, batch 1 latency, %d thread(s)):\n%s"
                  % (plan.benchmark.settings.threads, bench_table))  # fmt: skip
            table += "\n\n## Benchmark\n\n" + bench_table
    write_summary(ctx, table)
    assert ctx.teacher is not None and ctx.student is not None
    return RunResults(ctx.teacher, ctx.student, ctx.pruned, tuple(ctx.quantized), final, ctx.search)


#: Sections of the YAML that are plain data, and so take dotted options on the command line.
SECTIONS = ("defaults", "teacher", "distill", "prune", "qat", "export")


def pipeline_cli(args: list[str]) -> RunResults:
    """``lit-compress pipeline [--config FILE] [options]``: :func:`run_pipeline` from the command line.

    jsonargparse parses the typed options (``--run_dir``, ``--resume``, ``--benchmark.settings.runs``, ...) and
    the ``--config`` files; a dotted option into a section (``--prune.trainer.max_epochs 2``,
    ``--defaults.data.init_args.max_length 32``) is deep-merged into that section afterwards, so it changes one
    key and keeps the rest of the section (jsonargparse would replace the section's nested mapping).
    """
    from jsonargparse import ActionConfigFile, ArgumentParser

    rest, overrides = _split_section_options(args)
    parser = ArgumentParser(prog="lit-compress pipeline", exit_on_error=False,
                            description=(run_pipeline.__doc__ or "").split("\n")[0])  # fmt: skip
    parser.add_argument("--config", action=ActionConfigFile,
                        help="A YAML file of the options (configs/main.yaml). A dotted option into a section "
                             f"({', '.join(SECTIONS)}), e.g. --prune.trainer.max_epochs 2, is deep-merged into "
                             "it after the files (--print_config shows the files and typed options only).")
    parser.add_function_arguments(run_pipeline, as_positional=False)
    init = parser.instantiate(parser.parse_args(rest))
    kwargs = {name: init[name] for name in inspect.signature(run_pipeline).parameters}
    for section, items in overrides.items():
        kwargs[section] = deep_merge(expand_dotted(kwargs.get(section) or {}), expand_dotted(items))
    return run_pipeline(**kwargs)


def _split_section_options(args: list[str]) -> tuple[list[str], dict[str, dict[str, str]]]:
    """``["--prune.trainer.max_epochs", "2", "--resume"]`` -> ``(["--resume"], {"prune": {"trainer.max_epochs": "2"}})``."""
    rest: list[str] = []
    overrides: dict[str, dict[str, str]] = {}
    tokens = iter(args)
    for token in tokens:
        name, eq, value = token[2:].partition("=")
        section, dot, key = name.partition(".")
        if not (token.startswith("--") and dot and key and section in SECTIONS):
            rest.append(token)
            continue
        overrides.setdefault(section, {})[key] = value if eq else next(tokens, "")
    return rest, overrides


def check_inputs(ctx: RunContext, plan: Plan) -> None:
    """Refuse bad data or model inputs before the run directory exists (cheap checks, no training).

    Local data files must exist, read as their format and have the text/label columns; the teacher (and a
    given student) must resolve to a local directory, a readable ``.ckpt``, the embedded default, or a hub
    model that is cached or reachable, and be of a family with a model layout when the run builds a student from
    its layers or prunes it structurally. Stages already completed in a resumed run are not re-checked. (The
    recipes and knobs were parsed already, by :func:`~lit_compress.pipeline.config.build_plan`.)

    Raises:
        UserInputError: What is wrong and which option fixes it.
    """
    from lit_compress.data.sources import check_source
    from lit_compress.models.hub import EMBEDDED_MODEL, check_model
    from lit_compress.pipeline.compress import STRUCTURED_PRUNING, pruning_callback
    from lit_compress.pipeline.training import make_datamodule

    recipe = plan.training["teacher"].recipe
    teacher = recipe["model"].get("init_args", {}).get("model") or EMBEDDED_MODEL
    dm = make_datamodule(recipe["data"], str(teacher))
    if getattr(dm, "source", None) is not None:
        check_source(dm.source)
    else:  # an image datamodule: reading its source checks it (files, folders, columns)
        dm.raw()
    student = plan.training["distill"].recipe["model"].get("init_args", {}).get("student")
    needs = None
    if plan.runs("prune") and pruning_callback(plan.training["prune"].recipe) == STRUCTURED_PRUNING:
        needs = "structured pruning"
    # a model given as a class_path entry (built from its arguments, e.g. an image model trained from scratch) is
    # checked when LightningCLI parses its recipe; names and directories are checked here
    if ctx.load_done("teacher") is None and isinstance(teacher, str):
        check_model(teacher, needs_layout=needs or (None if student else "a student from teacher layers"))
    if isinstance(student, str) and ctx.load_done("distill") is None:
        check_model(student, needs_layout=needs)


def _remove_unfinished(run_dir: Path) -> None:
    """Remove a run directory this invocation created when no stage finished in it (bad input found late)."""
    import shutil

    if not any(run_dir.rglob(DONE_FILE)):
        shutil.rmtree(run_dir, ignore_errors=True)


def check_search(plan: Plan, minutes: float, options: SearchOptions | None) -> tuple[float, SearchOptions] | None:
    """The search's time and options when it runs (``minutes > 0``), after checking the plan can take it.

    Raises:
        UserInputError: Negative minutes, or a plan whose stages the search cannot fill (no prune stage, or a
            pruning callback other than ``StructuredPruning``).
    """
    from lit_compress.pipeline.compress import STRUCTURED_PRUNING, pruning_callback

    if minutes < 0:
        raise UserInputError(f"search_minutes must be >= 0 (0: no search, the YAML's recipe), got {minutes}.")
    if minutes == 0:
        return None
    if not plan.runs("prune") or pruning_callback(plan.training["prune"].recipe) != STRUCTURED_PRUNING:
        raise UserInputError("search_minutes > 0 searches student layers and StructuredPruning ratios, so it needs "
                             "the prune stage with lit_compress.prune.StructuredPruning; set search_minutes: 0 for "
                             "this recipe.")  # fmt: skip
    if plan.training["distill"].recipe["model"].get("init_args", {}).get("student") is not None:
        raise UserInputError("search_minutes > 0 builds students from teacher layers, but distill.model.init_args."
                             "student names a student; remove it or set search_minutes: 0.")  # fmt: skip
    if isinstance(options, Mapping):  # from Python with the YAML's mapping (the CLI builds the dataclass)
        try:
            options = SearchOptions(**options)
        except (TypeError, ValueError) as err:
            raise UserInputError(f"search: {err}") from err
    return minutes, options or SearchOptions()


def _train(ctx: RunContext, plan: Plan, resolved: dict[str, Any], search: tuple[float, SearchOptions] | None) -> None:
    from lit_compress.pipeline.compress import prune_stage, qat_stage, qat_schemes

    from lit_compress.pipeline.search import apply_candidate, search_stage, with_search_student

    ctx.teacher = teacher_stage(ctx, plan.training["teacher"])
    if search is not None:  # distil the deepest student of the space; the trials keep layers of it
        plan = with_search_student(plan, search[1].space, ctx.teacher.model_dir)
    ctx.student = distill_stage(ctx, plan.training["distill"])
    layers = None
    if search is not None:
        minutes, options = search
        ctx.search = search_stage(ctx, plan, options, minutes, plan.accuracy_budget)
        plan, layers = apply_candidate(plan, ctx.search.candidate, options.space), ctx.search.candidate.layers
    if plan.runs("prune"):
        ctx.pruned = prune_stage(ctx, plan.training["prune"], layers)
    if plan.runs("qat"):
        qat = plan.training["qat"]
        for scheme in qat_schemes(ctx, qat, plan.export):
            ctx.quantized.append(qat_stage(ctx, qat, scheme, plan.export, resolved))


def save_resolved_config(out_dir: Path, plan: Plan, **top: object) -> dict[str, Any]:
    """Write the fully resolved configuration of the run as YAML (atomically) and return it."""
    import yaml

    from lit_compress.pipeline.recipes import plain_data
    from lit_compress.utils.io import write_text_atomic

    resolved: dict[str, Any] = plain_data({**top, **plan.resolved()})
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
