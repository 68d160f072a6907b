"""Benchmark reports: Markdown, JSON and CSV tables, the accuracy-vs-latency scatter, logger output.

Ratios are taken against a baseline row (the teacher by default: the first row): ``speedup = t_base / t``
(mean single-query latency), ``size_ratio = size_base / size`` (bytes on disk) and
``delta_acc_pts = 100 (acc - acc_base)``. The plot is the book's ``plot_metrics``: accuracy (%) against
mean latency (ms), marker area proportional to size on disk, the highlighted variant drawn as a dashed circle.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lit_compress.utils.io import atomic_path, write_json_atomic, write_text_atomic

REPORT_STEM = "benchmark"
_COLUMNS = [  # (row key, Markdown header, format)
    ("name", "Variant", "{}"),
    ("kind", "Kind", "{}"),
    ("accuracy", "Accuracy", "{:.2%}"),
    ("macro_f1", "Macro-F1", "{:.4f}"),
    ("latency_mean_ms", "Latency mean (ms)", "{:.2f}"),
    ("latency_std_ms", "± std", "{:.2f}"),
    ("latency_p50_ms", "p50", "{:.2f}"),
    ("latency_p95_ms", "p95", "{:.2f}"),
    ("latency_p99_ms", "p99", "{:.2f}"),
    ("throughput_bs1", "Thr. bs1 (/s)", "{:.1f}"),
    ("throughput_bs8", "Thr. bs8 (/s)", "{:.1f}"),
    ("throughput_bs32", "Thr. bs32 (/s)", "{:.1f}"),
    ("size_mb", "Size (MB)", "{:.2f}"),
    ("gzip_mb", "gzip (MB)", "{:.2f}"),
    ("parameters", "Params", "{:,}"),
    ("nonzero", "Nonzero", "{:,}"),
    ("speedup", "Speed-up ×", "{:.2f}"),
    ("size_ratio", "Smaller ×", "{:.2f}"),
    ("delta_acc_pts", "Δacc (pts)", "{:+.2f}"),
    ("load_1m_before", "Load 1m", "{:.2f}"),
]


def add_ratios(rows: Sequence[Mapping[str, Any]], baseline: str | None = None) -> list[dict[str, Any]]:
    """Copy ``rows`` adding ``speedup``, ``size_ratio`` and ``delta_acc_pts`` against the ``baseline`` row.

    Raises:
        ValueError: ``baseline`` names no row.
    """
    if not rows:
        return []
    names = [r["name"] for r in rows]
    if baseline is not None and baseline not in names:
        raise ValueError(f"baseline {baseline!r} is not a benchmarked variant; choose one of {names}.")
    base = rows[names.index(baseline)] if baseline is not None else rows[0]
    return [
        {**row, "baseline": base["name"], "speedup": base["latency_mean_ms"] / row["latency_mean_ms"],
         "size_ratio": base["size_bytes"] / row["size_bytes"],
         "delta_acc_pts": 100.0 * (row["accuracy"] - base["accuracy"])}  # fmt: skip
        for row in rows
    ]


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A GitHub Markdown table of the main figures (columns missing from every row are dropped)."""
    columns = [c for c in _COLUMNS if any(c[0] in r for r in rows)]
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [_cell(row.get(key), fmt) for key, _, fmt in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """All fields of all rows as CSV (union of keys, in first-seen order)."""
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def plot_accuracy_vs_latency(
    rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], *, highlight: str | None = None
) -> Path:
    """Scatter accuracy (%) against mean latency (ms), marker area proportional to size on disk.

    Written atomically as PNG with matplotlib's Agg backend (no display needed).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), dpi=120)
    ax = fig.add_subplot()
    largest = max(r["size_mb"] for r in rows)
    for row in rows:
        area = 40 + 1500 * row["size_mb"] / largest
        dashed = row["name"] == highlight
        ax.scatter(row["latency_mean_ms"], 100 * row["accuracy"], s=area, alpha=0.5, label=row["name"],
                   marker="$\u25cc$" if dashed else "o")  # fmt: skip
    legend = ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize="small", markerscale=0.5)
    for handle in legend.legend_handles:
        handle.set_sizes([30])
    ax.set_xlim(0, 1.15 * max(r["latency_mean_ms"] for r in rows))
    ax.set_xlabel("Average latency (ms)")
    ax.set_ylabel("Accuracy (%)")
    ax.set_title("Accuracy vs latency (marker area ∝ size on disk)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def write_report(
    rows: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike[str],
    *,
    baseline: str | None = None,
    highlight: str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``benchmark.{md,json,csv,png}`` into ``out_dir`` (each atomically) and return their paths.

    Args:
        rows: Rows from :func:`~lit_compress.bench.suite.benchmark_variants`.
        out_dir: Destination directory.
        baseline: Row the ratios are taken against (default the first).
        highlight: Row drawn as a dashed circle in the plot.
        meta: Settings, machine and versions stored in the JSON and listed under the Markdown table.
    """
    if not rows:
        raise ValueError("No benchmark rows to report.")
    table = add_ratios(rows, baseline)
    out = Path(out_dir)
    notes = "".join(f"- {k}: {v}\n" for k, v in (meta or {}).items())
    paths = {
        "markdown": write_text_atomic(out / f"{REPORT_STEM}.md", f"# Benchmark\n\n{markdown_table(table)}\n{notes}"),
        "json": write_json_atomic(out / f"{REPORT_STEM}.json", {"meta": dict(meta or {}), "rows": table}),
        "csv": write_text_atomic(out / f"{REPORT_STEM}.csv", csv_text(table)),
        "plot": plot_accuracy_vs_latency(table, out / f"{REPORT_STEM}.png", highlight=highlight),
    }
    return paths


def log_results(logger: Any, rows: Sequence[Mapping[str, Any]], plot: str | os.PathLike[str] | None = None,
                prefix: str = "benchmark") -> None:  # fmt: skip
    """Send the table to a Lightning logger: a W&B Table and image for ``WandbLogger``, metrics otherwise."""
    if logger is None:
        return
    from lightning.pytorch.loggers import WandbLogger

    columns = [key for key, _, _ in _COLUMNS if any(key in r for r in rows)]
    if isinstance(logger, WandbLogger):
        logger.log_table(key=f"{prefix}/table", columns=columns, data=[[r.get(c) for c in columns] for r in rows])
        if plot is not None:
            logger.log_image(key=f"{prefix}/accuracy_vs_latency", images=[str(plot)])
        return
    metrics = {f"{prefix}/{r['name']}/{c}": float(r[c]) for r in rows for c in columns
               if isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool)}  # fmt: skip
    logger.log_metrics(metrics, step=0)


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "–"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)
