import json

import pytest
import yaml

from lit_compress.cli import main
from lit_compress.pipeline import BenchmarkOptions, RunContext, run_pipeline
from lit_compress.bench.suite import BenchmarkSettings


def tiny_run(csv_files, tiny_model_dir, steps: int = 3, epochs: int = 1) -> dict:
    """The sections of a run on the tiny model and CSV data (a few optimizer steps per stage)."""
    trainer = {"max_epochs": epochs, "max_steps": steps, "accelerator": "cpu", "enable_progress_bar": False,
               "enable_checkpointing": False, "enable_model_summary": False, "num_sanity_val_steps": 0}
    return {
        "defaults": {
            "seed_everything": 42,
            "data": {"init_args": {"dataset": "local", "data_files": csv_files, "batch_size": 8, "max_length": 16}},
            "model": {"init_args": {"lr": 1e-3}},
            "trainer": trainer,
        },
        "teacher": {"model": {"init_args": {"model": str(tiny_model_dir), "lr": 1e-3}}},
        "distill": {"model": {"init_args": {"student_layers": [1]}}},
    }


def test_training_stages_on_a_reduced_budget(tmp_path, csv_files, tiny_model_dir) -> None:
    sections = tiny_run(csv_files, tiny_model_dir)
    results = run_pipeline(run_dir=str(tmp_path / "run"), stages=["teacher", "distill"], **sections)
    assert (results.pruned, results.quantized, results.final) == (None, (), None)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())["results"]
    assert set(saved) == {"teacher", "student"}
    assert saved["student"]["parameters"] < saved["teacher"]["parameters"]
    assert 0.0 <= saved["student"]["val_accuracy"] <= 1.0
    assert results.student.model_dir == tmp_path / "run" / "distill" / "model"
    assert (results.student.model_dir / "config.json").exists()
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["distill"]["seed_everything"] == 42, "defaults are merged into every stage"
    assert config["distill"]["model"]["init_args"]["lr"] == 1e-3
    assert config["teacher"]["model"]["class_path"] == "lit_compress.distill.ClassifierModule"
    assert "student_layers" not in config["teacher"]["model"]["init_args"]
    # resume: completed stages are reused, not retrained
    again = run_pipeline(run_dir=str(tmp_path / "run"), resume=True, stages=["teacher", "distill"], **sections)
    assert again == results


def test_a_stage_recipe_runs_with_fit_and_trains_the_same_model(tmp_path, csv_files, tiny_model_dir) -> None:
    """<run>/distill/recipe.yaml is a `lit-compress fit` config: same seed, data order and model as the stage."""
    import torch
    from safetensors.torch import load_file

    from lit_compress.cli import trainer_cli

    run = tmp_path / "run"
    results = run_pipeline(run_dir=str(run), stages=["teacher", "distill"], **tiny_run(csv_files, tiny_model_dir))
    recipe = results.student.recipe
    assert recipe == run / "distill" / "recipe.yaml"
    text = recipe.read_text()
    assert text.startswith("# ") and f"lit-compress fit --config {recipe}" in text
    written = yaml.safe_load(text)
    assert written["model"]["init_args"]["teacher"] == str(run / "teacher" / "model")
    assert written["model"]["init_args"]["student_layers"] == [1]
    assert written["trainer"]["callbacks"][0] == {"class_path": "lit_compress.pipeline.seeding.SeedBeforeFit",
                                                  "init_args": {"seed": 42}}
    cli = trainer_cli(["fit", "--config", str(recipe)])
    assert cli.trainer.global_step == 3
    stage = load_file(str(results.student.model_dir / "model.safetensors"))
    refit = cli.model.student.state_dict()
    assert stage.keys() <= refit.keys()
    assert all(torch.equal(stage[k], refit[k]) for k in stage), "the recipe trains the stage's model exactly"


