"""Benchmark: pure measurements, side-by-side variant runs, final-artifact selection, reports, the callback."""

from lit_compress.bench.api import benchmark_cli, predictor_overhead, read_selection, run_benchmark
from lit_compress.bench.callback import Benchmark
from lit_compress.bench.measure import (
    classification_metrics,
    fixed_threads,
    interleaved_timings,
    latency_stats,
    machine_load,
    throughput,
    time_calls,
)
from lit_compress.bench.report import (
    add_ratios,
    log_results,
    mark_pareto,
    markdown_table,
    plot_accuracy_vs_latency,
    write_report,
)
from lit_compress.bench.select import Selection, pareto_front, select_final
from lit_compress.bench.suite import BenchmarkSettings, Variant, benchmark_variant, benchmark_variants

__all__ = [
    "Benchmark",
    "BenchmarkSettings",
    "Selection",
    "Variant",
    "add_ratios",
    "benchmark_cli",
    "benchmark_variant",
    "benchmark_variants",
    "classification_metrics",
    "fixed_threads",
    "interleaved_timings",
    "latency_stats",
    "log_results",
    "machine_load",
    "mark_pareto",
    "markdown_table",
    "pareto_front",
    "plot_accuracy_vs_latency",
    "predictor_overhead",
    "read_selection",
    "run_benchmark",
    "select_final",
    "throughput",
    "time_calls",
    "write_report",
]
