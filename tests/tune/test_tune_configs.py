"""Every shipped search (configs/tune/*.yaml) is consistent: its recipe exists, every searched key lands in the
recipe, and a trial's recipe is one that `lit-compress fit` accepts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lit_compress.cli import main
from lit_compress.tune.objective import TrialRunner, parse_objectives
from lit_compress.tune.search import check_overrides, load_recipe
from lit_compress.tune.space import check_keys, deep_merge, get_path, parse_space

ROOT = Path(__file__).resolve().parents[2]
SEARCHES = sorted((ROOT / "configs" / "tune").glob("*.yaml"))


def test_the_embedded_default_has_a_search() -> None:
    assert ROOT / "configs" / "tune" / "distill_bbc.yaml" in SEARCHES


@pytest.mark.parametrize("path", SEARCHES, ids=lambda p: p.name)
def test_search_config_builds_valid_trial_recipes(path: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(ROOT)  # recipes are relative to the repository root, like the commands in the headers
    search = yaml.safe_load(path.read_text())
    assert f"# Run: lit-compress tune --config configs/tune/{path.name}\n" in path.read_text()
    base = deep_merge(load_recipe(search["recipe"]), search.get("overrides") or {})
    specs, objectives = parse_space(search["space"]), parse_objectives(search.get("objectives"))
    check_keys(base, specs)
    check_overrides(search.get("trial_overrides") or {}, specs)
    runner = TrialRunner(base, specs, objectives, tmp_path, search.get("trial_overrides") or {})
    for pick in (0, -1):  # the lowest and the highest value of every parameter
        params = {s.name: (s.choices[pick] if s.type == "categorical" else (s.low, s.high)[pick]) for s in specs}
        stored = {n: json.dumps(v) if isinstance(v, list) else v for n, v in params.items()}  # as Optuna stores them
        config = runner.trial_config(stored, tmp_path / "trial")
        for spec in specs:
            assert get_path(config, spec.key) == spec.value(stored[spec.name])
        trial = tmp_path / f"trial_{pick}.yaml"
        trial.write_text(yaml.safe_dump(config, sort_keys=False))
        with pytest.raises(SystemExit) as err:
            main(["fit", "--config", str(trial), "--print_config"])
        assert err.value.code == 0, capsys.readouterr().err
        printed = yaml.safe_load(capsys.readouterr().out)
        assert printed["trainer"]["default_root_dir"] == str(tmp_path / "trial")
