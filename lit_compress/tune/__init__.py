"""Optuna search over the hyper-parameters of a recipe (``lit-compress tune``).

Importing this package does not import Optuna; it is needed (``pip install 'lit-compress[tune]'``) when a
search runs.
"""

from lit_compress.tune.objective import MEASURED, Measurement, Objective, TrialRunner, measure_model, parse_objectives
from lit_compress.tune.report import best_trials, trial_rows, write_plots, write_report
from lit_compress.tune.search import load_recipe, open_storage, open_study, tune
from lit_compress.tune.space import ParamSpec, apply_params, deep_merge, get_path, parse_space, set_path

__all__ = [
    "MEASURED",
    "Measurement",
    "Objective",
    "ParamSpec",
    "TrialRunner",
    "apply_params",
    "best_trials",
    "deep_merge",
    "get_path",
    "load_recipe",
    "measure_model",
    "open_storage",
    "open_study",
    "parse_objectives",
    "parse_space",
    "set_path",
    "trial_rows",
    "tune",
    "write_plots",
    "write_report",
]
