"""Reports from a study: trials table, best/Pareto configs, plots (studies built by hand, no training)."""

from __future__ import annotations

import csv
import json

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from lit_compress.tune.objective import Objective
from lit_compress.tune.report import best_trials, trial_rows, write_report
from lit_compress.tune.space import parse_space

BASE = {"trainer": {"max_epochs": 2}, "model": {"class_path": "m.M", "init_args": {"alpha": 0.5}}}
SPECS = parse_space({
    "alpha": {"key": "model.init_args.alpha", "type": "float", "low": 0.0, "high": 1.0},
    "layers": {"key": "model.init_args.student_layers", "type": "categorical", "choices": [[0], [0, 1], [0, 1, 2]]},
})  # fmt: skip
DISTS = {"alpha": FloatDistribution(0.0, 1.0), "layers": CategoricalDistribution(["[0]", "[0, 1]", "[0, 1, 2]"])}
# (alpha, layers, val/acc, latency_ms): Pareto-optimal are #0 (fastest), #2 (most accurate), #3 (between);
# #1 is dominated by #3 (lower accuracy, higher latency), #4 by #2 (equal accuracy, slower).
POINTS = [(0.1, "[0]", 0.70, 1.0), (0.2, "[0, 1]", 0.75, 2.5), (0.3, "[0, 1, 2]", 0.90, 3.0),
          (0.4, "[0, 1]", 0.80, 2.0), (0.5, "[0, 1, 2]", 0.90, 3.5)]  # fmt: skip
OBJECTIVES = [Objective("val/acc", "maximize"), Objective("latency_ms", "minimize")]


def _multi_study() -> optuna.Study:
    study = optuna.create_study(study_name="multi", directions=["maximize", "minimize"])
    study.set_metric_names(["val/acc", "latency_ms"])
    for alpha, layers, acc, ms in POINTS:
        attrs = {"val/f1": acc - 0.1, "worker": "w:1", "command": "lit-compress tune --config t.yaml"}
        params = {"alpha": alpha, "layers": layers}
        study.add_trial(create_trial(params=params, distributions=DISTS, values=[acc, ms], user_attrs=attrs))
    study.add_trial(create_trial(params={"alpha": 0.9, "layers": "[0]"}, distributions=DISTS, state=TrialState.FAIL))
    return study


def _dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """a dominates b for (maximise accuracy, minimise latency)."""
    return a[0] >= b[0] and a[1] <= b[1] and a != b


def test_pareto_front_is_the_non_dominated_set_sorted_by_the_first_objective() -> None:
    front = best_trials(_multi_study())
    values = [(p[2], p[3]) for p in POINTS]
    expected = [i for i, v in enumerate(values) if not any(_dominates(w, v) for w in values)]
    assert expected == [0, 2, 3]
    assert [t.number for t in front] == [2, 3, 0]  # best accuracy first