def test_pipeline_verb_rejects_bad_config(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("distill:\n  model:\n    init_args: {student_layers: [a]}\n")
    with pytest.raises(SystemExit) as err:
        main(["pipeline", "--config", str(bad), "--run_dir", str(tmp_path / "run")])
    assert err.value.code == 2
    assert "distill.model.init_args.student_layers" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_every_stage_on_a_tiny_model(tmp_path, csv_files, tiny_model_dir) -> None:
    """teacher -> distill -> trim+prune -> QAT (dynamic, static) -> export -> benchmark, end to end."""
    sections = tiny_run(csv_files, tiny_model_dir, steps=6, epochs=2)
    sections["distill"] = {"model": {"init_args": {"student_layers": [0, 1]}}}
    pruning = {"class_path": "lit_compress.prune.StructuredPruning",
               "init_args": {"head_pruning_ratio": 0.5, "ffn_pruning_ratio": 0.5}}
    sections["prune"] = {"vocab_min_frequency": 2, "trainer": {"callbacks": [pruning]}}
    sections["qat"] = {"schemes": ["dynamic", "static"], "model": {"init_args": {"lr": 1e-4}},
                       "trainer": {"max_steps": 3, "max_epochs": 1}}
    run = tmp_path / "run"
    results = run_pipeline(
        run_dir=str(run), **sections, export={"per_channel": True},
        benchmark=BenchmarkOptions(BenchmarkSettings(runs=3, warmup=1, batch_sizes=(1, 4), throughput_runs=1)),
    )
    assert [q.scheme for q in results.quantized] == ["dynamic", "static"]
    assert results.pruned is not None and results.pruned.teacher_dir == run / "prune" / "teacher"
    assert results.pruned.architecture["num_heads"] == [2, 2]
    assert results.pruned.architecture["intermediate_sizes"] == [32, 32]
    assert results.pruned.vocabulary["new_vocab_size"] < results.pruned.vocabulary["old_vocab_size"]
    assert json.loads((run / "prune" / "stage.json").read_text())["architecture"] == results.pruned.architecture
    seed, pruning, resume, checkpoint = yaml.safe_load((run / "prune" / "recipe.yaml").read_text())["trainer"]["callbacks"]
    assert resume["class_path"] == "lit_compress.utils.resume.ExactResume"
    assert checkpoint["init_args"]["dirpath"] == str(run / "prune" / "checkpoints")
    assert checkpoint["init_args"]["save_last"] is True and checkpoint["init_args"]["every_n_train_steps"] == 50
    assert not (run / "prune" / "checkpoints").exists(), "removed once the stage is done"
    assert seed["class_path"] == "lit_compress.pipeline.seeding.SeedBeforeFit"
    ramp = pruning["init_args"]["head_pruning_ratio"]
    assert ramp["class_path"] == "lit_compress.prune.schedules.PolynomialDecay"
    assert ramp["init_args"]["end_step"] == 3 and pruning["init_args"]["every_n_steps"] == 1  # 0.6 of 6 steps
    qat = yaml.safe_load((run / "qat_static" / "recipe.yaml").read_text())["trainer"]["callbacks"][1]["init_args"]
    assert qat["activation"]["scheme"] == "static" and qat["freeze_observers_step"] == 2  # 0.7 of 3 steps
    static = results.quantized[1].artifact
    assert static is not None and static.name == "model.onnx"
    bench = json.loads((run / "benchmark" / "benchmark.json").read_text())
    names = {row["name"] for row in bench["rows"]}
    assert {"teacher torch fp32", "pruned+trimmed QAT ORT dynamic int8", "pruned+trimmed QAT static int8 (Q/DQ)",
            "student ORT dynamic int8", "pruned+trimmed PTQ ORT static int8"} <= names
    assert results.final is not None and results.final.name in names
    final = json.loads((run / "benchmark" / "stage.json").read_text())["final"]
    assert final == results.final.as_dict() and final["kind"] in {"torch-fp32", "onnx-fp32", "ort-dynamic-int8",
                                                                  "ort-static-int8", "torch-dynamic-int8"}
    assert (run / "benchmark" / "benchmark.png").stat().st_size > 0
    assert "pruned+trimmed QAT ORT dynamic int8" in (run / "results.md").read_text()
    # the Q/DQ artifact's manifest has every field the export job's artifacts have
    qdq = json.loads((static.parent / "manifest.json").read_text())
    ort = json.loads((run / "export" / "pruned" / "ort-static-int8" / "manifest.json").read_text())
    assert qdq.keys() == ort.keys() and qdq["config"] == ort["config"] != {}
    assert qdq["source"].keys() >= ort["source"].keys() and qdq["parity"]["gated"] is True


def test_main_job_on_the_embedded_default_with_a_reduced_budget(tmp_path) -> None:
    """The real MiniLM teacher and BBC News from configs/main.yaml, every stage, a few optimizer steps each."""
    from pathlib import Path

    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "main.yaml").read_text())
    config.pop("run_dir")
    config["defaults"]["data"]["init_args"].update(max_length=32, batch_size=16)
    config["defaults"]["trainer"].update(max_epochs=1, max_steps=4)
    for stage in ("teacher", "distill", "prune", "qat"):
        config[stage]["trainer"].pop("max_epochs")
    config["prune"]["trainer"]["max_steps"] = 6
    config["prune"]["trainer"]["callbacks"][0]["init_args"]["ffn_pruning_ratio"] = 0.5
    config["qat"]["trainer"]["max_steps"] = 3
    config["qat"]["model"]["init_args"]["lr"] = 1e-5
    config["benchmark"] = BenchmarkOptions(BenchmarkSettings(runs=5, warmup=1, batch_sizes=(1,), throughput_runs=1))
    config["teacher"]["trainer"]["val_check_interval"] = 2  # validations at steps 2 and 4: a curve to record
    config["search"]["max_trials"] = 2  # each trial takes the prune stage's 6 steps
    # students of 4-6 steps have near-tied logits, whose argmax int8 rounding may flip: the gate is not under test
    config["export"]["int8_gate"] = {"min_agreement": 0.9}
    run = tmp_path / "main"
    results = run_pipeline(run_dir=str(run), **config)
    assert results.teacher.metrics["parameters"] == 22_715_141  # all-MiniLM-L6-v2 + a 5-way head
    assert (run / "teacher" / "val_curve.csv").read_text().startswith("epoch,step,val/acc,val/f1,val/loss\n")
    chosen = json.loads((run / "search" / "stage.json").read_text())["candidate"]
    assert results.pruned is not None
    heads, channels = round(12 * (1 - chosen["head_ratio"])), round(1536 * (1 - chosen["ffn_ratio"]))
    assert results.pruned.architecture["num_heads"] == [heads] * len(chosen["layers"])
    assert results.pruned.architecture["intermediate_sizes"] == [channels] * len(chosen["layers"])
    assert results.pruned.vocabulary["new_vocab_size"] < 30522 // 3
    bench = {row["name"]: row for row in json.loads((run / "benchmark" / "benchmark.json").read_text())["rows"]}
    (qat,) = results.quantized  # schemes: [auto] ran the scheme measured faster
    name = "pruned+trimmed QAT " + ("static int8 (Q/DQ)" if qat.scheme == "static" else "ORT dynamic int8")
    assert bench[name]["size_mb"] < bench["teacher torch fp32"]["size_mb"] / 10
    manifest = json.loads((run / "export" / "student" / "ort-dynamic-int8" / "manifest.json").read_text())
    assert manifest["runs_int8"] is True and manifest["parity"] is not None


