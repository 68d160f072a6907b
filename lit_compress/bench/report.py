"""Benchmark reports: Markdown, JSON and CSV tables, the accuracy-vs-latency scatter, logger output.

Ratios are taken against a baseline row (the teacher by default: the first row): ``speedup = t_base / t``
(mean single-query latency), ``size_ratio = size_base / size`` (bytes on disk),
``delta_acc_pts = 100 (acc - acc_base)`` on the reported (test) split and, when rows carry a validation
accuracy, ``delta_val_acc_pts`` likewise. The plot is the book's ``plot_metrics``: accuracy (%) against
latency (ms), marker area proportional to size on disk, the highlighted variant ringed by a dashed circle;
the Pareto front (:func:`~lit_compress.bench.select.pareto_front`) is drawn as a step line through its
variants, whose markers get a black edge. With a :class:`~lit_compress.bench.select.Selection` the plot is
drawn in the space the choice was made in (validation accuracy against p50) with the budget as a dashed line.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lit_compress.bench.select import Selection, pareto_front
from lit_compress.utils.io import atomic_path, write_json_atomic, write_text_atomic

REPORT_STEM = "benchmark"
PARETO_MARK, FINAL_MARK = "★", "✓"
_COLUMNS: list[tuple[str, str, str | Callable[[Any], str]]] = [  # (row key, Markdown header, format)
    ("name", "Variant", "{}"),
    ("kind", "Kind", "{}"),
    ("final", "Final", lambda v: FINAL_MARK if v else ""),
    ("pareto", "Pareto", lambda v: PARETO_MARK if v else ""),
    ("val_accuracy", "Val acc", "{:.2%}"),
    ("accuracy", "Accuracy", "{:.2%}"),  # "Test acc" when the rows also carry a validation accuracy
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
    ("delta_val_acc_pts", "Δval acc (pts)", "{:+.2f}"),
    ("delta_acc_pts", "Δacc (pts)", "{:+.2f}"),
    ("load_1m_before", "Load 1m", "{:.2f}"),
]


def add_ratios(rows: Sequence[Mapping[str, Any]], baseline: str | None = None) -> list[dict[str, Any]]:
    """Copy ``rows`` adding ``speedup``, ``size_ratio`` and ``delta_acc_pts`` against the ``baseline`` row.

    ``delta_val_acc_pts`` is added too where both the row and the baseline carry ``val_accuracy``.

    Raises:
        ValueError: ``baseline`` names no row.
    """
    if not rows:
        return []
    names = [r["name"] for r in rows]
    if baseline is not None and baseline not in names:
        raise ValueError(f"baseline {baseline!r} is not a benchmarked variant; choose one of {names}.")
    base = rows[names.index(baseline)] if baseline is not None else rows[0]
    out = []
    for row in rows:
        ratios = {"baseline": base["name"], "speedup": base["latency_mean_ms"] / row["latency_mean_ms"],
                  "size_ratio": base["size_bytes"] / row["size_bytes"],
                  "delta_acc_pts": 100.0 * (row["accuracy"] - base["accuracy"])}  # fmt: skip
        if "val_accuracy" in row and "val_accuracy" in base:
            ratios["delta_val_acc_pts"] = 100.0 * (row["val_accuracy"] - base["val_accuracy"])
        out.append({**row, **ratios})
    return out


def mark_pareto(rows: Sequence[Mapping[str, Any]], selection: Selection | None = None) -> list[dict[str, Any]]:
    """Copy ``rows`` adding ``pareto`` (on the front) and, with a ``selection``, ``final`` (the chosen row).

    The front is the selection's (validation accuracy against p50). Without one it is computed on the best
    figures every row has: ``val_accuracy`` else ``accuracy``, ``latency_p50_ms`` else ``latency_mean_ms``.
    """
    accuracy_key, latency_key = pareto_axes(rows, selection)
    front = set(selection.pareto) if selection is not None else set(
        pareto_front(rows, accuracy_key=accuracy_key, latency_key=latency_key))  # fmt: skip
    marks: list[dict[str, Any]] = [{"pareto": row["name"] in front} for row in rows]
    if selection is not None:
        for mark, row in zip(marks, rows):
            mark["final"] = row["name"] == selection.chosen
    return [{**row, **mark} for row, mark in zip(rows, marks)]


def pareto_axes(rows: Sequence[Mapping[str, Any]], selection: Selection | None = None) -> tuple[str, str]:
    """``(accuracy_key, latency_key)`` the front is drawn on (see :func:`mark_pareto`)."""
    if selection is not None:
        return selection.accuracy_key, selection.latency_key
    accuracy = "val_accuracy" if rows and all("val_accuracy" in r for r in rows) else "accuracy"
    latency = "latency_p50_ms" if rows and all("latency_p50_ms" in r for r in rows) else "latency_mean_ms"
    return accuracy, latency


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A GitHub Markdown table of the main figures (columns missing from every row are dropped)."""
    columns = [c for c in _COLUMNS if any(c[0] in r for r in rows)]
    if any("val_accuracy" in r for r in rows):  # say which split each accuracy is on
        test = {"accuracy": "Test acc", "delta_acc_pts": "Δtest acc (pts)"}
        columns = [(k, test.get(k, h), f) for k, h, f in columns]
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
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    highlight: str | None = None,
    accuracy_key: str = "accuracy",
    latency_key: str = "latency_mean_ms",
    pareto: Sequence[str] | None = None,
    threshold: float | None = None,
) -> Path:
    """Scatter accuracy (%) against latency (ms), marker area proportional to size on disk.

    Args:
        rows: Report rows.
        path: PNG destination, written atomically with matplotlib's Agg backend (no display needed).
        highlight: Row ringed by a dashed red circle (the chosen final artifact).
        accuracy_key: Row key of the y axis (a fraction), e.g. ``val_accuracy``.
        latency_key: Row key of the x axis (ms), e.g. ``latency_p50_ms``.
        pareto: Names on the Pareto front: black marker edges and a step line through them.
        threshold: Lowest accuracy within the selection budget (a fraction), drawn as a dashed line.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), dpi=120)
    ax = fig.add_subplot()
    largest = max(r["size_mb"] for r in rows)
    front = set(pareto or ())
    for row in rows:
        area = 40 + 1500 * row["size_mb"] / largest
        x, y, chosen = row[latency_key], 100 * row[accuracy_key], row["name"] == highlight
        ax.scatter(x, y, s=area, alpha=0.5, label=row["name"] + (" (final)" if chosen else ""),
                   edgecolors="black" if row["name"] in front else "none", linewidths=1.5)  # fmt: skip
        if chosen:
            ax.scatter(x, y, s=2.5 * area, facecolors="none", edgecolors="red", linestyles="--", linewidths=1.5)
    on_front = sorted((r[latency_key], 100 * r[accuracy_key]) for r in rows if r["name"] in front)
    if on_front:
        xs, ys = zip(*on_front)
        ax.step(xs, ys, where="post", color="black", linewidth=1, alpha=0.6, label="Pareto front")
    if threshold is not None:
        ax.axhline(100 * threshold, color="grey", linestyle="--", linewidth=1,
                   label=f"budget: ≥ {100 * threshold:.2f}%")
    legend = ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize="small", markerscale=0.5)
    for handle in legend.legend_handles:
        if hasattr(handle, "set_sizes"):
            handle.set_sizes([30])
    ax.set_xlim(0, 1.15 * max(r[latency_key] for r in rows))
    ax.set_xlabel(_AXIS_LABELS.get(latency_key, latency_key))
    ax.set_ylabel(_AXIS_LABELS.get(accuracy_key, accuracy_key))
    ax.set_title("Accuracy vs latency (marker area ∝ size on disk)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


_AXIS_LABELS = {
    "latency_mean_ms": "Average latency (ms)",
    "latency_p50_ms": "Median (p50) latency (ms)",
    "accuracy": "Accuracy (%)",
    "val_accuracy": "Validation accuracy (%)",
}

_AXIS_WORDS = {"latency_mean_ms": "mean latency", "latency_p50_ms": "p50 latency", "accuracy": "accuracy",
               "val_accuracy": "validation accuracy"}  # fmt: skip


def write_report(
    rows: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike[str],
    *,
    baseline: str | None = None,
    highlight: str | None = None,
    meta: Mapping[str, Any] | None = None,
    selection: Selection | None = None,
) -> dict[str, Path]:
    """Write ``benchmark.{md,json,csv,png}`` into ``out_dir`` (each atomically) and return their paths.

    Every row gets a ``pareto`` flag (see :func:`mark_pareto`); with a ``selection`` also a ``final`` flag,
    the JSON a ``selection`` block (:meth:`Selection.as_dict`), the Markdown a line naming the final artifact
    and why. The plot is drawn on the front's axes (:func:`pareto_axes`), with the budget line when there is a
    selection.

    Args:
        rows: Rows from :func:`~lit_compress.bench.suite.benchmark_variants`.
        out_dir: Destination directory.
        baseline: Row the ratios are taken against (default the first).
        highlight: Row ringed by a dashed circle in the plot (default the selection's choice).
        meta: Settings, machine and versions stored in the JSON and listed under the Markdown table.
        selection: The final-artifact choice made from these rows
            (:func:`~lit_compress.bench.select.select_final`).
    """
    if not rows:
        raise ValueError("No benchmark rows to report.")
    table = mark_pareto(add_ratios(rows, baseline), selection)
    accuracy_key, latency_key = pareto_axes(table, selection)
    front = list(selection.pareto) if selection is not None else pareto_front(
        table, accuracy_key=accuracy_key, latency_key=latency_key)  # fmt: skip
    highlight = highlight if highlight is not None else (selection.chosen if selection is not None else None)
    out = Path(out_dir)
    notes = "".join(f"- {k}: {v}\n" for k, v in (meta or {}).items())
    markdown = f"# Benchmark\n\n{_selection_text(selection, accuracy_key, latency_key)}{markdown_table(table)}\n{notes}"
    report = {"meta": dict(meta or {}), "selection": selection.as_dict() if selection is not None else None,
              "pareto": {"accuracy_key": accuracy_key, "latency_key": latency_key, "names": front},
              "rows": table}  # fmt: skip
    paths = {
        "markdown": write_text_atomic(out / f"{REPORT_STEM}.md", markdown),
        "json": write_json_atomic(out / f"{REPORT_STEM}.json", report),
        "csv": write_text_atomic(out / f"{REPORT_STEM}.csv", csv_text(table)),
        "plot": plot_accuracy_vs_latency(
            table, out / f"{REPORT_STEM}.png", highlight=highlight, pareto=front, accuracy_key=accuracy_key,
            latency_key=latency_key, threshold=selection.threshold if selection is not None else None),
    }  # fmt: skip
    return paths


def _selection_text(selection: Selection | None, accuracy_key: str, latency_key: str) -> str:
    axes = f"{_AXIS_WORDS.get(accuracy_key, accuracy_key)} and {_AXIS_WORDS.get(latency_key, latency_key)}"
    front = f"{PARETO_MARK} Pareto front: no other variant is at least as good on both {axes} and better on one."
    if selection is None:
        return f"{front}\n\n"
    verdict = "" if selection.within_budget else " (NOTHING WITHIN BUDGET)"
    return (f"**Final artifact{verdict}: {selection.chosen}** — {selection.reason}.\n\n"
            "Val acc (validation split) chooses the final artifact; test acc (test split) is reported only. "
            f"{front}\n\n")  # fmt: skip


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


def _cell(value: Any, fmt: str | Callable[[Any], str]) -> str:
    if callable(fmt):
        return fmt(value)
    if value is None:
        return "–"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)
