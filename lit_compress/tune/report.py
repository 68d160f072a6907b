"""Study reports: trials table, best parameters, best (or Pareto-optimal) configs, and Optuna's plots.

Everything is derived from the study in storage, so any worker (or a later ``--n_trials 0`` call) can rewrite
the report; files are written atomically, so concurrent workers never leave a half-written one.

Layout under ``out_dir``::

    best_params.json       best trial (and the Pareto front of a multi-objective study)
    best.yaml              recipe with the best trial's values: `lit-compress fit --config best.yaml`
    pareto/trial_<n>.yaml  one recipe per Pareto-optimal trial (multi-objective studies)
    trials.csv, trials.md  every trial: state, objective values, parameters, metrics, worker, directory
    pareto.csv, pareto.md  the Pareto front (multi-objective studies)
    plots/*.png            optimization history, parameter importances (per objective), Pareto front
    plots/NOTES.md         why a plot is missing (e.g. too few finished trials)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lit_compress.bench.report import csv_text
from lit_compress.tune.objective import Objective, write_yaml
from lit_compress.tune.space import ParamSpec, apply_params
from lit_compress.utils.io import atomic_path, write_json_atomic, write_text_atomic

if TYPE_CHECKING:
    import optuna

_INTERNAL_ATTRS = ("trial_dir", "worker", "fit_seconds", "command")


def trial_rows(
    study: optuna.Study, specs: Sequence[ParamSpec], objectives: Sequence[Objective]
) -> list[dict[str, Any]]:
    """One flat row per trial: number, state, objective values, parameters, logged metrics, bookkeeping."""
    rows = []
    for t in study.trials:
        values = t.values or [None] * len(objectives)
        row: dict[str, Any] = {"number": t.number, "state": t.state.name}
        row.update({o.metric: v for o, v in zip(objectives, values)})
        row.update({s.name: t.params.get(s.name) for s in specs})
        row.update({k: v for k, v in sorted(t.user_attrs.items()) if k not in _INTERNAL_ATTRS and k not in row})
        if t.state.name == "PRUNED" and t.intermediate_values:
            row["pruned_at_step"] = max(t.intermediate_values)
        row["fit_seconds"] = t.user_attrs.get("fit_seconds")
        row["worker"] = t.user_attrs.get("worker")
        row["trial_dir"] = t.user_attrs.get("trial_dir")
        rows.append(row)
    return rows


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub Markdown table (floats with 4 significant digits, missing cells as ``–``)."""
    cols = list(columns or dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def best_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The best trial of a single-objective study, or the Pareto front of a multi-objective one
    (sorted by the first objective, best first); empty when no trial completed."""
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not complete:
        return []
    if len(study.directions) == 1:
        return [study.best_trial]
    sign = -1.0 if study.directions[0].name == "MAXIMIZE" else 1.0
    return sorted(study.best_trials, key=lambda t: sign * t.values[0])


def write_report(study: optuna.Study, out_dir: str | Path, base: Mapping[str, Any], specs: Sequence[ParamSpec],
                 objectives: Sequence[Objective]) -> dict[str, Path]:  # fmt: skip
    """Write every report file (see the module docstring); returns their paths by name."""
    out = Path(out_dir)
    rows = trial_rows(study, specs, objectives)
    paths = {"trials_csv": write_text_atomic(out / "trials.csv", csv_text(rows)),
             "trials_md": write_text_atomic(out / "trials.md", _trials_markdown(study, rows, objectives))}  # fmt: skip
    front = best_trials(study)
    if front:
        paths.update(_write_best(study, out, base, specs, objectives, front))
    paths.update(write_plots(study, out / "plots", objectives))
    return paths


def _write_best(study: optuna.Study, out: Path, base: Mapping[str, Any], specs: Sequence[ParamSpec],
                objectives: Sequence[Objective], front: list[Any]) -> dict[str, Path]:  # fmt: skip
    paths: dict[str, Path] = {}
    entries = []
    multi = len(objectives) > 1
    for rank, trial in enumerate(front):
        values = ", ".join(f"{o.metric}={v:.4g}" for o, v in zip(objectives, trial.values))
        what = "Pareto-optimal trial" if multi else "Best trial"
        config = apply_params(base, list(specs), trial.params)
        files = [out / f"pareto/trial_{trial.number:04d}.yaml"] if multi else []
        files += [out / "best.yaml"] if rank == 0 else []
        for path in files:
            write_yaml(path, config, [f"{what} {trial.number} of study {study.study_name!r} ({values}).",
                                      *([f"Tuned with: {c}"] if (c := trial.user_attrs.get("command")) else []),
                                      f"Run: lit-compress fit --config {path}"])  # fmt: skip
        entries.append(_trial_entry(trial, specs, objectives, files[0]))
    summary: dict[str, Any] = {
        "study": study.study_name,
        "objectives": {o.metric: o.direction for o in objectives},
        "best": {**entries[0], "config": str(out / "best.yaml")},
        "states": _state_counts(study),
    }
    if len(objectives) > 1:
        summary["pareto"] = entries
        rows = [{"number": e["number"], **e["values"], **e["params"], "config": e["config"]} for e in entries]
        paths["pareto_csv"] = write_text_atomic(out / "pareto.csv", csv_text(rows))
        paths["pareto_md"] = write_text_atomic(out / "pareto.md", "# Pareto front\n\n" + markdown_table(rows))
    paths["best_params"] = write_json_atomic(out / "best_params.json", summary)
    paths["best_config"] = out / "best.yaml"
    return paths


def _trial_entry(trial: Any, specs: Sequence[ParamSpec], objectives: Sequence[Objective], path: Path) -> dict[str, Any]:
    params = {s.name: s.value(trial.params[s.name]) for s in specs if s.name in trial.params}
    return {"number": trial.number, "values": {o.metric: v for o, v in zip(objectives, trial.values)},
            "params": params, "overrides": {s.key: params[s.name] for s in specs if s.name in params},
            "config": str(path), "trial_dir": trial.user_attrs.get("trial_dir")}  # fmt: skip


def _trials_markdown(study: optuna.Study, rows: list[dict[str, Any]], objectives: Sequence[Objective]) -> str:
    directions = ", ".join(f"{o.direction} `{o.metric}`" for o in objectives)
    counts = ", ".join(f"{k.lower()} {v}" for k, v in _state_counts(study).items())
    head = f"# Study `{study.study_name}`\n\nObjectives: {directions}. Trials: {counts}.\n\n"
    return head + (markdown_table(rows) if rows else "No trials yet.\n")


def _state_counts(study: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def write_plots(study: optuna.Study, out_dir: Path, objectives: Sequence[Objective]) -> dict[str, Path]:
    """Optimization history and parameter importances per objective, and the Pareto front (2-3 objectives).

    A plot that cannot be drawn (too few finished trials, a single distinct value, ...) is skipped and the
    reason written to ``NOTES.md``; reports never fail because of a plot.
    """
    from optuna.visualization import matplotlib as ovm

    names = [o.metric for o in objectives]
    done = sum(t.state.name == "COMPLETE" for t in study.trials)
    jobs: list[tuple[str, int, Callable[[], Any]]] = []  # (file stem, completed trials it needs, draw)
    for i, metric in enumerate(names):
        suffix = "" if len(names) == 1 else f"_{_slug(metric)}"
        kwargs = {"target": None if len(names) == 1 else (lambda t, i=i: t.values[i]), "target_name": metric}
        jobs.append((f"optimization_history{suffix}", 1, lambda kw=kwargs: ovm.plot_optimization_history(study, **kw)))
        jobs.append((f"param_importances{suffix}", 2, lambda kw=kwargs: ovm.plot_param_importances(study, **kw)))
    if 2 <= len(names) <= 3:
        jobs.append(("pareto_front", 1, lambda: ovm.plot_pareto_front(study, target_names=names)))
    paths, notes = {}, []
    for name, needed, draw in jobs:
        if done < needed:
            notes.append(f"- `{name}.png` was not drawn: it needs {needed} completed trial(s), the study has {done}.")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna's ExperimentalWarning on the matplotlib backend
                paths[name] = _save_axes(draw(), out_dir / f"{name}.png")
        except Exception as err:  # noqa: BLE001 -- a plot must never fail the report
            notes.append(f"- `{name}.png` was not drawn: {type(err).__name__}: {err}")
    text = "\n".join(notes) if notes else "All plots were drawn."
    if done < 10:
        text += ("\n\nWith fewer than 10 completed trials, parameter importances say little: they rank how each "
                 "parameter's sampled values separate good from bad trials.")  # fmt: skip
    paths["plot_notes"] = write_text_atomic(out_dir / "NOTES.md", f"# Plots\n\nCompleted trials: {done}.\n\n{text}\n")
    return paths


def _save_axes(axes: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt
    import numpy as np

    first = np.asarray(axes).ravel()[0]
    figure = first.figure
    figure.set_size_inches(max(figure.get_size_inches()[0], 8), max(figure.get_size_inches()[1], 5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    plt.close(figure)
    return path


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")
