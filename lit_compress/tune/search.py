"""``lit-compress tune``: Optuna search over the hyper-parameters of a ``lit-compress fit`` recipe.

Each trial writes the base recipe with the sampled values (and the search-only ``trial_overrides``) to
``out_dir/trials/trial_<n>/recipe.yaml``, builds it with ``LightningCLI(run=False)``, fits it and returns the
objective values (validation metrics and/or figures measured on the trained ``compression_target``). The
study lives in an Optuna RDB storage -- a SQLite file in ``out_dir`` unless ``storage`` names another -- so
rerunning the command continues it, and several workers (processes or machines) pointed at the same storage
share it: ``n_trials`` counts the finished trials of the whole study, not of one worker.
"""

from __future__ import annotations

import shlex
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

from lit_compress.tune.objective import Measurement, Objective, TrialRunner, parse_objectives
from lit_compress.tune.report import best_trials, write_report
from lit_compress.tune.space import ParamSpec, check_keys, deep_merge, parse_space
from lit_compress.utils.optional import require

if TYPE_CHECKING:
    import optuna
    from optuna.pruners import BasePruner
    from optuna.samplers import BaseSampler

DB_FILE = "study.db"
#: Plain YAML values. (Not ``Any``: jsonargparse instantiates ``class_path`` mappings found under ``Any``, and a
#: callback entry of ``trial_overrides`` must stay a mapping to be written into the trial's recipe.)
YamlValue = Union[dict, list, str, int, float, bool, None]


