"""Search-space parsing, validation and dotted keys into recipes."""

from __future__ import annotations

import json
import math

import optuna
import pytest
import yaml

from lit_compress.tune.space import ParamSpec, apply_params, check_keys, deep_merge, get_path, parse_space, set_path

RECIPE = {
    "trainer": {"max_epochs": 3, "callbacks": [
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"monitor": "val/acc"}},
        {"class_path": "lit_compress.prune.GradualPruning", "init_args": {"schedule": 0.5}},
    ]},
    "model": {"class_path": "lit_compress.distill.DistillationModule", "init_args": {"alpha": 0.5}},
    "data": "lit_compress.data.TextClassificationDataModule",
}  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"key": "a.b", "type": "float", "low": 0.0}, "give both `low` and `high`"),
        ({"key": "a.b", "type": "float", "low": 1.0, "high": 1.0}, "must be smaller than high"),
        ({"key": "a.b", "type": "float", "low": 0.0, "high": 1.0, "log": True}, "needs low > 0"),
        ({"key": "a.b", "type": "float", "low": 1e-3, "high": 1.0, "log": True, "step": 0.1}, "no step"),
        ({"key": "a.b", "type": "int", "low": 1, "high": 2.5}, "must be whole numbers"),
        ({"key": "a.b", "type": "int", "low": 1, "high": 4, "step": 0}, "step=0 must be > 0"),
        ({"key": "a.b", "type": "categorical"}, "give `choices"),
        ({"key": "a.b", "type": "categorical", "choices": [1, 1]}, "duplicate choices"),
        ({"key": "a.b", "type": "categorical", "choices": [1, 2], "low": 0}, "apply to float and int only"),
        ({"key": "a.b", "type": "float", "low": 0, "high": 1, "choices": [1]}, "applies to categorical"),
        ({"key": "a.b", "type": "uniform", "low": 0, "high": 1}, "use one of 'float', 'int', 'categorical'"),
        ({"key": "a.b", "type": "float", "low": 0, "high": 1, "scale": "log"}, r"unknown fields \['scale'\]"),
        ({"type": "float", "low": 0, "high": 1}, "needs `key`"),
        ({"key": "a.b", "low": 0, "high": 1}, "needs `type`"),
    ],
)
def test_bad_specs_name_the_problem(spec, match) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        parse_space({"p": spec})


def test_space_must_be_a_non_empty_mapping_with_unique_keys(tmp_path) -> None:
    with pytest.raises(ValueError, match="non-empty mapping"):
        parse_space({})
    same = {"key": "model.init_args.alpha", "type": "float", "low": 0.0, "high": 1.0}
    with pytest.raises(ValueError, match=r"same key\(s\) \['model.init_args.alpha'\]"):
        parse_space({"a": same, "b": same})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        parse_space(str(tmp_path / "missing.yaml"))


def test_space_from_a_yaml_file_under_a_space_key(tmp_path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"space": {"t": {"key": "model.init_args.temperature", "type": "int",
                                                    "low": 2, "high": 20, "step": 2}}}))  # fmt: skip
    (spec,) = parse_space(str(path))
    assert (spec.name, spec.key, spec.type, spec.low, spec.high, spec.step) == ("t", "model.init_args.temperature",
                                                                                "int", 2, 20, 2)  # fmt: skip


