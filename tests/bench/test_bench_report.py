"""Reports: ratios, Markdown/JSON/CSV tables, the scatter plot, atomic writes, logger output."""

from __future__ import annotations

import csv
import json

import pytest

from lit_compress.bench import add_ratios, log_results, markdown_table, write_report
from lit_compress.bench import report as report_module

ROWS = [
    {"name": "teacher", "kind": "torch", "accuracy": 0.90, "macro_f1": 0.89, "latency_mean_ms": 50.0,
     "latency_std_ms": 2.0, "size_mb": 80.0, "size_bytes": 80_000_000, "parameters": 20_000_000, "nonzero": 20_000_000},
    {"name": "student int8", "kind": "ort-dynamic-int8", "accuracy": 0.895, "macro_f1": 0.88, "latency_mean_ms": 4.0,
     "latency_std_ms": 0.5, "size_mb": 5.0, "size_bytes": 5_000_000, "parameters": 5_000_000, "nonzero": 4_000_000},
]  # fmt: skip


def test_ratios_against_the_baseline():
    rows = add_ratios(ROWS)
    assert rows[1]["speedup"] == pytest.approx(12.5) and rows[1]["size_ratio"] == pytest.approx(16.0)
    assert rows[1]["delta_acc_pts"] == pytest.approx(-0.5) and rows[0]["speedup"] == 1.0
    flipped = add_ratios(ROWS, baseline="student int8")
    assert flipped[0]["speedup"] == pytest.approx(0.08) and flipped[0]["baseline"] == "student int8"
    with pytest.raises(ValueError, match="baseline 'bert' is not a benchmarked variant"):
        add_ratios(ROWS, baseline="bert")


def test_markdown_table_formats_figures():
    table = markdown_table(add_ratios(ROWS))
    lines = table.strip().splitlines()
    assert lines[0].startswith("| Variant | Kind | Accuracy | Macro-F1 | Latency mean (ms)")
    assert "| student int8 | ort-dynamic-int8 | 89.50% | 0.8800 | 4.00 | 0.50 |" in table
    assert "12.50" in lines[3] and "16.00" in lines[3] and "-0.50" in lines[3]
    assert len(lines) == 4


def test_write_report_writes_all_formats(tmp_path):
    paths = write_report(ROWS, tmp_path, meta={"threads": 1})
    assert set(paths) == {"markdown", "json", "csv", "plot"}
    data = json.loads(paths["json"].read_text())
    assert data["meta"] == {"threads": 1} and data["rows"][1]["speedup"] == pytest.approx(12.5)
    with open(paths["csv"]) as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows] == ["teacher", "student int8"] and float(rows[1]["size_ratio"]) == 16.0
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "- threads: 1" in paths["markdown"].read_text()


def test_failed_plot_leaves_no_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def crash(self, path, **kwargs):
        open(path, "wb").write(b"\x89PNG partial")
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(Figure, "savefig", crash)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        report_module.plot_accuracy_vs_latency(ROWS, tmp_path / "plot.png")
    assert list(tmp_path.iterdir()) == []


