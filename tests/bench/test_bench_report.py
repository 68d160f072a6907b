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