def tune(
    recipe: str,
    space: str | dict[str, dict],
    objectives: dict[str, Literal["maximize", "minimize"]] | None = None,
    out_dir: str = "runs/tune",
    study_name: str | None = None,
    storage: str | None = None,
    n_trials: int | None = 20,
    timeout: float | None = None,
    overrides: dict[str, YamlValue] | None = None,
    trial_overrides: dict[str, YamlValue] | None = None,
    sampler: BaseSampler | None = None,
    pruner: BasePruner | None = None,
    seed: int | None = None,
    measurement: Measurement | None = None,
    keep_models: bool = False,
    catch_errors: bool = False,
    heartbeat_interval: int | None = 60,
) -> dict[str, Any]:
    """Search a recipe's hyper-parameters with Optuna and write the best config and a report.

    Args:
        recipe: Base ``lit-compress fit`` recipe (LightningCLI YAML), e.g. ``configs/distill_bbc.yaml``.
        space: Search space (``name: {key, type, low, high, log, step, choices}``) or a YAML file holding it;
            see :mod:`lit_compress.tune.space`.
        objectives: Ordered ``{metric: maximize|minimize}``; validation metrics the module logs (``val/acc``)
            or figures measured on the trained model (``latency_ms``, ``size_mb``, ``gzip_mb``,
            ``parameters``, ``nonzero``). Several objectives make a multi-objective study with a Pareto front.
            Default ``{val/acc: maximize}``.
        out_dir: Output directory: the SQLite study, one directory per trial, the report.
        study_name: Name of the study in the storage (default: the name of ``out_dir``).
        storage: Optuna RDB URL (``postgresql://...``, ``mysql+pymysql://...``, ``sqlite:///...``) shared by all
            workers; default ``sqlite:///<out_dir>/study.db``.
        n_trials: Finished (complete or pruned) trials the study should reach, counted over all workers and
            previous runs (several workers may overshoot by up to one trial each). ``None``: until ``timeout``.
        timeout: Seconds this worker keeps starting trials.
        overrides: Partial recipe merged into the recipe itself -- kept in the best config -- e.g. a fine-tuned
            teacher ``{model: {init_args: {teacher: runs/main/teacher/model}}}`` or an extra callback. Dotted
            keys (``model.init_args.teacher``) work too.
        trial_overrides: Partial recipe merged into every trial only -- budget and logging such as
            ``{trainer: {limit_train_batches: 10, enable_checkpointing: false}}``; not written into the
            best config. Dotted keys (``trainer.max_steps``) work too.
        sampler: Optuna sampler (YAML: ``class_path: optuna.samplers.TPESampler``); default TPE.
        pruner: Optuna pruner for single-objective studies; default ``MedianPruner(n_startup_trials=3)``. Use
            ``optuna.pruners.NopPruner`` to switch pruning off.
        seed: Seed of the default sampler. Give each parallel worker its own seed (or none): workers with the
            same seed propose the same first trials.
        measurement: How measured objectives are taken (timed runs, threads, split of the query).
        keep_models: Keep each trial's saved model in its trial directory (measured objectives only).
        catch_errors: Record a trial that raises as failed and go on (default: stop on the first error).
        heartbeat_interval: Seconds between a running trial's heartbeats; trials of a worker that died are
            marked failed and retried once by the next worker. ``None`` disables it.

    Returns:
        The summary written to ``best_params.json`` (plus ``outputs``: paths of the report files).
    """
    require("optuna", "tune")
    import optuna

    if n_trials is None and timeout is None:
        raise ValueError("Set n_trials or timeout (or both); otherwise the search never ends.")
    if n_trials is not None and n_trials < 0:
        raise ValueError(f"n_trials must be >= 0, got {n_trials}.")
    base = deep_merge(load_recipe(recipe), overrides or {})
    specs, objs = parse_space(space), parse_objectives(objectives)
    check_keys(base, specs)
    per_trial = dict(trial_overrides or {})
    check_overrides(per_trial, specs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = study_name or out.resolve().name
    study = open_study(name, storage or sqlite_url(out / DB_FILE), objs, sampler, pruner, seed, heartbeat_interval)
    _remember(study, recipe, space)
    prune = len(objs) == 1 and not isinstance(study.pruner, optuna.pruners.NopPruner)
    if prune:
        _require_pruning_callback()
    runner = TrialRunner(base, specs, objs, out, per_trial, measurement or Measurement(), keep_models, prune, name,
                         command=_command())
    start = time.perf_counter()
    run_trials(study, runner, n_trials, timeout, catch_errors)
    paths = write_report(study, out, base, specs, objs)
    summary = _summary(study, paths, time.perf_counter() - start)
    _print_summary(summary)
    return summary


def run_trials(study: optuna.Study, objective: TrialRunner, n_trials: int | None, timeout: float | None,
               catch_errors: bool = False) -> None:  # fmt: skip
    """Run trials until the study has ``n_trials`` finished ones (all workers) or ``timeout`` seconds pass."""
    import optuna

    remaining = _remaining(study, n_trials)
    if remaining is not None and remaining <= 0:
        return
    stop = [optuna.study.MaxTrialsCallback(n_trials, states=_finished())] if n_trials is not None else []
    study.optimize(objective, n_trials=remaining, timeout=timeout, callbacks=stop,
                   catch=(Exception,) if catch_errors else (), gc_after_trial=True)  # fmt: skip


def load_recipe(recipe: str) -> dict[str, Any]:
    """Read a ``lit-compress fit`` recipe as a mapping (``seed_everything``/``trainer``/``model``/``data``)."""
    import yaml

    path = Path(recipe)
    if not path.is_file():
        raise FileNotFoundError(f"Recipe {path} does not exist (paths are relative to the working directory).")
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict):
        raise ValueError(f"Recipe {path} must be a YAML mapping with trainer/model/data sections.")
    if "fit" in config:
        raise ValueError(f"Recipe {path} is written for a subcommand (`fit:` at the top); give the fit section "
                         f"its own file (the format `lit-compress fit --config` reads).")  # fmt: skip
    return config


def check_overrides(overrides: Mapping[str, Any], specs: list[ParamSpec]) -> None:
    """A searched key must not also be fixed by ``trial_overrides``."""
    fixed = set(_flatten(overrides))
    clashes = sorted(s.key for s in specs for k in fixed
                     if s.key == k or s.key.startswith(k + ".") or k.startswith(s.key + "."))  # fmt: skip
    if clashes:
        raise ValueError(f"trial_overrides fix the searched key(s) {clashes}; remove them from one of the two.")


def sqlite_url(path: Path) -> str:
    """SQLAlchemy URL of a SQLite file (absolute, so every worker finds the same file)."""
    return f"sqlite:///{path.resolve()}"


