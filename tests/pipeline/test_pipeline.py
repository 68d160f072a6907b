import json

import pytest

from lit_compress.cli import main
from lit_compress.pipeline import DataConfig, DistillConfig, RunContext, TeacherConfig, TrainConfig, run_pipeline
from lit_compress.pipeline.config import BenchConfig, PruneConfig, QATConfig


def test_training_stages_on_a_reduced_budget(tmp_path, csv_files, tiny_model_dir) -> None:
    data = DataConfig(dataset="local", data_files=csv_files, batch_size=8, max_length=16)
    teacher = TeacherConfig(model=str(tiny_model_dir), train=TrainConfig(epochs=1, max_steps=3, lr=1e-3))
    distill = DistillConfig(layers=[1], train=TrainConfig(epochs=1, max_steps=3, lr=1e-3))
    off = {"prune": PruneConfig(enabled=False), "qat": QATConfig(schemes=[]), "benchmark": BenchConfig(enabled=False)}
    results = run_pipeline(run_dir=str(tmp_path / "run"), data=data, teacher=teacher, distill=distill, **off)
    assert set(results) == {"teacher", "student"}
    saved = json.loads((tmp_path / "run" / "results.json").read_text())["results"]
    assert saved["student"]["parameters"] < saved["teacher"]["parameters"]
    assert 0.0 <= saved["student"]["accuracy"] <= 1.0
    assert (tmp_path / "run" / "config.yaml").exists()
    assert (tmp_path / "run" / "distill" / "model" / "config.json").exists()
    # resume: completed stages are reused, not retrained
    again = run_pipeline(run_dir=str(tmp_path / "run"), resume=True, data=data, teacher=teacher, distill=distill,
                         **off)
    assert again == results