def test_bad_input_found_late_removes_the_new_run_directory(tmp_path, csv_files, tiny_model_dir,
                                                            monkeypatch) -> None:  # fmt: skip
    """A UserInputError raised after the checks (here: by the teacher stage) leaves no half-made run behind."""
    from lit_compress.errors import UserInputError
    from lit_compress.pipeline import run as run_module

    def refuse(*args, **kwargs):
        raise UserInputError("teacher refused")

    monkeypatch.setattr(run_module, "check_inputs", lambda ctx, plan: None)
    monkeypatch.setattr(run_module, "teacher_stage", refuse)
    with pytest.raises(UserInputError, match="teacher refused"):
        run_pipeline(run_dir=str(tmp_path / "run"), **tiny_run(csv_files, tiny_model_dir))
    assert not (tmp_path / "run").exists()


def test_one_line_per_finished_stage(tmp_path) -> None:
    from lit_compress.pipeline.context import stage_line

    record = {"metrics": {"val_accuracy": 0.96412, "parameters": 22_715_141, "size_mb": 86.66}, "seconds": 133.2}
    assert stage_line("teacher", record) == "[teacher] 133 s · val acc 0.9641 · 22.7 M params · 86.7 MB"
    assert stage_line("export", {"seconds": 4.25}) == "[export] 4.2 s"
    lines: list[str] = []
    RunContext(run_dir=tmp_path, echo=lines.append).mark_done("distill", {"metrics": {"parameters": 1234}})
    assert lines == ["[distill] done · 1.2 k params"]
    assert json.loads((tmp_path / "distill" / "stage.json").read_text()) == {"metrics": {"parameters": 1234}}


