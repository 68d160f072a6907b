"""``lit-compress tune``: Optuna search over the hyper-parameters of a ``lit-compress fit`` recipe.

Each trial writes the base recipe with the sampled values (and the search-only ``trial_overrides``) to
``out_dir/trials/trial_<n>/recipe.yaml``, builds it with ``LightningCLI(run=False)``, fits it and returns the
objective values (validation metrics and/or figures measured on the trained ``compression_target``). The
study lives in an Optuna RDB storage -- a SQLite file in ``out_dir`` unless ``storage`` names another -- so
rerunning the command continues it, and several workers (processes or machines) pointed at the same storage
share it: ``n_trials`` counts the finished trials of the whole study, not of one worker. Trials of a worker that
died are found by their heartbeats, failed and retried (``heartbeat_interval``, ``grace_period``, ``retries``).
"""

from __future__ import annotations

import shlex
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

from lit_compress.errors import UserInputError
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
    grace_period: int | None = None,
    retries: int = 1,
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
        storage: Optuna RDB URL shared by all workers: ``postgresql://user:password@host:5432/db`` (needs
            ``pip install 'lit-compress[postgres]'``), ``mysql+pymysql://...`` or ``sqlite:///...``; default
            ``sqlite:///<out_dir>/study.db``. A URL that cannot be parsed or reached is a one-line error.
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
        heartbeat_interval: Seconds between a running trial's heartbeats (written by a thread of its worker). A
            trial whose worker died (killed, machine lost) stays RUNNING until another worker, before it starts
            its next trial, finds its heartbeat older than ``grace_period`` and marks it FAIL. ``None``
            disables heartbeats (and so the clean-up of dead workers' trials).
        grace_period: Seconds without a heartbeat after which a running trial counts as dead; default
            ``3 * heartbeat_interval``. Must be longer than ``heartbeat_interval``.
        retries: How many times the parameters of a trial failed that way are queued again (as a new trial,
            run by the next free worker); ``0``: never. Trials that raise are not retried.

    Returns:
        The summary written to ``best_params.json`` (plus ``outputs``: paths of the report files).
    """
    require("optuna", "tune")
    import optuna

    if n_trials is None and timeout is None:
        raise ValueError("Set n_trials or timeout (or both); otherwise the search never ends.")
    if n_trials is not None and n_trials < 0:
        raise ValueError(f"n_trials must be >= 0, got {n_trials}.")
    check_heartbeat(heartbeat_interval, grace_period, retries)
    base = deep_merge(load_recipe(recipe), overrides or {})
    specs, objs = parse_space(space), parse_objectives(objectives)
    check_keys(base, specs)
    per_trial = dict(trial_overrides or {})
    check_overrides(per_trial, specs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = study_name or out.resolve().name
    url = storage or sqlite_url(out / DB_FILE)
    study = open_study(name, url, objs, sampler, pruner, seed, heartbeat_interval, grace_period, retries)
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
    grace_period: int | None = None,
    retries: int = 1,
) -> optuna.Study:
    """Create the study, or load it when it exists (another worker, an earlier run), and check it matches."""
    import optuna

    storage = open_storage(url, heartbeat_interval, grace_period=grace_period, retries=retries)
    directions = [o.direction for o in objectives]
    single = len(objectives) == 1
    study = optuna.create_study(
        study_name=name, storage=storage, directions=directions, load_if_exists=True,
        sampler=sampler or optuna.samplers.TPESampler(seed=seed),
        pruner=(pruner or optuna.pruners.MedianPruner(n_startup_trials=3)) if single else optuna.pruners.NopPruner(),
    )  # fmt: skip
    found = [d.name.lower() for d in study.directions]
    if found != directions:
        raise ValueError(f"Study {name!r} in {_hide_password(url)} optimises {found}, but the objectives ask for "
                         f"{directions}. Use another study_name (or out_dir) for different objectives.")  # fmt: skip
    metrics = [o.metric for o in objectives]
    if study.metric_names is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(metrics)
    elif list(study.metric_names) != metrics:
        raise ValueError(f"Study {name!r} records the metrics {study.metric_names}, not {metrics}; "
                         f"use another study_name for other objectives.")  # fmt: skip
    return study


def open_storage(url: str, heartbeat_interval: int | None = 60, attempts: int = 5, *, grace_period: int | None = None,
                 retries: int = 1) -> optuna.storages.RDBStorage:  # fmt: skip
    """An ``RDBStorage`` for ``url`` with the heartbeat settings of :func:`tune`.

    SQLite waits up to a minute on a lock held by another worker; workers that start together may race to create
    the schema, which is retried a few times. A URL that cannot be parsed, names an unknown database kind or
    cannot be reached raises :class:`~lit_compress.errors.UserInputError` (password hidden); a missing driver
    raises ``ImportError`` saying what to install.

    Raises:
        UserInputError: Bad or unreachable URL, or bad heartbeat settings.
        ImportError: The database driver (``psycopg2``, ``pymysql``) is not installed.
    """
    import optuna
    from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, ProgrammingError

    check_heartbeat(heartbeat_interval, grace_period, retries)
    shown, url = _hide_password(url), postgres_driver(url)
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    heartbeat = _heartbeat_kwargs(heartbeat_interval, grace_period, retries) if heartbeat_interval else {}
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine, **heartbeat)
        except ArgumentError as err:  # includes NoSuchModuleError (unknown dialect)
            raise UserInputError(f"storage {shown!r} is not a database URL SQLAlchemy understands ({err}); write "
                                 f"e.g. postgresql://user:password@host:5432/dbname or sqlite:///path/study.db."
                                 ) from err  # fmt: skip
        except ImportError as err:
            raise ImportError(f"storage {shown!r} needs its database driver: {_driver_hint(url)} "
                              f"({err.__cause__ or err}).") from err  # fmt: skip
        except (OperationalError, IntegrityError, ProgrammingError) as err:
            if _schema_race(err, url) and attempt < attempts - 1:  # locked file; schema made by another worker
                time.sleep(0.5 * (attempt + 1))
                continue
            if isinstance(err, OperationalError):
                raise UserInputError(f"cannot open the study storage {shown!r}: {_first_line(err)}") from err
            raise
    raise AssertionError("unreachable")


def postgres_driver(url: str) -> str:
    """``postgresql://`` (or ``postgres://``) with the installed driver: SQLAlchemy >= 2.1 takes psycopg 3 for a
    URL without ``+driver``, but ``lit-compress[postgres]`` installs psycopg2. Other URLs are returned as is."""
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        return url
    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2://{rest}"
    return f"postgresql://{rest}"


def check_heartbeat(heartbeat_interval: int | None, grace_period: int | None, retries: int) -> None:
    """Refuse heartbeat settings that would fail live trials or make no sense, with the option to fix."""
    if heartbeat_interval is not None and heartbeat_interval < 1:
        raise UserInputError(f"heartbeat_interval must be a whole number of seconds >= 1 (or null to switch "
                             f"heartbeats off), got {heartbeat_interval}.")  # fmt: skip
    if grace_period is not None and heartbeat_interval is None:
        raise UserInputError("grace_period needs heartbeat_interval: without heartbeats no trial is ever found dead.")
    if grace_period is not None and grace_period <= heartbeat_interval:  # type: ignore[operator]
        raise UserInputError(f"grace_period ({grace_period} s) must be longer than heartbeat_interval "
                             f"({heartbeat_interval} s), or live trials would be failed between two heartbeats.")
    if retries < 0:
        raise UserInputError(f"retries must be >= 0, got {retries}.")


def _heartbeat_kwargs(interval: int, grace_period: int | None = None, retries: int = 1) -> dict[str, Any]:
    """Heartbeat settings: a trial silent for ``grace_period`` (default 3 intervals) is failed and retried."""
    import optuna

    kwargs: dict[str, Any] = {"heartbeat_interval": interval, "grace_period": grace_period or 3 * interval}
    if retries == 0:
        return kwargs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
            kwargs["heartbeat_stale_trial_callback"] = optuna.storages.RetryHeartbeatStaleTrialCallback(retries)
        else:  # pragma: no cover - optuna < 4.9
            kwargs["failed_trial_callback"] = optuna.storages.RetryFailedTrialCallback(max_retry=retries)
    return kwargs


def _schema_race(err: Exception, url: str) -> bool:
    """A locked SQLite file, or tables/types created by another worker at the same moment (worth a retry)."""
    text = str(err).lower()
    if url.startswith("sqlite"):
        return "locked" in text or "already exists" in text or "unique" in text
    return "already exists" in text or "duplicate key" in text or "unique constraint" in text


def _hide_password(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: show up to the host part only
        return url.split("@")[-1] if "@" in url else url


def _driver_hint(url: str) -> str:
    if url.startswith("postgres"):
        return "pip install 'lit-compress[postgres]' (psycopg2-binary)"
    if url.startswith("mysql"):
        return "pip install pymysql and write mysql+pymysql://..."
    return "install the SQLAlchemy driver named in the URL"


def _first_line(err: Exception) -> str:
    """The driver's message of a SQLAlchemy error, without SQLAlchemy's background link and SQL echo."""
    orig = getattr(err, "orig", None)
    text = str(orig if orig is not None else err).strip()
    return " ".join(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("(Backg"))


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