def test_multi_objective_report(tmp_path) -> None:
    study = _multi_study()
    paths = write_report(study, tmp_path, BASE, SPECS, OBJECTIVES)
    summary = json.loads((tmp_path / "best_params.json").read_text())
    assert [e["number"] for e in summary["pareto"]] == [2, 3, 0]
    assert summary["best"]["params"] == {"alpha": 0.3, "layers": [0, 1, 2]}
    assert summary["best"]["overrides"] == {"model.init_args.alpha": 0.3, "model.init_args.student_layers": [0, 1, 2]}
    assert summary["states"] == {"COMPLETE": 5, "FAIL": 1}
    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert best["model"]["init_args"] == {"alpha": 0.3, "student_layers": [0, 1, 2]}
    assert best["trainer"] == BASE["trainer"]
    header = (tmp_path / "best.yaml").read_text().splitlines()[:3]
    assert header[0].startswith("# Pareto-optimal trial 2")
    assert header[1] == "# Tuned with: lit-compress tune --config t.yaml"  # the command of the trial's worker
    assert header[-1] == f"# Run: lit-compress fit --config {tmp_path / 'best.yaml'}"
    for number in (0, 2, 3):
        cfg = yaml.safe_load((tmp_path / f"pareto/trial_{number:04d}.yaml").read_text())
        assert cfg["model"]["init_args"]["alpha"] == POINTS[number][0]
    assert not (tmp_path / "pareto/trial_0001.yaml").exists()
    pareto = list(csv.DictReader((tmp_path / "pareto.csv").open()))
    points = [(r["number"], float(r["val/acc"]), float(r["latency_ms"])) for r in pareto]
    assert points == [("2", 0.9, 3.0), ("3", 0.8, 2.0), ("0", 0.7, 1.0)]
    rows = list(csv.DictReader((tmp_path / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["COMPLETE"] * 5 + ["FAIL"]
    assert rows[1]["layers"] == "[0, 1]" and float(rows[1]["val/f1"]) == pytest.approx(0.65)
    assert "| 3 | COMPLETE | 0.8 | 2 | 0.4 | [0, 1] |" in (tmp_path / "trials.md").read_text()
    for name in ("optimization_history_val_acc", "optimization_history_latency_ms", "param_importances_val_acc",
                 "param_importances_latency_ms", "pareto_front"):  # fmt: skip
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_report_without_completed_trials_writes_the_table_and_notes_instead_of_crashing(tmp_path) -> None:
    study = optuna.create_study(study_name="empty", direction="maximize")
    study.add_trial(create_trial(params={"alpha": 0.1}, distributions={"alpha": DISTS["alpha"]}, state=TrialState.FAIL))
    paths = write_report(study, tmp_path, BASE, SPECS[:1], [Objective("val/acc", "maximize")])
    assert not (tmp_path / "best.yaml").exists() and "best_params" not in paths
    assert "| 0 | FAIL |" in (tmp_path / "trials.md").read_text()
    notes = (tmp_path / "plots" / "NOTES.md").read_text()
    assert "param_importances.png` was not drawn" in notes and "Completed trials: 0" in notes


def test_single_objective_rows_and_best(tmp_path) -> None:
    study = optuna.create_study(study_name="single", direction="maximize")
    for alpha, acc in ((0.1, 0.5), (0.6, 0.8), (0.9, 0.7)):
        study.add_trial(create_trial(params={"alpha": alpha}, distributions={"alpha": DISTS["alpha"]}, value=acc))
    study.add_trial(create_trial(params={"alpha": 0.2}, distributions={"alpha": DISTS["alpha"]},
                                 state=TrialState.PRUNED, intermediate_values={0: 0.3, 1: 0.31}))  # fmt: skip
    rows = trial_rows(study, SPECS[:1], [Objective("val/acc", "maximize")])
    assert rows[3]["state"] == "PRUNED" and rows[3]["pruned_at_step"] == 1 and rows[3]["val/acc"] is None
    write_report(study, tmp_path, BASE, SPECS[:1], [Objective("val/acc", "maximize")])
    summary = json.loads((tmp_path / "best_params.json").read_text())
    assert summary["best"]["number"] == 1 and summary["best"]["values"] == {"val/acc": 0.8} and "pareto" not in summary
    assert yaml.safe_load((tmp_path / "best.yaml").read_text())["model"]["init_args"]["alpha"] == 0.6


def test_a_plot_that_fails_is_noted_and_the_others_are_drawn(tmp_path, monkeypatch) -> None:
    from optuna.visualization import matplotlib as ovm

    def broken(*args, **kwargs):
        raise RuntimeError("no importances for you")

    monkeypatch.setattr(ovm, "plot_param_importances", broken)
    paths = write_report(_multi_study(), tmp_path, BASE, SPECS, OBJECTIVES)
    notes = (tmp_path / "plots" / "NOTES.md").read_text()
    assert "`param_importances_val_acc.png` was not drawn: RuntimeError: no importances for you" in notes
    assert "param_importances_val_acc" not in paths and paths["pareto_front"].is_file()
    assert (tmp_path / "best.yaml").is_file()