def test_log_results_to_a_metrics_logger(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(tmp_path, name="bench")
    log_results(logger, add_ratios(ROWS))
    logger.save()
    with open(tmp_path / "bench" / "version_0" / "metrics.csv") as fh:
        logged = next(csv.DictReader(fh))
    assert float(logged["benchmark/student int8/latency_mean_ms"]) == 4.0
    assert float(logged["benchmark/student int8/speedup"]) == pytest.approx(12.5)


def test_log_results_to_wandb_as_table_and_image(tmp_path, monkeypatch):
    from lightning.pytorch.loggers import WandbLogger

    calls = {}
    monkeypatch.setattr(WandbLogger, "log_table", lambda self, **kw: calls.update(table=kw))
    monkeypatch.setattr(WandbLogger, "log_image", lambda self, **kw: calls.update(image=kw))
    logger = WandbLogger.__new__(WandbLogger)  # no run is started: only the calls are checked
    plot = report_module.plot_accuracy_vs_latency(ROWS, tmp_path / "p.png")
    log_results(logger, ROWS, plot)
    assert calls["table"]["columns"][:3] == ["name", "kind", "accuracy"]
    assert calls["table"]["data"][1][:2] == ["student int8", "ort-dynamic-int8"]
    assert calls["image"] == {"key": "benchmark/accuracy_vs_latency", "images": [str(plot)]}


def _val_rows() -> list[dict]:
    figures = [("teacher", 0.95, 0.93, 50.0, 80_000_000), ("student int8", 0.945, 0.90, 4.0, 5_000_000),
               ("QAT Q/DQ", 0.92, 0.94, 3.0, 4_000_000), ("ORT fp32", 0.94, 0.92, 20.0, 30_000_000)]  # fmt: skip
    return [{"name": n, "kind": "k", "val_accuracy": val, "accuracy": test, "macro_f1": test,
             "latency_mean_ms": p50 + 1, "latency_p50_ms": p50, "size_mb": size / 1e6, "size_bytes": size}
            for n, val, test, p50, size in figures]  # fmt: skip


def test_report_carries_val_and_test_accuracy_pareto_and_the_selection(tmp_path):
    from lit_compress.bench import select_final

    rows = _val_rows()
    selection = select_final(rows, teacher="teacher", budget_pts=1.0)
    assert selection.chosen == "student int8", "Q/DQ is faster and best on test, but 3 points down on validation"
    paths = write_report(rows, tmp_path, selection=selection, meta={"machine": {"cpus": 2}})
    markdown = paths["markdown"].read_text()
    assert f"**Final artifact: student int8** — {selection.reason}." in markdown
    header = next(line for line in markdown.splitlines() if line.startswith("|"))
    assert header.startswith("| Variant | Kind | Final | Pareto | Val acc | Test acc | Macro-F1 |")
    assert "| student int8 | k | ✓ | ★ | 94.50% | 90.00% |" in markdown
    assert "| ORT fp32 | k |  |  | 94.00% | 92.00% |" in markdown, "dominated by the student on val acc and p50"
    assert "Δval acc (pts)" in header and "-0.50" in markdown
    report = json.loads(paths["json"].read_text())
    assert report["selection"] == selection.as_dict() and report["meta"]["machine"] == {"cpus": 2}
    assert report["pareto"] == {"accuracy_key": "val_accuracy", "latency_key": "latency_p50_ms",
                                "names": ["QAT Q/DQ", "student int8", "teacher"]}  # fmt: skip
    by_name = {r["name"]: r for r in report["rows"]}
    assert [n for n, r in by_name.items() if r["final"]] == ["student int8"]
    assert {n for n, r in by_name.items() if r["pareto"]} == {"QAT Q/DQ", "student int8", "teacher"}
    assert by_name["student int8"]["delta_val_acc_pts"] == pytest.approx(-0.5)
    with open(paths["csv"]) as fh:
        table = {r["name"]: r for r in csv.DictReader(fh)}
    assert table["student int8"]["final"] == "True" and table["ORT fp32"]["pareto"] == "False"
    assert float(table["QAT Q/DQ"]["val_accuracy"]) == 0.92 and float(table["QAT Q/DQ"]["accuracy"]) == 0.94
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_without_a_selection_marks_the_front_on_what_it_has(tmp_path):
    paths = write_report(ROWS + [{**ROWS[1], "name": "slow and worse", "latency_mean_ms": 9.0, "accuracy": 0.8}],
                         tmp_path)  # fmt: skip
    report = json.loads(paths["json"].read_text())
    assert report["selection"] is None
    assert report["pareto"] == {"accuracy_key": "accuracy", "latency_key": "latency_mean_ms",
                                "names": ["student int8", "teacher"]}  # fmt: skip
    markdown = paths["markdown"].read_text()
    assert "Final" not in markdown and "| Variant | Kind | Pareto | Accuracy |" in markdown
    assert "| slow and worse | ort-dynamic-int8 |  | 80.00% |" in markdown


def test_plot_draws_the_front_and_the_budget(tmp_path):
    from lit_compress.bench import select_final

    rows = _val_rows()
    selection = select_final(rows, teacher="teacher")
    path = report_module.plot_accuracy_vs_latency(rows, tmp_path / "p.png", highlight=selection.chosen,
                                                  accuracy_key="val_accuracy", latency_key="latency_p50_ms",
                                                  pareto=selection.pareto, threshold=selection.threshold)  # fmt: skip
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
