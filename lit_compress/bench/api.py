"""The ``benchmark`` verb and the predictor-overhead check."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lit_compress.bench.measure import latency_stats, machine_block, machine_load
from lit_compress.bench.report import log_results, write_report
from lit_compress.bench.select import Selection, select_final
from lit_compress.bench.suite import BenchmarkSettings, Variant, benchmark_variants, settings_dict
from lit_compress.data.sources import DataSource, load_source
from lit_compress.export.manifest import library_versions


def run_benchmark(
    variants: Sequence[Variant],
    examples: Sequence[Any],
    labels: Sequence[int],
    out_dir: str,
    *,
    label_names: Sequence[str] | None = None,
    settings: BenchmarkSettings | None = None,
    baseline: str | None = None,
    highlight: str | None = None,
    logger: Any | None = None,
    selection_examples: Sequence[Any] | None = None,
    selection_labels: Sequence[int] | None = None,
    teacher: str | None = None,
    accuracy_budget: float = 1.0,
) -> dict[str, Path]:
    """Benchmark ``variants`` on ``examples``/``labels`` and write the report into ``out_dir``.

    Examples are texts for text classifiers and preprocessed ``(C, H, W)`` float images (a sequence, or a
    ``(N, C, H, W)`` tensor) for image classifiers; each variant's predictor encodes them, and that encoding is
    part of its latency and throughput. With ``selection_examples``/``selection_labels`` (the validation
    split) every variant is also scored on them and the final artifact is chosen from those scores by
    :func:`~lit_compress.bench.select.select_final`; the choice lands in ``benchmark.json`` under
    ``selection`` (read it back with :func:`read_selection`), in the Markdown and as the plot's highlight.
    ``examples``/``labels`` (the test split) are only reported.

    Args:
        variants: Models to compare (the teacher first, so ratios are against it by default).
        examples: Evaluation examples for the report (e.g. the test split).
        labels: Their class indices.
        out_dir: Where ``benchmark.{md,json,csv,png}`` are written.
        label_names: Dataset label names, to match predictions by name.
        settings: Threads, runs, batch sizes (defaults follow the book: 1 thread, 100 runs).
        baseline: Variant the ratios are taken against (default the first).
        highlight: Variant ringed by a dashed circle in the plot (default the chosen final artifact).
        logger: Optional Lightning logger to send the table and plot to.
        selection_examples: Examples the final artifact is chosen on (the validation split); ``None``: no choice.
        selection_labels: Their class indices.
        teacher: Reference variant of the accuracy budget, never chosen (default ``baseline``, else the first).
        accuracy_budget: Validation accuracy the final artifact may lose against the teacher, in points.

    Returns:
        Paths of the written report files, keyed ``markdown``, ``json``, ``csv``, ``plot``.
    """
    settings = settings or BenchmarkSettings()
    reference = teacher or baseline or (variants[0].name if variants else "")
    if selection_examples is not None:  # fail before the measurements, not after them
        select_final([{"name": v.name, "val_accuracy": 0.0, "latency_p50_ms": 0.0} for v in variants],
                     teacher=reference, budget_pts=accuracy_budget)  # fmt: skip
    rows = benchmark_variants(variants, examples, labels, settings, label_names=label_names,
                              selection_examples=selection_examples, selection_labels=selection_labels)  # fmt: skip
    selection = None
    if selection_examples is not None:
        selection = select_final(rows, teacher=reference, budget_pts=accuracy_budget)
    meta = {"settings": settings_dict(settings), "machine": machine_block(), "versions": library_versions()}
    paths = write_report(rows, out_dir, baseline=baseline, highlight=highlight, meta=meta, selection=selection)
    log_results(logger, rows, paths["plot"])
    return paths


def read_selection(report: str | os.PathLike[str]) -> Selection | None:
    """The final-artifact choice stored in a ``benchmark.json`` (``None`` if it was benchmarked without one)."""
    import json

    block = json.loads(Path(report).read_text()).get("selection")
    return Selection.from_dict(block) if block else None


def benchmark_cli(
    variants: list[Variant],
    out_dir: str = "benchmark",
    *,
    data: DataSource | None = None,
    split: str = "test",
    limit: int | None = None,
    settings: BenchmarkSettings | None = None,
    baseline: str | None = None,
    highlight: str | None = None,
    selection_split: str | None = None,
    accuracy_budget: float = 1.0,
) -> dict[str, str]:
    """The ``lit-compress benchmark`` verb: benchmark saved models and artifacts on a dataset split.

    Example::

        lit-compress benchmark --variants '[{"name": "teacher", "path": "runs/main/teacher"},
            {"name": "student int8", "path": "runs/main/export/ort-dynamic-int8"}]' --out_dir runs/bench

    Args:
        variants: Models to compare (``name`` and ``path``; the first is the ratio baseline by default).
        out_dir: Where the report is written.
        data: Dataset to evaluate on (default: the embedded BBC News corpus, same split as training).
        split: Split to evaluate on.
        limit: Evaluate on the first ``limit`` examples only (quick checks).
        settings: Threads, runs, batch sizes.
        baseline: Variant the ratios are taken against.
        highlight: Variant ringed by a dashed circle in the plot (default the chosen final artifact).
        selection_split: Also score every variant on this split (e.g. ``validation``) and choose the final
            artifact on it: the fastest (p50) within ``accuracy_budget`` points of the first variant (or
            ``baseline``). Must differ from ``split``.
        accuracy_budget: Accuracy points the final artifact may lose against the reference on ``selection_split``.

    Returns:
        Paths of the report files, by format.
    """
    splits, label_names = load_source(data or DataSource())
    if selection_split is not None and selection_split == split:
        raise ValueError(f"selection_split and split are both {split!r}; choose on one split, report on another.")
    report = _labelled(splits, split, limit)
    choose = _labelled(splits, selection_split, limit) if selection_split is not None else None
    extra = {} if choose is None else {"selection_examples": choose["text"], "selection_labels": choose["label"],
                                       "accuracy_budget": accuracy_budget}  # fmt: skip
    paths = run_benchmark(variants, report["text"], report["label"], out_dir, label_names=label_names,
                          settings=settings, baseline=baseline, highlight=highlight, **extra)  # fmt: skip
    return {k: str(v) for k, v in paths.items()}


def _labelled(splits: Any, split: str, limit: int | None) -> dict[str, list[Any]]:
    if split not in splits:
        raise ValueError(f"Split {split!r} not in the data; available: {sorted(splits)}.")
    rows = splits[split][:limit] if limit else splits[split][:]
    if "label" not in rows:
        raise ValueError(f"Split {split!r} has no labels; the benchmark needs a labelled split.")
    return rows


def predictor_overhead(
    path: str | os.PathLike[str], text: str, *, runs: int = 300, warmup: int = 30, threads: int = 1
) -> dict[str, float]:
    """Median latency of ``Predictor(text)`` against the bare work it wraps, on the same ONNX session.

    The bare path is what a hand-written deployment does: ``tokenizer(text, return_tensors="np")`` then
    ``InferenceSession.run``. Calls alternate between the two so drift in machine load hits both equally.

    Returns:
        ``{"predictor_ms", "bare_ms", "run_only_ms", "ratio"}`` with ``ratio = predictor / bare`` (medians).
    """
    from lit_compress.export.predictor import OnnxPredictor, Predictor

    predictor = Predictor.from_path(path, threads=threads)
    if not isinstance(predictor, OnnxPredictor):
        raise ValueError(f"{path} is not an ONNX artifact; the overhead check compares against InferenceSession.")
    if predictor.tokenizer is None:
        raise ValueError(f"{path} is an image artifact; the overhead check times a text query through its tokenizer.")
    session, tokenizer = predictor.session, predictor.tokenizer
    names = [i.name for i in session.get_inputs()]
    encoded = tokenizer(text, return_tensors="np")
    feed = {n: encoded[n] for n in names}

    def bare() -> Any:
        enc = tokenizer(text, return_tensors="np")
        return session.run(None, {n: enc[n] for n in names})

    calls = {"predictor": lambda: predictor(text), "bare": bare, "run_only": lambda: session.run(None, feed)}
    timings: dict[str, list[float]] = {k: [] for k in calls}
    for i in range(warmup + runs):
        for key, fn in calls.items():
            start = time.perf_counter()
            fn()
            if i >= warmup:
                timings[key].append(time.perf_counter() - start)
    medians = {k: latency_stats(v)["p50_ms"] for k, v in timings.items()}
    return {**{f"{k}_ms": v for k, v in medians.items()}, "ratio": float(np.divide(medians["predictor"],
                                                                                   medians["bare"]))}
