"""benchmark_stage chooses the final artifact on validation, reports test; export_stage checks parity on validation.

No training and no measuring: the datamodule is a stub and ``benchmark_variants`` returns hand-made rows, so
the real ``run_benchmark`` -> ``select_final`` -> ``write_report`` -> ``stage.json`` wiring is what is tested.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lit_compress.bench.suite import BenchmarkSettings
from lit_compress.export.parity import Int8Gate
from lit_compress.pipeline import deploy
from lit_compress.pipeline.config import BenchmarkOptions, ExportPlan
from lit_compress.pipeline.context import Deployable, RunContext, TrainedModel

DATA = {"class_path": "lit_compress.data.TextClassificationDataModule", "init_args": {}}


def bench(runs: int = 100, **kwargs) -> BenchmarkOptions:
    return BenchmarkOptions(BenchmarkSettings(runs=runs), **kwargs)

#: name -> (val acc, test acc, p50 ms, bytes); the Q/DQ row is fastest and best on *test*, 2 points down on val
FIGURES = {
    deploy.TEACHER: (0.95, 0.94, 40.0, 90_000_000),
    deploy.STUDENT: (0.945, 0.93, 12.0, 40_000_000),
    "pruned+trimmed QAT static int8 (Q/DQ)": (0.93, 0.96, 4.0, 6_000_000),
    "pruned+trimmed PTQ ORT dynamic int8": (0.942, 0.92, 5.0, 7_000_000),
    "pruned+trimmed QAT ORT dynamic int8": (0.948, 0.93, 6.0, 7_000_000),
}


class StubData:
    label_names = ["a", "b"]
    max_length = 16

    def examples(self, split: str) -> list[str]:
        return [f"{split} text {i}" for i in range(4 if split == "validation" else 6)]

    def labels(self, split: str) -> list[int]:
        return [i % 2 for i in range(len(self.examples(split)))]


@pytest.fixture
def stage(tmp_path, monkeypatch):
    """Stub data and measurements; returns (ctx, artifacts, calls), calls filled by benchmark_variants."""
    calls: dict = {}

    def fake_benchmark_variants(variants, examples, labels, settings, *, label_names, selection_examples,
                                selection_labels):  # fmt: skip
        calls.update(names=[v.name for v in variants], examples=examples, labels=labels,
                     selection_examples=selection_examples, selection_labels=selection_labels,
                     runs=settings.runs)  # fmt: skip
        return [{"name": v.name, "kind": "k", "path": v.path, "val_accuracy": FIGURES[v.name][0],
                 "accuracy": FIGURES[v.name][1], "latency_p50_ms": FIGURES[v.name][2],
                 "latency_mean_ms": FIGURES[v.name][2] + 0.5, "size_bytes": FIGURES[v.name][3],
                 "size_mb": FIGURES[v.name][3] / 2**20} for v in variants]  # fmt: skip

    monkeypatch.setattr("lit_compress.bench.api.benchmark_variants", fake_benchmark_variants)
    monkeypatch.setattr(deploy, "make_datamodule", lambda data, tokenizer: StubData())
    ctx = run_context(tmp_path)
    sources = {"pruned+trimmed QAT static int8 (Q/DQ)": ("qat_static", "ort-static-int8"),
               "pruned+trimmed PTQ ORT dynamic int8": ("pruned", "ort-dynamic-int8"),
               "pruned+trimmed QAT ORT dynamic int8": ("qat_dynamic", "ort-dynamic-int8")}
    artifacts = [Deployable(name, *sources[name], tmp_path / name) for name in list(FIGURES)[2:]]
    return ctx, artifacts, calls


def run_context(tmp_path: Path) -> RunContext:
    ctx = RunContext(run_dir=tmp_path / "run")
    ctx.teacher = TrainedModel("teacher", "teacher", tmp_path / "teacher", {})
    ctx.student = TrainedModel("distill", "student", tmp_path / "student", {})
    return ctx


def test_row_labels_of_the_variants():
    assert deploy.label("student", "onnx-fp32") == "student ORT fp32"
    assert deploy.label("student", "torch-dynamic-int8") == "student torch dynamic int8"
    assert deploy.label("pruned", "onnx-fp32") == "pruned+trimmed ORT fp32"
    assert deploy.label("pruned", "ort-static-int8") == "pruned+trimmed PTQ ORT static int8"
    assert deploy.label("qat_dynamic", "ort-dynamic-int8") == "pruned+trimmed QAT ORT dynamic int8"
    assert deploy.label("qat_static", "ort-static-int8") == "pruned+trimmed QAT static int8 (Q/DQ)"
    # without vocabulary trimming (an image model) the rows say only "pruned"
    assert deploy.label("pruned", "ort-static-int8", trimmed=False) == "pruned PTQ ORT static int8"
    assert deploy.label("qat_static", "ort-static-int8", trimmed=False) == "pruned QAT static int8 (Q/DQ)"


def test_final_artifact_is_fastest_within_budget_on_validation(stage, capsys):
    ctx, artifacts, calls = stage
    final, table = deploy.benchmark_stage(ctx, DATA, bench(runs=3), artifacts)
    chosen = "pruned+trimmed PTQ ORT dynamic int8"
    line = (f"final artifact: {chosen} — fastest within 1.0 points of the teacher on validation "
            "(val acc 94.20%, p50 5.00 ms)")  # fmt: skip
    assert line in capsys.readouterr().out
    data = StubData()
    assert calls["selection_examples"] == data.examples("validation") and calls["examples"] == data.examples("test")
    assert calls["selection_labels"] == [0, 1, 0, 1] and calls["runs"] == 3
    assert calls["names"] == list(FIGURES), "teacher, student, then every artifact"
    record = json.loads((ctx.run_dir / "benchmark" / "stage.json").read_text())
    assert final == Deployable(chosen, "pruned", "ort-dynamic-int8", artifacts[1].path)
    assert record["final"] == final.as_dict() and record["final_reason"] in line
    assert record["selection"]["budget_pts"] == 1.0
    report = json.loads(Path(record["paths"]["json"]).read_text())
    assert report["selection"] == record["selection"] and report["selection"]["teacher"] == deploy.TEACHER
    assert f"**Final artifact: {chosen}**" in table and "| Val acc | Test acc |" in table


def test_the_budget_comes_from_the_config(stage, capsys):
    ctx, artifacts, _ = stage
    final, _ = deploy.benchmark_stage(ctx, DATA, bench(), artifacts, accuracy_budget=2.5)
    record = json.loads((ctx.run_dir / "benchmark" / "stage.json").read_text())
    assert record["final"]["name"] == "pruned+trimmed QAT static int8 (Q/DQ)" and final.source == "qat_static"
    assert "fastest within 2.5 points" in capsys.readouterr().out


def test_nothing_within_budget_falls_back_to_the_most_accurate(stage, capsys):
    ctx, artifacts, _ = stage
    deploy.benchmark_stage(ctx, DATA, bench(), artifacts, accuracy_budget=0.0)
    out = capsys.readouterr().out
    assert "final artifact: pruned+trimmed QAT ORT dynamic int8 — no variant within 0.0 points" in out
    record = json.loads((ctx.run_dir / "benchmark" / "stage.json").read_text())
    assert record["selection"]["within_budget"] is False and record["final"]["name"] == "pruned+trimmed QAT ORT dynamic int8"


def test_accuracy_budget_is_validated():
    from lit_compress.errors import UserInputError
    from lit_compress.pipeline.config import check_budget

    assert check_budget(2.5) == 2.5
    with pytest.raises(UserInputError, match="accuracy_budget is in accuracy points"):
        check_budget(-1.0)


def test_export_checks_parity_on_the_validation_texts(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr("lit_compress.export.api.export_model", lambda *a, **kw: seen.append(kw["parity_examples"]))
    monkeypatch.setattr(deploy, "make_datamodule", lambda data, tokenizer: StubData())
    monkeypatch.setattr(deploy, "_exported", lambda directory, variant, trimmed: [])
    ctx = run_context(tmp_path)
    deploy.export_stage(ctx, DATA, ExportPlan(), {})
    data = StubData()  # 4 validation texts: the int8 gate's 256 are topped up from train, never from test
    assert seen == [data.examples("validation") + data.examples("train")], "checked on every validation text"
    deploy.export_stage(ctx, DATA, ExportPlan(options={"int8_gate": Int8Gate(min_texts=3)}), {})
    assert seen[-1] == data.examples("validation")


def test_an_artifact_refused_by_its_gate_is_left_out_and_the_others_are_exported(tmp_path, monkeypatch, capsys):
    from lit_compress.export import api
    from lit_compress.export.parity import Int8GateError

    calls = []

    def fake_export(model_dir, out_dir, *, formats, **options):
        calls.append(list(formats))
        if "ort-dynamic-int8" in formats:
            raise Int8GateError("ort-dynamic-int8 (x/model.onnx): int8 gate failed: argmax agreement 98.44%")

    monkeypatch.setattr(api, "export_model", fake_export)
    refused = deploy.export_gated("m", tmp_path / "student", ["onnx-fp32", "ort-dynamic-int8", "ort-static-int8"])
    assert calls == [["onnx-fp32", "ort-dynamic-int8", "ort-static-int8"], ["onnx-fp32", "ort-static-int8"]]
    assert list(refused) == ["ort-dynamic-int8"] and "98.44%" in refused["ort-dynamic-int8"]
    assert "student ort-dynamic-int8 not shipped, refused by its int8 gate" in capsys.readouterr().out
