"""The ``benchmark`` verb and the predictor-overhead check."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lit_compress.bench.measure import latency_stats, machine_load
from lit_compress.bench.report import log_results, write_report
from lit_compress.bench.suite import BenchmarkSettings, Variant, benchmark_variants, settings_dict
from lit_compress.data.sources import DataSource, load_source
from lit_compress.export.manifest import library_versions


def run_benchmark(
    variants: Sequence[Variant],
    texts: Sequence[str],
    labels: Sequence[int],
    out_dir: str,
    *,
    label_names: Sequence[str] | None = None,
    settings: BenchmarkSettings | None = None,
    baseline: str | None = None,
    highlight: str | None = None,
    logger: Any | None = None,
) -> dict[str, Path]:
    """Benchmark ``variants`` on ``texts``/``labels`` and write the report into ``out_dir``.

    Args:
        variants: Models to compare (the teacher first, so ratios are against it by default).
        texts: Evaluation texts (e.g. the test split).
        labels: Their class indices.
        out_dir: Where ``benchmark.{md,json,csv,png}`` are written.
        label_names: Dataset label names, to match predictions by name.
        settings: Threads, runs, batch sizes (defaults follow the book: 1 thread, 100 runs).
        baseline: Variant the ratios are taken against (default the first).
        highlight: Variant drawn as a dashed circle in the plot.
        logger: Optional Lightning logger to send the table and plot to.

    Returns:
        Paths of the written report files, keyed ``markdown``, ``json``, ``csv``, ``plot``.
    """
    settings = settings or BenchmarkSettings()
    rows = benchmark_variants(variants, texts, labels, settings, label_names=label_names)
    meta = {"settings": settings_dict(settings), "machine": machine_load(), "versions": library_versions()}
    paths = write_report(rows, out_dir, baseline=baseline, highlight=highlight, meta=meta)
    log_results(logger, rows, paths["plot"])
    return paths


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
        highlight: Variant drawn as a dashed circle in the plot.

    Returns:
        Paths of the report files, by format.
    """
    splits, label_names = load_source(data or DataSource())
    if split not in splits:
        raise ValueError(f"Split {split!r} not in the data; available: {sorted(splits)}.")
    rows = splits[split][:limit] if limit else splits[split][:]
    if "label" not in rows:
        raise ValueError(f"Split {split!r} has no labels; the benchmark needs a labelled split.")
    paths = run_benchmark(variants, rows["text"], rows["label"], out_dir, label_names=label_names,
                          settings=settings, baseline=baseline, highlight=highlight)  # fmt: skip
    return {k: str(v) for k, v in paths.items()}


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