def open_study(
    name: str,
    url: str,
    objectives: list[Objective],
    sampler: BaseSampler | None = None,
    pruner: BasePruner | None = None,
    seed: int | None = None,
    heartbeat_interval: int | None = 60,
) -> optuna.Study:
    """Create the study, or load it when it exists (another worker, an earlier run), and check it matches."""
    import optuna

    storage = open_storage(url, heartbeat_interval)
    directions = [o.direction for o in objectives]
    single = len(objectives) == 1
    study = optuna.create_study(
        study_name=name, storage=storage, directions=directions, load_if_exists=True,
        sampler=sampler or optuna.samplers.TPESampler(seed=seed),
        pruner=(pruner or optuna.pruners.MedianPruner(n_startup_trials=3)) if single else optuna.pruners.NopPruner(),
    )  # fmt: skip
    found = [d.name.lower() for d in study.directions]
    if found != directions:
        raise ValueError(f"Study {name!r} in {url} optimises {found}, but the objectives ask for {directions}. "
                         f"Use another study_name (or out_dir) for different objectives.")  # fmt: skip
    metrics = [o.metric for o in objectives]
    if study.metric_names is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(metrics)
    elif list(study.metric_names) != metrics:
        raise ValueError(f"Study {name!r} records the metrics {study.metric_names}, not {metrics}; "
                         f"use another study_name for other objectives.")  # fmt: skip
    return study


def open_storage(url: str, heartbeat_interval: int | None = 60, attempts: int = 5) -> optuna.storages.RDBStorage:
    """An ``RDBStorage`` for ``url``; SQLite waits up to a minute on a lock held by another worker.

    Workers that start together may race to create the schema; that is retried a few times.
    """
    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError

    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    heartbeat = _heartbeat_kwargs(heartbeat_interval) if heartbeat_interval else {}
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine, **heartbeat)
        except (OperationalError, IntegrityError):  # locked database; schema created by another worker meanwhile
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _heartbeat_kwargs(interval: int) -> dict[str, Any]:
    """Heartbeat settings: a trial silent for 3 intervals is failed and retried once (Optuna >= 4.9 API first)."""
    import optuna

    kwargs: dict[str, Any] = {"heartbeat_interval": interval, "grace_period": 3 * interval}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
            kwargs["heartbeat_stale_trial_callback"] = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
        else:  # pragma: no cover - optuna < 4.9
            kwargs["failed_trial_callback"] = optuna.storages.RetryFailedTrialCallback(max_retry=1)
    return kwargs


def _require_pruning_callback() -> None:
    # not `require(...)`: optuna_integration replaces its module object by a lazy one without __spec__,
    # so importlib.util.find_spec fails once it has been imported.
    try:
        import optuna_integration  # noqa: F401
    except ImportError as err:
        raise ImportError("Pruning trials needs `optuna-integration`: pip install 'lit-compress[tune]' "
                          "(or pass pruner: {class_path: optuna.pruners.NopPruner}).") from err


def _finished() -> tuple[Any, ...]:
    from optuna.trial import TrialState

    return (TrialState.COMPLETE, TrialState.PRUNED)


def _remaining(study: optuna.Study, n_trials: int | None) -> int | None:
    """Trials still to run for the study to reach ``n_trials`` finished ones (``None``: no limit)."""
    if n_trials is None:
        return None
    return max(0, n_trials - len(study.get_trials(deepcopy=False, states=_finished())))


def _remember(study: optuna.Study, recipe: str, space: Any) -> None:
    """Record what the study searches (first worker wins), for anyone reading the storage later."""
    attrs = study.user_attrs
    if "recipe" not in attrs:
        study.set_user_attr("recipe", str(recipe))
    if "space" not in attrs:
        study.set_user_attr("space", space if isinstance(space, str) else dict(space))


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in mapping.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            keys += _flatten(value, full + ".")
        else:
            keys.append(full)
    return keys


def _command() -> str:
    args = sys.argv[1:]
    return "lit-compress " + shlex.join(args) if args[:1] == ["tune"] else ""


def _summary(study: optuna.Study, paths: dict[str, Path], seconds: float) -> dict[str, Any]:
    import json

    best_file = paths.get("best_params")
    summary = json.loads(best_file.read_text()) if best_file else {"study": study.study_name, "best": None}
    summary["outputs"] = {k: str(v) for k, v in paths.items()}
    summary["worker_seconds"] = round(seconds, 1)
    summary["finished_trials"] = len([t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")])
    summary["n_best"] = len(best_trials(study))
    return summary


def _print_summary(summary: Mapping[str, Any]) -> None:
    best = summary.get("best")
    print(f"\nstudy {summary['study']!r}: {summary['finished_trials']} finished trials "
          f"({summary['worker_seconds']} s in this worker)")  # fmt: skip
    if best:
        print(f"best trial {best['number']}: {best['values']} with {best['params']}")
        print(f"best config: {best['config']}  ->  lit-compress fit --config {best['config']}")
    outputs = summary["outputs"]
    print("report: " + ", ".join(outputs[k] for k in ("trials_md", "best_params") if k in outputs))
