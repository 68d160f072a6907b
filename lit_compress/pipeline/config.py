"""The main job's own knobs, and the plan built from its YAML (``lit-compress pipeline``).

Everything Lightning builds (datamodule, LightningModule, Trainer and its callbacks) is written as in a
``lit-compress fit`` recipe and parsed by LightningCLI (:mod:`lit_compress.pipeline.recipes`); only the knobs
that belong to the pipeline itself are typed here: which stages run, the teacher's ``finetune``, the vocabulary
trimming and the schedule fractions of the compression stages, the export formats and the benchmark's budget.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from lit_compress.bench.suite import BenchmarkSettings
from lit_compress.errors import UserInputError
from lit_compress.export.api import export_model
from lit_compress.export.parity import Int8Gate
from lit_compress.pipeline.convergence import EarlyStoppingOptions
from lit_compress.pipeline.recipes import deep_merge, expand_dotted, parse_recipe, split_section

StageName = Literal["teacher", "distill", "prune", "qat", "export", "benchmark"]
STAGES: tuple[str, ...] = ("teacher", "distill", "prune", "qat", "export", "benchmark")
TRAINING_STAGES = ("teacher", "distill", "prune", "qat")
#: The model class of a training stage when neither ``defaults`` nor the stage names one.
STAGE_MODELS = {"teacher": "lit_compress.distill.ClassifierModule", "distill": "lit_compress.distill.DistillationModule",
                "prune": "lit_compress.distill.DistillationModule", "qat": "lit_compress.distill.DistillationModule"}
DATAMODULE = "lit_compress.data.TextClassificationDataModule"


@dataclass(frozen=True)
class TeacherOptions:
    """Teacher stage knobs.

    Attributes:
        finetune: Fine-tune the teacher (``false``: only evaluate and save it).
        early_stopping: Train until the validation metric stops improving (the recipe's ``max_epochs`` is the
            upper bound) and restore the best epoch's weights; ``patience: 0`` trains exactly ``max_epochs``.
    """

    finetune: bool = True
    early_stopping: EarlyStoppingOptions = field(default_factory=EarlyStoppingOptions)

    def __post_init__(self) -> None:
        if isinstance(self.early_stopping, Mapping):
            object.__setattr__(self, "early_stopping", EarlyStoppingOptions(**self.early_stopping))


@dataclass(frozen=True)
class DistillOptions:
    """The distillation stage has no knobs of its own (everything is in its recipe)."""


@dataclass(frozen=True)
class PruneOptions:
    """Compression stage knobs (vocabulary trimming, then distillation with ``StructuredPruning``).

    Attributes:
        vocab_min_frequency: Keep tokens the training split uses at least this often (0 disables trimming).
        schedule_end: Fraction of the stage's steps at which each number-valued pruning ratio of the
            ``StructuredPruning`` callback is reached by a cubic ramp
            (:meth:`~lit_compress.prune.schedules.PolynomialDecay.over_fraction`); the rest recovers accuracy.
        updates: Mask updates over the stage (sets the ramp's frequency and the callback's ``every_n_steps``).
        trim_positions: Cut the student's absolute position table to the rows the data's ``max_length`` reads
            (:func:`~lit_compress.models.surgery.trim_positions`; exact for inputs truncated to ``max_length``,
            which the exported artifacts do). 512 -> 64 rows saves 86 KB of the main job's 4-bit artifact.
    """

    vocab_min_frequency: int = 2
    schedule_end: float = 0.6
    updates: int = 50
    trim_positions: bool = True

    def positions(self, datamodule: Any) -> int | None:
        """Rows of the position table the stage keeps: the datamodule's ``max_length`` (None: keep all)."""
        length = getattr(datamodule, "max_length", None)
        return int(length) if self.trim_positions and isinstance(length, int) else None

    def __post_init__(self) -> None:
        if not 0.0 < self.schedule_end <= 1.0:
            raise ValueError(f"prune.schedule_end must be in (0, 1], got {self.schedule_end}.")
        if self.vocab_min_frequency < 0:
            raise ValueError(f"prune.vocab_min_frequency must be >= 0, got {self.vocab_min_frequency}.")
        if self.updates < 1:
            raise ValueError(f"prune.updates must be >= 1, got {self.updates}.")