def test_pipeline_trainer_is_quiet_about_the_frozen_teacher(tmp_path, csv_files, tiny_model_dir) -> None:
    """No eval-mode warning (the frozen teacher), no LeafSpec deprecation, no litlogger tip; training still runs."""
    import logging
    import warnings

    from lit_compress.pipeline.training import fit_recipe

    recipe = {
        "seed_everything": 1,
        "data": {"class_path": "lit_compress.data.TextClassificationDataModule",
                 "init_args": {"dataset": "local", "data_files": csv_files, "tokenizer": str(tiny_model_dir),
                               "batch_size": 8, "max_length": 16}},
        "model": {"class_path": "lit_compress.distill.DistillationModule",
                  "init_args": {"teacher": str(tiny_model_dir), "student_layers": [1]}},
        "trainer": {"max_steps": 2, "accelerator": "cpu", "enable_progress_bar": False, "logger": False,
                    "enable_checkpointing": False},
    }  # fmt: skip
    logged: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: logged.append(record.getMessage())  # type: ignore[method-assign]
    rank_zero = [logging.getLogger(n) for n in ("lightning.pytorch.utilities.rank_zero",
                                                  "lightning.fabric.utilities.rank_zero")]
    for logger in rank_zero:
        logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cli, metrics = fit_recipe(recipe, tmp_path, "distill")
    finally:
        for logger in rank_zero:
            logger.removeHandler(handler)
    assert cli.trainer.global_step == 2 and 0.0 <= metrics["val_accuracy"] <= 1.0
    assert (tmp_path / "recipe.yaml").is_file()
    assert any(not m.training for m in cli.model.teacher.modules()), "the teacher is frozen in eval mode"
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "in eval mode at the start of training" in m or "LeafSpec" in m], messages
    assert not [m for m in logged if m.startswith(("💡 Tip", "GPU available", "TPU available"))], logged
    assert any("max_steps=2" in m for m in logged), "the handler saw Lightning's other info lines"


def test_onnx_export_does_not_log_torchvision_skips(tmp_path) -> None:
    """The dynamo exporter logs 'torchvision is not installed. Skipping torchvision::nms' (x4) per export."""
    import logging

    import torch

    from lit_compress.export.onnx import export_onnx
    from lit_compress.models.tiny import tiny_bert

    logged: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: logged.append(record.getMessage())  # type: ignore[method-assign]
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    registration.addHandler(handler)
    try:
        inputs = {"input_ids": torch.randint(0, 40, (2, 8)), "attention_mask": torch.ones(2, 8, dtype=torch.long)}
        export_onnx(tiny_bert(num_labels=3, vocab_size=40), tmp_path / "m.onnx", inputs, check=False)
        registration.warning("torchvision is not installed. Skipping torchvision::nms")  # outside: still shown
    finally:
        registration.removeHandler(handler)
    assert (tmp_path / "m.onnx").stat().st_size > 0
    assert logged == ["torchvision is not installed. Skipping torchvision::nms"]
