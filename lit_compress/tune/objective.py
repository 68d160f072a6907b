"""One Optuna trial: sampled recipe -> LightningCLI (``run=False``) -> fit -> validation and measured metrics.

Objectives are either metrics the LightningModule logs during validation (``val/acc``, ``val/f1``, ...) or
figures measured on the trained ``compression_target`` (:data:`MEASURED`): ``latency_ms`` (mean single-query
latency of the PyTorch model through the deployment ``Predictor``, after warm-up, ``threads`` intra-op threads),
``size_mb`` (bytes of the saved weight files / 2^20 -- unstructured zeros do not shrink it), ``gzip_mb`` (the
same files gzip-compressed: what zeros buy), ``parameters`` and ``nonzero`` (parameter counts).
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import lightning as L

from lit_compress.tune.space import ParamSpec, apply_params, deep_merge, get_path, set_path
from lit_compress.utils.io import write_text_atomic
from lit_compress.utils.target import compression_target

if TYPE_CHECKING:
    import optuna

Direction = Literal["maximize", "minimize"]
MEASURED = ("latency_ms", "size_mb", "gzip_mb", "parameters", "nonzero")
MB = 1024 * 1024


@dataclass(frozen=True)
class Objective:
    """A metric to optimise and its direction."""

    metric: str
    direction: Direction

    def __post_init__(self) -> None:
        if self.direction not in ("maximize", "minimize"):
            raise ValueError(f"objective {self.metric!r}: direction {self.direction!r} must be maximize or minimize.")

    @property
    def measured(self) -> bool:
        """Whether the value is measured on the trained model rather than logged during validation."""
        return self.metric in MEASURED


def parse_objectives(objectives: Mapping[str, str] | None) -> list[Objective]:
    """``{metric: direction}`` (ordered) -> objectives; default maximise ``val/acc``."""
    items = list((objectives or {"val/acc": "maximize"}).items())
    parsed = [Objective(str(m), d) for m, d in items]  # type: ignore[arg-type]
    if all(o.measured for o in parsed):
        raise ValueError(f"objectives {list(objectives or {})} are all measured figures; add a validation metric "
                         f"such as `val/acc: maximize` so the search also weighs quality.")  # fmt: skip
    return parsed


@dataclass
class Measurement:
    """How measured objectives are taken.

    Attributes:
        runs: Timed single-query calls for ``latency_ms``.
        warmup: Untimed calls first.
        threads: PyTorch intra-op threads during timing (fixed, so trials compare).
        split: Datamodule split whose median-length text is the timed query.
    """

    runs: int = 50
    warmup: int = 5
    threads: int = 1
    split: str = "validation"

    def __post_init__(self) -> None:
        if self.runs < 1 or self.warmup < 0 or self.threads < 1:
            raise ValueError(f"Measurement needs runs >= 1, warmup >= 0, threads >= 1; got {self}.")


@dataclass
class TrialRunner:
    """Callable Optuna objective: builds each trial's recipe, trains it and returns the objective values.

    Attributes:
        base: The parsed base recipe (a LightningCLI config mapping).
        specs: The search space.
        objectives: What to return, in order.
        out_dir: Study output directory; trial ``n`` works in ``out_dir/trials/trial_<n>``.
        trial_overrides: Partial recipe merged into every trial only (budget, logging); not part of best configs.
        measurement: Settings of measured objectives.
        keep_models: Keep each trial's saved ``compression_target`` in its trial directory.
        prune: Attach Optuna's Lightning pruning callback (single-objective studies only).
        study_name: Used as the W&B group of trials that log to W&B.
        command: The command line of this worker, recorded with each trial (and in the best config's header).
    """

    base: dict[str, Any]
    specs: list[ParamSpec]
    objectives: list[Objective]
    out_dir: Path
    trial_overrides: dict[str, Any] = field(default_factory=dict)
    measurement: Measurement = field(default_factory=Measurement)
    keep_models: bool = False
    prune: bool = True
    study_name: str = "lit-compress"
    command: str = ""

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        params = {spec.name: spec.suggest(trial) for spec in self.specs}
        trial_dir = self.out_dir / "trials" / f"trial_{trial.number:04d}"
        config = self.trial_config(trial.params, trial_dir)
        config_path = write_yaml(trial_dir / "recipe.yaml", config, [f"Trial {trial.number}: {params}"])
        trial.set_user_attr("trial_dir", str(trial_dir))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        if self.command:
            trial.set_user_attr("command", self.command)
        start = time.perf_counter()
        metrics = self.fit(trial, config_path, trial_dir)
        trial.set_user_attr("fit_seconds", round(time.perf_counter() - start, 2))
        for name, value in metrics.items():
            trial.set_user_attr(name, value)
        values = tuple(metrics[o.metric] for o in self.objectives)
        return values[0] if len(values) == 1 else values

    def trial_config(self, params: Mapping[str, Any], trial_dir: Path) -> dict[str, Any]:
        """Base recipe + trial overrides + sampled values, training into ``trial_dir``."""
        config = apply_params(deep_merge(self.base, self.trial_overrides), self.specs, params)
        set_path(config, "trainer.default_root_dir", str(trial_dir))
        _group_wandb_runs(config, self.study_name, trial_dir.name)
        return config

    def fit(self, trial: optuna.Trial, config_path: Path, trial_dir: Path) -> dict[str, float]:
        """Train the trial's recipe; validation metrics and measured figures as floats."""
        from lit_compress.cli import trainer_cli
        from lit_compress.loggers import finish_wandb

        with warnings.catch_warnings():  # the tune verb's own argv is not meant for the trial's CLI
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
            cli = trainer_cli(["--config", str(config_path)], run=False)
        trainer, module, datamodule = cli.trainer, cli.model, cli.datamodule
        last = _LastValidation()
        trainer.callbacks.append(last)
        if self.prune:
            from optuna_integration import PyTorchLightningPruningCallback

            trainer.callbacks.append(PyTorchLightningPruningCallback(trial, monitor=self.objectives[0].metric))
        try:
            trainer.fit(module, datamodule=datamodule)
            if last.step != trainer.global_step:  # the final weights were not validated yet
                trainer.validate(module, datamodule=datamodule, verbose=False)
            metrics = _scalars(trainer.callback_metrics)
            _require_metrics(metrics, [o.metric for o in self.objectives if not o.measured])
            wanted = [o.metric for o in self.objectives if o.measured]
            if wanted:
                metrics.update(self.measure(module, datamodule, wanted, trial_dir))
        finally:
            finish_wandb(trainer)
        return metrics

    def measure(self, module: L.LightningModule, datamodule: Any, wanted: Sequence[str],
                trial_dir: Path) -> dict[str, float]:  # fmt: skip
        """Measure ``wanted`` figures of the module's compression target (saved to disk first)."""
        target = compression_target(module)
        if self.keep_models:
            return measure_model(target, datamodule, wanted, trial_dir / "model", self.measurement)
        with tempfile.TemporaryDirectory(prefix="lc-tune-") as work:
            return measure_model(target, datamodule, wanted, Path(work) / "model", self.measurement)


def measure_model(model: Any, datamodule: Any, wanted: Sequence[str], model_dir: Path,
                  settings: Measurement) -> dict[str, float]:  # fmt: skip
    """Save ``model`` to ``model_dir`` and measure the ``wanted`` figures (see the module docstring)."""
    from lit_compress.bench.measure import fixed_threads, latency_stats, median_query, time_calls
    from lit_compress.export.files import artifact_files, gzip_size, size_bytes, torch_parameter_counts
    from lit_compress.models.io import save_model_dir

    tokenizer = getattr(datamodule, "tokenizer", None)
    save_model_dir(model, model_dir, tokenizer=tokenizer)
    files = artifact_files(model_dir)
    counts = torch_parameter_counts(model)
    out: dict[str, float] = {"size_mb": size_bytes(files) / MB, "parameters": float(counts["parameters"]),
                             "nonzero": float(counts["nonzero"])}  # fmt: skip
    if "gzip_mb" in wanted:
        out["gzip_mb"] = gzip_size(files) / MB
    if "latency_ms" in wanted:
        from lit_compress.export.predictor import Predictor

        if tokenizer is None or not hasattr(datamodule, "texts"):
            raise ValueError("The latency_ms objective needs a text datamodule with `tokenizer` and `texts(split)` "
                             "(e.g. TextClassificationDataModule).")  # fmt: skip
        query = median_query(datamodule.texts(settings.split))
        with fixed_threads(settings.threads):
            predictor = Predictor.from_path(model_dir, threads=settings.threads)
            timings = time_calls(lambda: predictor(query), runs=settings.runs, warmup=settings.warmup)
        out["latency_ms"] = latency_stats(timings)["mean_ms"]
    return out


def write_yaml(path: Path, config: Mapping[str, Any], comments: Sequence[str] = ()) -> Path:
    """Write a recipe as YAML (atomically), each of ``comments`` as a leading ``#`` line."""
    import yaml

    header = "".join(f"# {line}\n" for text in comments for line in str(text).splitlines())
    return write_text_atomic(path, header + yaml.safe_dump(dict(config), sort_keys=False))


class _LastValidation(L.Callback):
    """Records the global step of the last (non-sanity) validation."""

    def __init__(self) -> None:
        self.step = -1

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.step = trainer.global_step


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for name, value in metrics.items():
        try:
            out[name] = float(value)
        except (TypeError, ValueError):
            continue
    return out


def _require_metrics(metrics: Mapping[str, float], names: Sequence[str]) -> None:
    missing = [n for n in names if n not in metrics]
    if missing:
        raise ValueError(f"objective metric(s) {missing} were not logged; the run logged {sorted(metrics)}. "
                         f"Use one of those, or one of the measured figures {list(MEASURED)}.")  # fmt: skip




def _group_wandb_runs(config: dict[str, Any], group: str, name: str) -> None:
    """Give trials that log to W&B the study as group and the trial as run name (unless the recipe sets them)."""
    try:
        logger = get_path(config, "trainer.logger")
    except KeyError:
        return
    for entry in logger if isinstance(logger, list) else [logger]:
        if isinstance(entry, dict) and str(entry.get("class_path", "")).endswith("WandbLogger"):
            args = entry.setdefault("init_args", {})
            args.setdefault("group", group)
            args.setdefault("name", name)
