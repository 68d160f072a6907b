"""Pure measurements: latency statistics, timing loops, throughput, accuracy and macro-F1, machine load.

Nothing here knows about models or Lightning: timing takes any callable (and an injectable clock), metrics
take label arrays, so each piece is tested against hand computation.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

Clock = Callable[[], float]


def median_query(examples: Sequence[Any]) -> Any:
    """The single query that latency is timed on: the text of median length, or the middle example of non-text
    examples (images). One choice for the benchmark, the search's trials, ``qat.schemes: auto`` and the tuner."""
    if len(examples) == 0:
        raise ValueError("No examples to time the latency on.")
    if not all(isinstance(x, str) for x in examples):
        return examples[len(examples) // 2]
    return sorted(examples, key=len)[len(examples) // 2]


def latency_stats(seconds: Sequence[float]) -> dict[str, float]:
    """Summarise per-call latencies (in seconds) in milliseconds, as the book's ``time_pipeline``.

    ``mean`` and ``std`` (population, ``ddof=0``, as ``np.std``) plus the 50th, 90th, 95th and 99th percentiles
    (linear interpolation between order statistics), ``min``, ``max`` and the number of runs.

    Raises:
        ValueError: No timings were given.
    """
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    if ms.size == 0:
        raise ValueError("latency_stats needs at least one timing.")
    p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
    return {
        "mean_ms": float(ms.mean()),
        "std_ms": float(ms.std()),
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "runs": int(ms.size),
    }


def time_calls(
    fn: Callable[[], Any],
    *,
    runs: int = 100,
    warmup: int = 10,
    clock: Clock = time.perf_counter,
    progress: str | None = None,
) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then ``runs`` times, returning each call's duration in seconds.

    Args:
        fn: The work to time (e.g. ``lambda: predictor(query)``).
        runs: Timed calls (the book uses 100).
        warmup: Untimed calls first (caches, lazy initialisation, allocator warm-up).
        clock: Monotonic clock in seconds (injectable for tests).
        progress: Description for a tqdm bar; ``None`` hides it. The bar is updated outside the timed span.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}.")
    for _ in range(warmup):
        fn()
    timings = []
    with _bar(progress, runs) as bar:
        for _ in range(runs):
            start = clock()
            fn()
            timings.append(clock() - start)
            bar.update(1)
    return timings


def interleaved_timings(
    fns: Sequence[Callable[[], Any]],
    *,
    runs: int = 100,
    warmup: int = 10,
    rounds: int = 10,
    block_warmup: int = 2,
    clock: Clock = time.perf_counter,
    progress: str | None = None,
) -> list[list[float]]:
    """Time several callables in alternating rounds, so drifting machine load hits each of them alike.

    Each callable is warmed up ``warmup`` times, then ``runs`` timed calls per callable are split into
    ``rounds`` blocks taken in turn (``f1 f1 .. f2 f2 .. f1 f1 ..``), each block after ``block_warmup`` untimed
    calls: the previous block ran another model, whose weights evicted this one's from the caches, and the steady
    state a served model runs in (the book's loop of consecutive calls) is what is measured. Found by trial: in
    blocks of 30 calls after the 86 MB teacher, the main job's 2 MB final artifact took 1.04 ms on its first call,
    0.74 ms on its second and 0.60-0.65 ms from the third on. Returns one list of durations (seconds) per
    callable, ``runs`` long.
    """
    if runs < 1 or warmup < 0 or rounds < 1 or block_warmup < 0:
        raise ValueError(f"runs and rounds must be >= 1 and warmup, block_warmup >= 0; got {runs}, {rounds}, "
                         f"{warmup}, {block_warmup}.")  # fmt: skip
    for fn in fns:
        for _ in range(warmup):
            fn()
    sizes = [runs // rounds + (1 if r < runs % rounds else 0) for r in range(rounds)]
    timings: list[list[float]] = [[] for _ in fns]
    with _bar(progress, runs * len(fns)) as bar:
        for size in filter(None, sizes):
            for fn, out in zip(fns, timings):
                out += time_calls(fn, runs=size, warmup=block_warmup, clock=clock)
                bar.update(size)
    return timings


def throughput(
    fn: Callable[[list[Any]], Any],
    examples: Sequence[Any],
    *,
    batch_sizes: Sequence[int] = (1, 8, 32),
    runs: int = 10,
    warmup: int = 2,
    clock: Clock = time.perf_counter,
) -> dict[int, float]:
    """Samples per second of ``fn(batch)`` for each batch size: ``bs * runs / total time of the runs``.

    Batches are the first ``bs`` examples (texts or images, cycled if there are fewer), so every variant sees
    the same inputs.
    """
    if len(examples) == 0:
        raise ValueError("throughput needs at least one example.")
    out = {}
    for size in batch_sizes:
        batch = [examples[i % len(examples)] for i in range(size)]
        total = sum(time_calls(lambda b=batch: fn(b), runs=runs, warmup=warmup, clock=clock))
        out[int(size)] = size * runs / total if total > 0 else float("inf")
    return out


def classification_metrics(predictions: Sequence[int], labels: Sequence[int]) -> dict[str, float]:
    """Accuracy and macro-F1.

    ``F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c)``, macro-F1 is their unweighted mean over the classes that
    occur in ``labels`` or ``predictions`` (as scikit-learn's default).
    """
    pred, true = np.asarray(predictions), np.asarray(labels)
    if pred.shape != true.shape or pred.size == 0:
        raise ValueError(f"predictions {pred.shape} and labels {true.shape} must be non-empty and the same shape.")
    scores = []
    for cls in np.union1d(pred, true):
        tp = np.sum((pred == cls) & (true == cls))
        fp = np.sum((pred == cls) & (true != cls))
        fn = np.sum((pred != cls) & (true == cls))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return {"accuracy": float(np.mean(pred == true)), "macro_f1": float(np.mean(scores))}


def machine_load() -> dict[str, float | int | None]:
    """1/5/15-minute load averages (``os.getloadavg``) and the CPU count, recorded next to timings."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:  # not available on this platform
        one = five = fifteen = None
    return {"load_1m": one, "load_5m": five, "load_15m": fifteen, "cpus": os.cpu_count()}


def machine_block() -> dict[str, Any]:
    """What a benchmark figure depends on: load, CPU count, platform and the CPU's int8 features and preset
    (:func:`~lit_compress.quant.targets.int8_environment`): int8 speed and numerics differ between ISAs."""
    import platform

    from lit_compress.quant.targets import int8_environment

    env = int8_environment()
    return {**machine_load(), "platform": platform.platform(), "cpu_model": env["cpu"]["model"],
            "int8_flags": env["cpu"]["int8_flags"], "int8_target": env["host_target"]}  # fmt: skip


@contextlib.contextmanager
def fixed_threads(threads: int) -> Iterator[None]:
    """Run PyTorch with ``threads`` intra-op threads inside the block, then restore the previous setting."""
    import torch

    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}.")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _bar(description: str | None, total: int) -> Iterator[Any]:
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=description, disable=description is None, leave=False) as bar:
        yield bar
