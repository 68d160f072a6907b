"""benchmark_variants on tiny artifacts: figures come from the deployed Predictor and the files on disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lit_compress.bench import (
    BenchmarkSettings,
    Variant,
    benchmark_variants,
    read_selection,
    run_benchmark,
    select_final,
)
from lit_compress.bench.measure import classification_metrics
from lit_compress.export import Predictor, artifact_files

FAST = BenchmarkSettings(runs=5, warmup=1, batch_sizes=(1, 8), throughput_runs=2, progress=False)


@pytest.fixture(scope="module")
def variants(model_dir, artifacts):
    return [Variant("teacher", str(model_dir)), Variant("ort fp32", str(artifacts / "onnx-fp32")),
            Variant("ort int8", str(artifacts / "ort-dynamic-int8"), notes="default deploy"),
            Variant("torch int8", str(artifacts / "torch-dynamic-int8"))]  # fmt: skip


@pytest.fixture(scope="module")
def rows(variants, texts, labels, val_texts, val_labels):
    return benchmark_variants(variants, texts, labels, FAST, selection_examples=val_texts, selection_labels=val_labels)


def test_rows_hold_every_figure(rows):
    keys = {"name", "kind", "path", "accuracy", "macro_f1", "n_eval", "latency_mean_ms", "latency_std_ms",
            "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "latency_runs", "throughput_bs1", "throughput_bs8",
            "size_mb", "gzip_mb", "size_bytes", "parameters", "nonzero", "threads", "load_1m_before",
            "load_1m_after", "latency_load_1m_before", "latency_load_1m_after", "cpus", "notes", "val_accuracy",
            "val_macro_f1", "n_val"}  # fmt: skip
    for row in rows:
        assert keys <= set(row)
        assert row["latency_runs"] == 5 and row["threads"] == 1 and row["latency_mean_ms"] > 0
        assert row["throughput_bs8"] > 0 and row["load_1m_before"] is not None
        assert row["n_eval"] == 24 and row["n_val"] == 12
    assert [r["kind"] for r in rows] == ["torch", "onnx-fp32", "ort-dynamic-int8", "torch-dynamic-int8"]
    assert rows[2]["notes"] == "default deploy"


def test_accuracy_is_the_predictors(rows, variants, texts, labels, val_texts, val_labels):
    for row, variant in zip(rows, variants):
        predictor = Predictor.from_path(variant.path)
        for split, (xs, ys) in {"": (texts, labels), "val_": (val_texts, val_labels)}.items():
            expected = classification_metrics([int(np.argmax(predictor.logits(t))) for t in xs], ys)
            assert row[f"{split}accuracy"] == pytest.approx(expected["accuracy"])
            assert row[f"{split}macro_f1"] == pytest.approx(expected["macro_f1"])
    assert len({r["accuracy"] for r in rows[:2]}) == 1, "torch and ORT fp32 predict the same"


def test_sizes_and_counts_come_from_the_files(rows, variants):
    for row, variant in zip(rows, variants):
        assert row["size_bytes"] == sum(f.stat().st_size for f in artifact_files(variant.path))
    assert rows[2]["size_bytes"] < rows[1]["size_bytes"]
    assert rows[0]["parameters"] == rows[3]["parameters"]


def test_string_labels_are_matched_by_name(variants, texts, labels, rows):
    names = [f"label_{i}" for i in labels]  # tiny_bert's id2label names
    by_name = benchmark_variants(variants[1:2], texts, names, FAST)
    assert by_name[0]["accuracy"] == pytest.approx(rows[1]["accuracy"])
    permuted = ["label_2", "label_0", "label_1"]  # dataset order differs from the model's
    remapped = [permuted.index(n) for n in names]
    assert benchmark_variants(variants[1:2], texts, remapped, FAST, label_names=permuted)[0]["accuracy"] == (
        pytest.approx(rows[1]["accuracy"]))


def test_run_benchmark_writes_the_report(variants, texts, labels, tmp_path):
    paths = run_benchmark(variants[1:3], texts, labels, str(tmp_path), settings=FAST, highlight="ort int8")
    assert all(p.is_file() for p in paths.values())
    assert "| ort int8 |" in paths["markdown"].read_text()
    assert read_selection(paths["json"]) is None, "no selection texts: nothing is chosen"


def test_run_benchmark_chooses_on_validation_and_reports_test(variants, texts, labels, val_texts, val_labels,
                                                              tmp_path):  # fmt: skip
    paths = run_benchmark(variants, texts, labels, str(tmp_path), settings=FAST, baseline="teacher",
                          selection_examples=val_texts, selection_labels=val_labels, accuracy_budget=100.0)  # fmt: skip
    report = json.loads(paths["json"].read_text())
    selection = read_selection(paths["json"])
    assert selection is not None and selection.teacher == "teacher" and selection.budget_pts == 100.0
    assert selection == select_final(report["rows"], teacher="teacher", budget_pts=100.0)
    fastest = min((r for r in report["rows"] if r["name"] != "teacher"), key=lambda r: r["latency_p50_ms"])
    assert selection.chosen == fastest["name"] and selection.within_budget, "a 100-point budget admits all"
    assert report["selection"]["chosen"] == selection.chosen and "machine" in report["meta"]
    from lit_compress.quant.targets import cpu_features, select_target

    machine = report["meta"]["machine"]  # every figure carries the CPU's int8 features and preset
    assert machine["int8_flags"] == list(cpu_features().flags)
    assert machine["int8_target"] == select_target(cpu_features()).name and machine["cpus"] >= 1
    assert [r["name"] for r in report["rows"] if r["final"]] == [selection.chosen]
    assert [r["name"] for r in report["rows"] if r["pareto"]] and all("val_accuracy" in r for r in report["rows"])
    markdown = paths["markdown"].read_text()
    assert "| Val acc | Test acc |" in markdown and f"**Final artifact: {selection.chosen}** —" in markdown
    assert "val_accuracy" in paths["csv"].read_text().splitlines()[0]


def test_misconfiguration_is_explained(variants, texts, labels):
    with pytest.raises(ValueError, match="Variant names must be unique"):
        benchmark_variants([variants[0], variants[0]], texts, labels, FAST)
    with pytest.raises(ValueError, match=r"examples \(24\) and labels \(3\) must be non-empty and aligned"):
        benchmark_variants(variants[:1], texts, labels[:3], FAST)
    with pytest.raises(ValueError, match="threads, runs and throughput_runs must be >= 1"):
        BenchmarkSettings(runs=0)
    with pytest.raises(ValueError, match="non-empty label"):
        Variant(" ", "x")
    with pytest.raises(ValueError, match="Pass both selection_examples and selection_labels"):
        benchmark_variants(variants[:1], texts, labels, FAST, selection_examples=texts)
    with pytest.raises(ValueError, match=r"selection_examples \(24\) and selection_labels \(3\) must be non-empty"):
        benchmark_variants(variants[:1], texts, labels, FAST, selection_examples=texts, selection_labels=labels[:3])
    with pytest.raises(ValueError, match="teacher 'bert' is not a benchmarked variant"):  # before measuring
        run_benchmark(variants, texts, labels, "unused", settings=FAST, selection_examples=texts, selection_labels=labels,
                      teacher="bert")  # fmt: skip


def test_benchmark_verb_reads_a_dataset_split(variants, tmp_path):
    from lit_compress.bench.api import benchmark_cli
    from lit_compress.data.sources import DataSource

    rows = ["text,label"] + [f"{w} news today,{i % 3}" for i, w in enumerate(["sport", "bank", "film"] * 8)]
    for split in ("train", "test"):
        (tmp_path / f"{split}.csv").write_text("\n".join(rows) + "\n")
    data = DataSource(name="local", data_files={s: str(tmp_path / f"{s}.csv") for s in ("train", "test")})
    paths = benchmark_cli(variants[1:2], str(tmp_path / "out"), data=data, limit=10, settings=FAST)
    report = json.loads(Path(paths["json"]).read_text())
    assert report["rows"][0]["n_eval"] == 10 and report["rows"][0]["name"] == "ort fp32"
    with pytest.raises(ValueError, match="Split 'dev' not in the data"):
        benchmark_cli(variants[1:2], str(tmp_path / "out"), data=data, split="dev", settings=FAST)
    with pytest.raises(ValueError, match="choose on one split, report on another"):
        benchmark_cli(variants[1:2], str(tmp_path / "out"), data=data, selection_split="test", settings=FAST)
    paths = benchmark_cli(variants[:2], str(tmp_path / "chosen"), data=data, limit=10, settings=FAST,
                          selection_split="validation", accuracy_budget=100.0)  # fmt: skip
    chosen = read_selection(paths["json"])
    assert chosen is not None and chosen.teacher == "teacher" and chosen.chosen == "ort fp32"


def test_predictor_overhead_against_a_bare_session(artifacts, model_dir, texts):
    from lit_compress.bench import predictor_overhead

    figures = predictor_overhead(artifacts / "onnx-fp32", texts[5], runs=60, warmup=5)
    assert set(figures) == {"predictor_ms", "bare_ms", "run_only_ms", "ratio"}
    assert figures["ratio"] == pytest.approx(figures["predictor_ms"] / figures["bare_ms"])
    assert figures["bare_ms"] > figures["run_only_ms"] > 0  # the bare path tokenizes too
    with pytest.raises(ValueError, match="not an ONNX artifact"):
        predictor_overhead(model_dir, texts[0], runs=1, warmup=0)