def test_pipeline_verb_rejects_bad_config(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("distill:\n  layers: null\n  student: null\n")
    with pytest.raises(SystemExit) as err:
        main(["pipeline", "--config", str(bad)])
    assert err.value.code != 0
    assert "layers" in capsys.readouterr().err


def test_every_stage_on_a_tiny_model(tmp_path, csv_files, tiny_model_dir) -> None:
    """teacher -> distill -> trim+prune -> QAT (dynamic, static) -> export -> benchmark, end to end."""
    data = DataConfig(dataset="local", data_files=csv_files, batch_size=8, max_length=16)
    quick = TrainConfig(epochs=2, max_steps=6, lr=1e-3)
    run = tmp_path / "run"
    results = run_pipeline(
        run_dir=str(run), data=data,
        teacher=TeacherConfig(model=str(tiny_model_dir), train=quick),
        distill=DistillConfig(layers=[0, 1], train=quick),
        prune=PruneConfig(head_ratio=0.5, ffn_ratio=0.5, vocab_min_frequency=2, train=quick),
        qat=QATConfig(schemes=["dynamic", "static"], train=TrainConfig(epochs=1, max_steps=3, lr=1e-4)),
        benchmark=BenchConfig(runs=3, warmup=1, batch_sizes=[1, 4], throughput_runs=1),
    )
    assert set(results) == {"teacher", "student", "pruned", "qat_dynamic", "qat_static"}
    arch = json.loads((run / "prune" / "stage.json").read_text())["architecture"]
    assert arch["num_heads"] == [2, 2] and arch["intermediate_sizes"] == [32, 32]
    vocab = json.loads((run / "prune" / "stage.json").read_text())["vocabulary"]
    assert vocab["new_vocab_size"] < vocab["old_vocab_size"]
    bench = json.loads((run / "benchmark" / "benchmark.json").read_text())
    names = {row["name"] for row in bench["rows"]}
    assert {"teacher torch fp32", "pruned+trimmed QAT ORT dynamic int8", "pruned+trimmed QAT static int8 (Q/DQ)",
            "student ORT dynamic int8", "pruned+trimmed PTQ ORT static int8"} <= names
    assert (run / "benchmark" / "benchmark.png").stat().st_size > 0
    assert "pruned+trimmed QAT ORT dynamic int8" in (run / "results.md").read_text()


def test_main_job_on_the_embedded_default_with_a_reduced_budget(tmp_path) -> None:
    """The real MiniLM teacher and BBC News, every stage, a few optimizer steps each."""
    steps = TrainConfig(epochs=1, max_steps=4, lr=1e-4)
    run = tmp_path / "main"
    results = run_pipeline(
        run_dir=str(run), data=DataConfig(max_length=32, batch_size=16),
        teacher=TeacherConfig(train=steps), distill=DistillConfig(layers=[0, 5], train=steps),
        prune=PruneConfig(head_ratio=0.5, ffn_ratio=0.5, train=TrainConfig(epochs=1, max_steps=6, lr=1e-4)),
        qat=QATConfig(schemes=["dynamic", "static"], train=TrainConfig(epochs=1, max_steps=3, lr=1e-5)),
        benchmark=BenchConfig(runs=5, warmup=1, batch_sizes=[1], throughput_runs=1),
    )
    assert results["teacher"]["parameters"] == 22_715_141  # all-MiniLM-L6-v2 + a 5-way head
    stage = json.loads((run / "prune" / "stage.json").read_text())
    assert stage["architecture"]["num_heads"] == [6, 6] and stage["architecture"]["intermediate_sizes"] == [768, 768]
    assert stage["vocabulary"]["new_vocab_size"] < 30522 // 3
    bench = {row["name"]: row for row in json.loads((run / "benchmark" / "benchmark.json").read_text())["rows"]}
    assert bench["pruned+trimmed QAT static int8 (Q/DQ)"]["size_mb"] < bench["teacher torch fp32"]["size_mb"] / 10
    manifest = json.loads((run / "export" / "student" / "ort-dynamic-int8" / "manifest.json").read_text())
    assert manifest["runs_int8"] is True and manifest["parity"] is not None


def test_bad_input_found_late_removes_the_new_run_directory(tmp_path, csv_files, monkeypatch) -> None:
    """A UserInputError raised after the checks (here: by the teacher stage) leaves no half-made run behind."""
    from lit_compress.errors import UserInputError
    from lit_compress.pipeline import run as run_module

    def refuse(*args, **kwargs):
        raise UserInputError("teacher refused")

    monkeypatch.setattr(run_module, "check_inputs", lambda ctx, sections: None)
    monkeypatch.setattr(run_module, "teacher_stage", refuse)
    data = DataConfig(dataset="local", data_files=csv_files)
    with pytest.raises(UserInputError, match="teacher refused"):
        run_pipeline(run_dir=str(tmp_path / "run"), data=data)
    assert not (tmp_path / "run").exists()


def test_one_line_per_finished_stage(tmp_path) -> None:
    from lit_compress.pipeline.context import stage_line

    record = {"metrics": {"accuracy": 0.95049, "parameters": 22_715_141, "size_mb": 86.66}, "seconds": 133.2}
    assert stage_line("teacher", record) == "[teacher] 133 s · test acc 0.9505 · 22.7 M params · 86.7 MB"
    assert stage_line("export", {"seconds": 4.25}) == "[export] 4.2 s"
    lines: list[str] = []
    RunContext(run_dir=tmp_path, echo=lines.append).mark_done("distill", {"metrics": {"parameters": 1234}})
    assert lines == ["[distill] done · 1.2 k params"]
    assert json.loads((tmp_path / "distill" / "stage.json").read_text()) == {"metrics": {"parameters": 1234}}


def test_pipeline_trainer_is_quiet_about_the_frozen_teacher(tmp_path, csv_files, tiny_model_dir) -> None:
    """No eval-mode warning (the frozen teacher), no LeafSpec deprecation, no litlogger tip; training still runs."""
    import logging
    import warnings

    from lit_compress.distill import DistillationModule
    from lit_compress.pipeline.training import make_datamodule, make_trainer

    data = DataConfig(dataset="local", data_files=csv_files, batch_size=8, max_length=16)
    dm = make_datamodule(data, str(tiny_model_dir))
    module = DistillationModule(teacher=str(tiny_model_dir), student_layers=[1], labels=dm.label_names)
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
            trainer = make_trainer(TrainConfig(epochs=1, max_steps=2), tmp_path, accelerator="cpu",
                                   enable_progress_bar=False)
            trainer.fit(module, datamodule=dm)
    finally:
        for logger in rank_zero:
            logger.removeHandler(handler)
    assert trainer.global_step == 2
    assert any(not m.training for m in module.teacher.modules()), "the teacher is frozen in eval mode"
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
