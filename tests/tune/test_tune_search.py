"""End-to-end searches on the tiny recipe: report, resume, best config that fits, Pareto front, pruning, workers."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from lit_compress.cli import main
from lit_compress.errors import UserInputError
from lit_compress.tune import Measurement, open_storage, tune
from lit_compress.tune.search import sqlite_url

ROOT = Path(__file__).resolve().parents[2]
SPACE = {
    "alpha": {"key": "model.init_args.alpha", "type": "float", "low": 0.0, "high": 1.0},
    "temperature": {"key": "model.init_args.temperature", "type": "int", "low": 1, "high": 8},
    "lr": {"key": "model.init_args.lr", "type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
    "epochs": {"key": "trainer.max_epochs", "type": "int", "low": 1, "high": 2},
}
BUDGET = {"trainer": {"limit_train_batches": 2}}


def _load(out: Path) -> optuna.Study:
    """The study of a search (named after its out_dir by default)."""
    return optuna.load_study(study_name=out.name, storage=sqlite_url(out / "study.db"))


def test_single_objective_search_resumes_and_its_best_config_fits(tmp_path, tiny_recipe) -> None:
    out = tmp_path / "tune"
    summary = tune(str(tiny_recipe), SPACE, out_dir=str(out), n_trials=2, seed=0, trial_overrides=BUDGET)
    first = _load(out).trials
    assert [t.state.name for t in first] == ["COMPLETE", "COMPLETE"]
    # rerunning with a larger budget continues the same study (SQLite file in out_dir): only one more trial
    summary = tune(str(tiny_recipe), SPACE, out_dir=str(out), n_trials=3, seed=1, trial_overrides=BUDGET)
    trials = _load(out).trials
    assert [t.number for t in trials] == [0, 1, 2] and trials[0].params == first[0].params
    assert summary["finished_trials"] == 3
    best = max((t for t in trials), key=lambda t: t.value)  # ties: the first one, as Optuna
    best_params = json.loads((out / "best_params.json").read_text())
    assert best_params["best"]["number"] == best.number and best_params["best"]["values"] == {"val/acc": best.value}
    config = yaml.safe_load((out / "best.yaml").read_text())
    assert config["model"]["init_args"]["alpha"] == best.params["alpha"]
    assert config["model"]["init_args"]["temperature"] == best.params["temperature"]
    assert config["trainer"]["max_epochs"] == best.params["epochs"]
    assert "limit_train_batches" not in config["trainer"]  # the search budget is not part of the recipe
    # every trial trained exactly its sampled recipe, into its own directory
    for t in trials:
        trial_cfg = yaml.safe_load((Path(t.user_attrs["trial_dir"]) / "recipe.yaml").read_text())
        assert trial_cfg["model"]["init_args"]["lr"] == t.params["lr"]
        assert trial_cfg["trainer"]["limit_train_batches"] == 2
        assert 0.0 <= t.user_attrs["val/f1"] <= 1.0 and "train/kd" in t.user_attrs
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [int(r["number"]) for r in rows] == [0, 1, 2] and float(rows[1]["lr"]) == trials[1].params["lr"]
    assert all((out / "plots" / f"{name}.png").is_file() for name in ("optimization_history", "param_importances"))
    # the best config runs as is through `lit-compress fit`
    assert main(["fit", "--config", str(out / "best.yaml"), "--trainer.max_steps=2",
                 f"--trainer.default_root_dir={tmp_path / 'refit'}"]) == 0  # fmt: skip
    assert (tmp_path / "refit" / "config.yaml").is_file()


def test_multi_objective_accuracy_vs_latency_reports_the_pareto_front(tmp_path, tiny_recipe) -> None:
    space = {"layers": {"key": "model.init_args.student_layers", "type": "categorical", "choices": [[0], [0, 1]]},
             "alpha": {"key": "model.init_args.alpha", "type": "float", "low": 0.0, "high": 1.0}}  # fmt: skip
    out = tmp_path / "multi"
    summary = tune(str(tiny_recipe), space, objectives={"val/acc": "maximize", "latency_ms": "minimize"},
                   out_dir=str(out), n_trials=3, seed=0, trial_overrides={"trainer": {"max_steps": 1}},
                   measurement=Measurement(runs=5, warmup=1))  # fmt: skip
    trials = _load(out).trials
    assert all(t.state.name == "COMPLETE" and len(t.values) == 2 and t.values[1] > 0 for t in trials)
    assert all(t.user_attrs["parameters"] > t.user_attrs["nonzero"] * 0.5 for t in trials)
    front = {e["number"] for e in summary["pareto"]}
    points = {t.number: (t.values[0], -t.values[1]) for t in trials}  # both "larger is better"
    dominated = {n for n, p in points.items() if any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points.values())}
    assert front == set(points) - dominated
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["model"]["init_args"]["student_layers"] in ([0], [0, 1])  # categorical lists round-trip
    assert (out / "pareto.md").is_file() and (out / "plots" / "pareto_front.png").is_file()
    assert all((out / f"pareto/trial_{n:04d}.yaml").is_file() for n in front)


def test_bad_trials_are_pruned_early(tmp_path, tiny_recipe) -> None:
    out = tmp_path / "pruned"
    # every trial whose val/acc after an epoch is below 0.99 is pruned at that epoch
    tune(str(tiny_recipe), SPACE, out_dir=str(out), n_trials=1, seed=0,
         pruner=optuna.pruners.ThresholdPruner(lower=0.99), trial_overrides={"trainer": {"limit_train_batches": 1}})
    (trial,) = _load(out).trials
    assert trial.state.name == "PRUNED"
    assert list(trial.intermediate_values) == [0]  # stopped after the first epoch's validation
    assert "| 0 | PRUNED |" in (out / "trials.md").read_text()


def test_misconfigurations_fail_before_or_at_the_first_trial(tmp_path, tiny_recipe) -> None:
    with pytest.raises(ValueError, match=r"trial_overrides fix the searched key\(s\) \['trainer.max_epochs'\]"):
        tune(str(tiny_recipe), SPACE, out_dir=str(tmp_path / "a"), trial_overrides={"trainer": {"max_epochs": 1}})
    with pytest.raises(ValueError, match="Set n_trials or timeout"):
        tune(str(tiny_recipe), SPACE, out_dir=str(tmp_path / "a"), n_trials=None)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tune(str(tmp_path / "nope.yaml"), SPACE, out_dir=str(tmp_path / "a"))
    with pytest.raises(ValueError, match="all measured figures"):
        tune(str(tiny_recipe), SPACE, out_dir=str(tmp_path / "a"), objectives={"latency_ms": "minimize"})
    with pytest.raises(ValueError, match=r"\['val/accuracy'\] were not logged; the run logged \[.*'val/acc'"):
        tune(str(tiny_recipe), SPACE, objectives={"val/accuracy": "maximize"}, out_dir=str(tmp_path / "b"),
             n_trials=1, trial_overrides={"trainer": {"max_steps": 1}})  # fmt: skip
    # the study in out_dir/b maximises one metric: asking for two objectives there is refused
    with pytest.raises(ValueError, match=r"optimises \['maximize'\], but the objectives ask for \['maximize', 'min"):
        tune(str(tiny_recipe), SPACE, objectives={"val/acc": "maximize", "size_mb": "minimize"},
             out_dir=str(tmp_path / "b"), n_trials=0)  # fmt: skip


def test_heartbeat_settings_are_checked(tmp_path, tiny_recipe) -> None:
    cases = {(0, None, 1): "heartbeat_interval must be a whole number of seconds >= 1",
             (None, 10, 1): "grace_period needs heartbeat_interval",
             (5, 5, 1): r"grace_period \(5 s\) must be longer than heartbeat_interval \(5 s\)",
             (5, None, -1): "retries must be >= 0"}  # fmt: skip
    for (interval, grace, retries), message in cases.items():
        with pytest.raises(UserInputError, match=message):
            tune(str(tiny_recipe), SPACE, out_dir=str(tmp_path / "h"), heartbeat_interval=interval,
                 grace_period=grace, retries=retries)  # fmt: skip
    assert not (tmp_path / "h").exists()  # refused before the study is made
    storage = open_storage(sqlite_url(tmp_path / "s.db"), heartbeat_interval=2, retries=0)
    assert (storage.heartbeat_interval, storage.grace_period, storage.heartbeat_stale_trial_callback) == (2, 6, None)
    storage = open_storage(sqlite_url(tmp_path / "s.db"), heartbeat_interval=2, grace_period=9, retries=3)
    assert storage.grace_period == 9 and storage.heartbeat_stale_trial_callback._max_retry == 3


def test_two_worker_processes_share_one_sqlite_study(tmp_path, tiny_recipe) -> None:
    out, barrier = tmp_path / "shared", tmp_path / "barrier"
    overrides = {"trainer": {"limit_train_batches": 1, "callbacks": [
        {"class_path": "tune_barrier.Barrier", "init_args": {"directory": str(barrier), "parties": 2}}]}}  # fmt: skip
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump({"recipe": str(tiny_recipe), "space": SPACE, "out_dir": str(out), "n_trials": 4,
                                      "trial_overrides": overrides, "heartbeat_interval": None}))  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(Path(__file__).parent)]), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "lit_compress", "tune", "--config", str(config), "--seed"]
    workers = [subprocess.Popen([*command, str(seed)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for seed in (1, 2)]  # fmt: skip
    logs = [w.communicate(timeout=240)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], "\n\n".join(log[-3000:] for log in logs)
    storage = open_storage(sqlite_url(out / "study.db"), heartbeat_interval=None)
    trials = optuna.load_study(study_name="shared", storage=storage).trials
    finished = [t for t in trials if t.state.name == "COMPLETE"]
    assert 4 <= len(finished) <= 5 and len(finished) == len(trials)  # each worker overshoots by at most one
    assert len({t.number for t in trials}) == len(trials) == len({t._trial_id for t in trials})
    assert len({t.user_attrs["trial_dir"] for t in trials}) == len(trials)
    workers_seen = {t.user_attrs["worker"] for t in trials}
    assert workers_seen == {f"{os.uname().nodename}:{w.pid}" for w in workers}  # both processes ran trials
    assert len({tuple(sorted(t.params.items())) for t in trials}) == len(trials)  # no duplicated proposals
