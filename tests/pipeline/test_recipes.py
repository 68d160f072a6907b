"""The main job's YAML: defaults deep-merged under each stage, recipes parsed by LightningCLI, knobs typed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lit_compress.errors import UserInputError
from lit_compress.pipeline.config import build_plan
from lit_compress.pipeline.recipes import deep_merge, expand_dotted

MAIN = Path(__file__).resolve().parents[2] / "configs" / "main.yaml"


def main_plan(**changes):
    config = yaml.safe_load(MAIN.read_text())
    config.update(changes)
    sections = {k: config.get(k) for k in ("teacher", "distill", "prune", "qat")}
    return build_plan(config.get("stages"), config["defaults"], sections, config["export"], None)


def test_stage_keys_win_and_mappings_merge_key_by_key() -> None:
    base = {"trainer": {"max_epochs": 3, "devices": 1, "callbacks": [{"class_path": "A"}]}, "seed_everything": 1}
    stage = {"trainer": {"max_epochs": 5, "callbacks": [{"class_path": "B"}]}}
    merged = deep_merge(base, stage)
    assert merged == {"trainer": {"max_epochs": 5, "devices": 1, "callbacks": [{"class_path": "B"}]},
                      "seed_everything": 1}, "lists are replaced, not appended"
    assert base["trainer"]["max_epochs"] == 3, "inputs are not modified"


def test_another_class_path_starts_the_section_afresh() -> None:
    base = {"model": {"class_path": "lit_compress.distill.DistillationModule", "init_args": {"alpha": 0.5}}}
    same = deep_merge(base, {"model": {"init_args": {"lr": 1e-3}}})
    assert same["model"] == {"class_path": "lit_compress.distill.DistillationModule",
                             "init_args": {"alpha": 0.5, "lr": 1e-3}}
    other = deep_merge(base, {"model": {"class_path": "lit_compress.distill.ClassifierModule",
                                        "init_args": {"lr": 1e-4}}})
    assert other["model"] == {"class_path": "lit_compress.distill.ClassifierModule", "init_args": {"lr": 1e-4}}


def test_dotted_keys_expand_and_text_numbers_are_read() -> None:
    given = {"trainer.max_epochs": "2", "data": {"init_args.max_length": "32"}, "model.init_args.student": "dir",
             "model.init_args.student_layers": "[0, 5]", "trainer.deterministic": "true"}
    assert expand_dotted(given) == {"trainer": {"max_epochs": 2, "deterministic": True},
                                    "data": {"init_args": {"max_length": 32}},
                                    "model": {"init_args": {"student": "dir", "student_layers": [0, 5]}}}


def test_main_yaml_declares_shared_keys_once_and_every_stage_gets_them() -> None:
    text = MAIN.read_text()
    assert text.count("alpha:") == 1 and text.count("temperature:") == 1 and text.count("max_length:") == 1
    plan = main_plan()
    for name in ("distill", "prune", "qat"):
        recipe = plan.training[name].recipe
        assert recipe["model"]["class_path"] == "lit_compress.distill.DistillationModule"
        assert recipe["model"]["init_args"]["alpha"] == 0.5 and recipe["model"]["init_args"]["temperature"] == 2.0
        assert recipe["data"]["init_args"]["max_length"] == 64 and recipe["seed_everything"] == 42
        assert recipe["trainer"]["num_sanity_val_steps"] == 0 and recipe["trainer"]["log_every_n_steps"] == 10
    teacher = plan.training["teacher"].recipe["model"]
    assert teacher == {"class_path": "lit_compress.distill.ClassifierModule",
                       "init_args": {"model": "embedded:all-MiniLM-L6-v2", "lr": 1e-4, "weight_decay": 0.01,
                                     "warmup_ratio": 0.1}}


def test_main_yaml_keeps_the_hyper_parameters_of_the_embedded_default() -> None:
    """teacher <= 6 epochs (early stopping on val/loss, patience 2) lr 1e-4; distill [0, 5] 4 epochs; prune 0.5/0.75
    taylor to 0.6 of 5 epochs; QAT 2 epochs in the faster scheme; 4 minutes of search within 1 point."""
    plan = main_plan()
    epochs = {n: plan.training[n].recipe["trainer"]["max_epochs"] for n in ("teacher", "distill", "prune", "qat")}
    assert epochs == {"teacher": 6, "distill": 4, "prune": 5, "qat": 2}
    stopping = plan.training["teacher"].options.early_stopping
    assert (stopping.monitor, stopping.mode, stopping.patience) == ("val/loss", "min", 2)
    assert plan.training["distill"].recipe["model"]["init_args"]["student_layers"] == [0, 5]
    prune = plan.training["prune"]
    assert prune.recipe["trainer"]["callbacks"][0]["init_args"] == {"head_pruning_ratio": 0.5,
                                                                     "ffn_pruning_ratio": 0.75, "importance": "taylor"}
    assert (prune.options.schedule_end, prune.options.vocab_min_frequency) == (0.6, 2)
    qat = plan.training["qat"]
    assert qat.recipe["model"]["init_args"]["lr"] == 3e-5 and qat.options.schemes == ("auto",)
    assert (qat.options.start_fraction, qat.options.freeze_fraction) == (0.0, 0.7)
    assert plan.export.per_channel and plan.export.quantize_embeddings and plan.export.target == "auto"
    assert plan.benchmark.settings.runs == 100 and plan.accuracy_budget == 1.0
    config = yaml.safe_load(MAIN.read_text())
    assert config["search_minutes"] == 4 and config["search"]["proxy_epochs"] == 1


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"prune": {"trainer": {"max_epochz": 5}}}, "unknown option 'prune.trainer.max_epochz'; did you mean "
                                                    "'prune.trainer.max_epochs'"),
        ({"qat": {"schemes": ["static", "weird"]}}, r"qat.schemes has unknown entries \['weird'\]"),
        ({"teacher": {"finetun": False}}, "unknown option 'teacher.finetun'; did you mean 'teacher.finetune'"),
        ({"stages": ["teacher", "distill", "deploy"]}, r"unknown stage\(s\) \['deploy'\]"),
        ({"export": {"target": "avx3"}}, "export.target='avx3' is not an int8 target"),
        ({"export": {"formats": ["onnx-int3"]}}, r"export.formats: unknown kind\(s\) \['onnx-int3'\]"),
        ({"export": {"per_chanel": True}}, "unknown option 'export.per_chanel'; did you mean 'export.per_channel'"),
    ],
)
def test_bad_sections_are_one_line_errors(changes, match) -> None:
    with pytest.raises(UserInputError, match=match):
        main_plan(**changes)