def test_sampled_values_respect_range_scale_and_step() -> None:
    specs = parse_space({
        "lr": {"key": "model.init_args.lr", "type": "float", "low": 1e-5, "high": 1e-2, "log": True},
        "t": {"key": "model.init_args.temperature", "type": "int", "low": 2, "high": 20, "step": 3},
        "alpha": {"key": "model.init_args.alpha", "type": "float", "low": 0.0, "high": 1.0, "step": 0.25},
        "layers": {"key": "model.init_args.student_layers", "type": "categorical", "choices": [[0, 5], [0, 2, 4]]},
    })  # fmt: skip
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_layers = set()
    for _ in range(30):
        trial = study.ask()
        values = {s.name: s.suggest(trial) for s in specs}
        assert 1e-5 <= values["lr"] <= 1e-2
        assert values["t"] in range(2, 21, 3)
        assert values["alpha"] in (0.0, 0.25, 0.5, 0.75, 1.0)
        assert values["layers"] in ([0, 5], [0, 2, 4])
        assert trial.params["layers"] in ("[0, 5]", "[0, 2, 4]")  # stored as JSON text, mapped back
        seen_layers.add(tuple(values["layers"]))
        study.tell(trial, 0.0)
    assert seen_layers == {(0, 5), (0, 2, 4)}
    log_lrs = [math.log10(t.params["lr"]) for t in study.trials]
    assert min(log_lrs) < -4 and max(log_lrs) > -3  # log scale: both ends of 3 decades are visited
    config = apply_params(RECIPE, specs, study.trials[0].params)
    assert config["model"]["init_args"]["student_layers"] == json.loads(study.trials[0].params["layers"])
    assert config["model"]["init_args"]["temperature"] == study.trials[0].params["t"]
    assert RECIPE["model"]["init_args"] == {"alpha": 0.5}  # the base recipe is not modified


def test_dotted_keys_create_dicts_and_select_list_entries_by_index_or_class() -> None:
    config = deep_merge(RECIPE, {})
    set_path(config, "model.init_args.lr", 1e-3)  # absent in the recipe: created
    set_path(config, "trainer.callbacks.GradualPruning.init_args.schedule", 0.8)
    set_path(config, "trainer.callbacks.0.init_args.mode", "max")
    assert config["model"]["init_args"] == {"alpha": 0.5, "lr": 1e-3}
    assert config["trainer"]["callbacks"][1]["init_args"]["schedule"] == 0.8
    assert config["trainer"]["callbacks"][0]["init_args"] == {"monitor": "val/acc", "mode": "max"}
    assert get_path(config, "trainer.callbacks.1.init_args.schedule") == 0.8
    with pytest.raises(KeyError, match=r"no list entries have class 'QAT' \(found \['ModelCheckpoint', 'GradualP"):
        set_path(config, "trainer.callbacks.QAT.init_args.start_step", 1)
    with pytest.raises(KeyError, match="index 5 is out of range"):
        set_path(config, "trainer.callbacks.5.init_args.x", 1)
    with pytest.raises(KeyError, match="Write the enclosing entry as a mapping"):
        set_path(config, "data.init_args.batch_size", 8)
    with pytest.raises(KeyError, match="no 'gamma'"):
        get_path(config, "model.init_args.gamma")


def test_check_keys_fails_before_training_on_a_bad_key() -> None:
    specs = parse_space({"sp": {"key": "trainer.callbacks.Quantization.init_args.start_step", "type": "int",
                                "low": 0, "high": 10}})  # fmt: skip
    with pytest.raises(ValueError, match="search space parameter 'sp'.*no list entries have class 'Quantization'"):
        check_keys(RECIPE, specs)
    check_keys(RECIPE, parse_space({"a": {"key": "model.init_args.alpha", "type": "float", "low": 0, "high": 1}}))


def test_deep_merge_merges_mappings_replaces_lists_and_understands_dotted_keys() -> None:
    merged = deep_merge(RECIPE, {"trainer": {"limit_train_batches": 2, "callbacks": []}, "model.init_args.alpha": 0.1})
    assert merged["trainer"] == {"max_epochs": 3, "callbacks": [], "limit_train_batches": 2}
    assert merged["model"]["init_args"]["alpha"] == 0.1
    assert len(RECIPE["trainer"]["callbacks"]) == 2 and RECIPE["model"]["init_args"]["alpha"] == 0.5


def test_value_maps_stored_values_back() -> None:
    spec = ParamSpec("e", "trainer.max_epochs", "int", low=1, high=3)
    assert spec.value(2.0) == 2 and isinstance(spec.value(2.0), int)
    cat = ParamSpec("c", "x.y", "categorical", choices=[[1, 2], "a", None])
    assert cat.value("[1, 2]") == [1, 2] and cat.value("a") == "a" and cat.value(None) is None