@dataclass(frozen=True)
class QATOptions:
    """Quantization-aware distillation knobs; one stage (``qat_<scheme>``) runs per scheme.

    Attributes:
        schemes: ``"dynamic"`` (mimics ORT dynamic quantization) and/or ``"static"`` (learned activation
            scales, exported as Q/DQ ONNX), or ``"auto"``: the one whose int8 kernels run the pruned student
            faster on this CPU, measured (:func:`~lit_compress.pipeline.compress.qat_schemes`).
        start_fraction: Fraction of the steps trained in fp32 before fake quantization starts (the callback's
            ``start_step``).
        freeze_fraction: Fraction of the steps after which static observers freeze (``freeze_observers_step``).
    """

    schemes: tuple[str, ...] = ("dynamic", "static")
    start_fraction: float = 0.0
    freeze_fraction: float = 0.7

    def __post_init__(self) -> None:
        object.__setattr__(self, "schemes", tuple(self.schemes))
        unknown = set(self.schemes) - {"dynamic", "static", "auto"}
        if unknown:
            raise ValueError(f"qat.schemes has unknown entries {sorted(unknown)}; use 'dynamic' and/or 'static', "
                             "or 'auto' (the faster on this CPU, measured).")
        if "auto" in self.schemes and len(self.schemes) > 1:
            raise ValueError("qat.schemes: 'auto' stands alone (it picks one scheme); got " + str(list(self.schemes)))
        for name in ("start_fraction", "freeze_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"qat.{name} must be in [0, 1], got {getattr(self, name)}.")


OPTIONS = {"teacher": TeacherOptions, "distill": DistillOptions, "prune": PruneOptions, "qat": QATOptions}


@dataclass(frozen=True)
class BenchmarkOptions:
    """The benchmark stage: how variants are measured (the final artifact is chosen within the run's
    ``accuracy_budget``).

    Attributes:
        settings: :class:`~lit_compress.bench.suite.BenchmarkSettings` (threads, runs, warm-up, batch sizes).
    """

    settings: BenchmarkSettings = field(default_factory=BenchmarkSettings)


def check_budget(accuracy_budget: float) -> float:
    """The run's accuracy budget, checked (accuracy points in [0, 100])."""
    if not 0.0 <= accuracy_budget <= 100.0:
        raise UserInputError(f"accuracy_budget is in accuracy points and must be in [0, 100], got {accuracy_budget} "
                             "(1.0 allows one point below the teacher on validation).")
    return float(accuracy_budget)


#: ``export_model`` arguments the pipeline sets itself (paths, examples, the run's config, ``data.max_length``).
EXPORT_SET_BY_PIPELINE = ("model_dir", "out_dir", "formats", "calibration_examples", "parity_examples", "max_length",
                          "run_config", "source_checkpoint")
DEFAULT_EXPORT_FORMATS = ("onnx-fp32", "ort-dynamic-int8", "ort-static-int8", "torch-dynamic-int8")
#: ``export_model``'s defaults, which the export options fall back to.
EXPORT_DEFAULTS = {n: p.default for n, p in inspect.signature(export_model).parameters.items()
                   if p.default is not inspect.Parameter.empty}  # fmt: skip


@dataclass(frozen=True)
class ExportPlan:
    """The export stage: ``formats`` of the distilled student, calibration texts, and ``export_model``'s own
    keyword arguments (``per_channel``, ``target``, ``int8_gate``, ``quantize_embeddings``, ``embedding_bits``,
    ``opset``, ...; their defaults are ``export_model``'s), which the QAT stages also follow."""

    formats: tuple[str, ...] = DEFAULT_EXPORT_FORMATS
    calibration_size: int = 256
    options: Mapping[str, Any] = field(default_factory=dict)

    def option(self, name: str) -> Any:
        """An ``export_model`` argument: as given, else ``export_model``'s default."""
        return self.options[name] if name in self.options else EXPORT_DEFAULTS[name]

    @property
    def target(self) -> str:
        return str(self.option("target"))

    @property
    def int8_gate(self) -> Int8Gate:
        return self.option("int8_gate") or Int8Gate()

    @property
    def per_channel(self) -> bool:
        return bool(self.option("per_channel"))

    @property
    def quantize_embeddings(self) -> bool:
        return bool(self.option("quantize_embeddings"))


@dataclass(frozen=True)
class StagePlan:
    """One training stage: its fit recipe (before the pipeline fills in what earlier stages made) and knobs."""

    name: str
    recipe: Mapping[str, Any]
    options: Any


@dataclass(frozen=True)
class Plan:
    """The whole run, validated before the run directory exists."""

    stages: tuple[str, ...]
    training: Mapping[str, StagePlan]
    export: ExportPlan
    benchmark: BenchmarkOptions
    accuracy_budget: float = 1.0

    def runs(self, stage: str) -> bool:
        return stage in self.stages

    def resolved(self) -> dict[str, Any]:
        """The plan as plain data (the run's ``config.yaml``)."""
        out: dict[str, Any] = {"stages": list(self.stages)}
        for name, stage in self.training.items():
            out[name] = {**dataclasses.asdict(stage.options), **stage.recipe}
        gate = self.export.options.get("int8_gate")
        options = {**self.export.options, **({"int8_gate": dataclasses.asdict(gate)} if gate else {})}
        out["export"] = {"formats": list(self.export.formats), "calibration_size": self.export.calibration_size,
                         **options}  # fmt: skip
        bench = dataclasses.asdict(self.benchmark)
        bench["settings"]["batch_sizes"] = list(bench["settings"]["batch_sizes"])
        out["benchmark"] = bench
        out["accuracy_budget"] = self.accuracy_budget
        return out


def build_plan(
    stages: list[str] | None,
    defaults: Mapping[str, Any] | None,
    sections: Mapping[str, Mapping[str, Any] | None],
    export: Mapping[str, Any] | None,
    benchmark: BenchmarkOptions | None,
    accuracy_budget: float = 1.0,
) -> Plan:
    """Merge ``defaults`` under each training stage, parse each recipe and the knobs, check the export options.

    Raises:
        UserInputError: One line naming the bad option and the fix.
    """
    chosen = tuple(STAGES if stages is None else [s for s in STAGES if s in stages])
    unknown = sorted(set(stages or ()) - set(STAGES))
    if unknown:
        raise UserInputError(f"stages: unknown stage(s) {unknown}; choose from {list(STAGES)}.")
    for required in ("teacher", "distill"):
        if required not in chosen:
            raise UserInputError(f"stages must include {required!r} (every later stage starts from its model).")
    base = expand_dotted(defaults or {})
    training = {name: _stage_plan(name, base, expand_dotted(sections.get(name) or {})) for name in TRAINING_STAGES}
    return Plan(chosen, training, _export_plan(expand_dotted(export or {})), benchmark or BenchmarkOptions(),
                check_budget(accuracy_budget))


def _stage_plan(name: str, defaults: Mapping[str, Any], section: Mapping[str, Any]) -> StagePlan:
    skeleton = {"data": {"class_path": DATAMODULE}, "model": {"class_path": STAGE_MODELS[name]}}
    merged = deep_merge(deep_merge(skeleton, defaults), section)
    recipe, knobs = split_section(merged)
    options = _options(name, OPTIONS[name], knobs, recipe["model"].get("class_path"))
    parse_recipe(recipe, name)
    return StagePlan(name, recipe, options)


def _stage_options(stage: str, model: str | None, top: list[str]) -> list[str]:
    """Dotted options of a stage, for "did you mean": its keys, the Trainer's and its model's parameters."""
    import importlib

    import lightning as L

    from lit_compress.utils.parse_errors import option_names

    names = [f"{stage}.{n}" for n in top] + option_names(L.Trainer, prefix=f"{stage}.trainer.")
    module, _, name = (model or "").rpartition(".")
    try:
        names += option_names(getattr(importlib.import_module(module), name), prefix=f"{stage}.model.init_args.")
    except (ImportError, AttributeError, ValueError):
        pass
    return names


def _options(stage: str, cls: type, knobs: Mapping[str, Any], model: str | None = None) -> Any:
    from lit_compress.pipeline.recipes import RECIPE_KEYS
    from lit_compress.utils.parse_errors import suggest

    names = [f.name for f in dataclasses.fields(cls)]
    for key in knobs:
        if key not in names:
            guess = suggest(f"{stage}.{key}", _stage_options(stage, model, [*names, *RECIPE_KEYS]))
            hint = f"; did you mean {guess!r}?" if guess else f"; a stage takes {list(RECIPE_KEYS[:4])} and {names}"
            raise UserInputError(f"unknown option '{stage}.{key}'{hint} (lit-compress pipeline --help lists the "
                                 "options)")  # fmt: skip
    try:
        return cls(**knobs)
    except (TypeError, ValueError) as err:
        raise UserInputError(f"{stage}: {err}") from err


def _export_plan(section: Mapping[str, Any]) -> ExportPlan:
    """``formats`` and ``calibration_size`` are the pipeline's; the rest is parsed as ``export_model``'s arguments."""
    import argparse

    from jsonargparse import ArgumentParser

    from lit_compress.export.manifest import ARTIFACT_KINDS
    from lit_compress.quant.targets import AUTO, TARGETS
    from lit_compress.utils.parse_errors import describe_parse_error, option_names

    section = dict(section)
    formats = tuple(section.pop("formats", DEFAULT_EXPORT_FORMATS))
    calibration_size = int(section.pop("calibration_size", 256))
    bad = [f for f in formats if f not in ARTIFACT_KINDS]
    if bad:
        raise UserInputError(f"export.formats: unknown kind(s) {bad}; choose from {list(ARTIFACT_KINDS)}.")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_function_arguments(export_model, "export", skip=set(EXPORT_SET_BY_PIPELINE))
    try:
        parsed = parser.parse_object({"export": section})
    except argparse.ArgumentError as err:
        names = [f"export.{n}" for n in option_names(export_model) if n not in EXPORT_SET_BY_PIPELINE]
        raise UserInputError(describe_parse_error(str(err), extra=[*names, "export.formats", "export.calibration_size"],
                                                  help_hint="lit-compress pipeline --help lists the options")) from err
    options = {k: v for k, v in parser.instantiate(parsed).export.items() if k in section}
    target = options.get("target", AUTO)
    if target != AUTO and target not in TARGETS:
        raise UserInputError(f"export.target={target!r} is not an int8 target; use 'auto' (this CPU) or one of "
                             f"{sorted(TARGETS)}.")  # fmt: skip
    return ExportPlan(formats, calibration_size, options)
