"""Benchmark deployable variants side by side through the same ``Predictor`` used in deployment.

Examples are texts or preprocessed images (``(C, H, W)`` float tensors), whatever the variants' predictors
encode (:class:`~lit_compress.export.inputs.ModelInputs`); latency and throughput include that encoding, as
they include tokenization for texts. For each variant: accuracy and macro-F1 on the given split (and,
optionally, on a second split used to choose the final artifact: ``val_accuracy``, ``val_macro_f1``), latency
of one query after warm-up (the book's ``PerformanceBenchmark.time_pipeline``), throughput at several batch
sizes, size on disk and gzip size of every weight file, parameter and nonzero counts, and the machine load
around the measurement.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lit_compress.bench.measure import (
    classification_metrics,
    fixed_threads,
    interleaved_timings,
    median_query,
    latency_stats,
    machine_load,
    throughput,
)
from lit_compress.export.files import (
    artifact_files,
    gzip_size,
    onnx_parameter_counts,
    size_bytes,
    torch_parameter_counts,
)
from lit_compress.export.kernels import OptimizationLevel
from lit_compress.export.predictor import ONNX_FILE, Predictor, TorchPredictor

MB = 1024 * 1024


@dataclass
class Variant:
    """One deployable model to benchmark.

    Attributes:
        name: Row label, e.g. ``"student ORT int8"``.
        path: Anything ``Predictor.from_path`` loads: model directory, artifact directory or ``.onnx`` file.
        kind: Artifact kind for the table; read from the artifact's manifest when left empty.
        notes: Free text shown in the report.
    """

    name: str
    path: str
    kind: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("Variant.name must be a non-empty label.")
        self.path = str(self.path)


@dataclass
class BenchmarkSettings:
    """How variants are measured.

    Attributes:
        threads: Intra-op threads for both PyTorch and ORT (the book fixes 1).
        runs: Timed single-query calls (at least 100 in the book).
        warmup: Untimed calls before timing.
        batch_sizes: Batch sizes of the throughput measurement.
        throughput_runs: Timed calls per batch size.
        eval_batch_size: Batch size of the accuracy pass.
        query: The single text query timed; default the test text of median length (for images: the middle
            example of the split).
        graph_optimization: ORT graph optimization level.
        progress: Show tqdm progress bars.
    """

    threads: int = 1
    runs: int = 100
    warmup: int = 10
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    throughput_runs: int = 10
    eval_batch_size: int = 32
    query: str | None = None
    graph_optimization: OptimizationLevel = "all"
    progress: bool = True

    def __post_init__(self) -> None:
        self.batch_sizes = tuple(int(b) for b in self.batch_sizes)
        if self.threads < 1 or self.runs < 1 or self.warmup < 0 or self.throughput_runs < 1:
            raise ValueError(
                f"threads, runs and throughput_runs must be >= 1 and warmup >= 0; got threads={self.threads}, "
                f"runs={self.runs}, throughput_runs={self.throughput_runs}, warmup={self.warmup}."
            )
        if not self.batch_sizes or min(self.batch_sizes) < 1 or self.eval_batch_size < 1:
            raise ValueError(f"batch sizes must be >= 1; got {self.batch_sizes}, eval {self.eval_batch_size}.")


def benchmark_variants(
    variants: Sequence[Variant],
    examples: Sequence[Any],
    labels: Sequence[int] | Sequence[str],
    settings: BenchmarkSettings | None = None,
    *,
    label_names: Sequence[str] | None = None,
    selection_examples: Sequence[Any] | None = None,
    selection_labels: Sequence[int] | Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Benchmark variants side by side; one flat row per variant.

    All predictors are loaded first. Accuracy, throughput and size are measured variant by variant; the
    single-query latencies are timed in alternating rounds across variants (``interleaved_timings``) so a
    change in machine load during the run does not favour one variant. Labels are class indices, or label
    names (matched to each model's ``id2label``); with ``label_names`` (the dataset's ordered names)
    predictions are mapped by name, so a model whose label order differs from the dataset's is scored right.

    ``examples``/``labels`` give the reported ``accuracy``/``macro_f1`` (the test split). With
    ``selection_examples``/``selection_labels`` (the validation split) each row also gets ``val_accuracy``,
    ``val_macro_f1`` and ``n_val``, the figures :func:`~lit_compress.bench.select.select_final` chooses by.
    Each split is predicted once per variant; latency, throughput and size are measured once per variant.
    """
    settings = settings or BenchmarkSettings()
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"Variant names must be unique; got {names}.")
    if len(examples) != len(labels) or len(examples) == 0:
        raise ValueError(f"examples ({len(examples)}) and labels ({len(labels)}) must be non-empty and aligned.")
    if (selection_examples is None) != (selection_labels is None):
        raise ValueError("Pass both selection_examples and selection_labels, or neither.")
    selection = None
    if selection_examples is not None and selection_labels is not None:
        selection = (selection_examples, selection_labels)
    if selection is not None and (len(selection[0]) != len(selection[1]) or len(selection[0]) == 0):
        raise ValueError(f"selection_examples ({len(selection[0])}) and selection_labels ({len(selection[1])}) must "
                         "be non-empty and aligned.")  # fmt: skip
    with fixed_threads(settings.threads):
        options = {"threads": settings.threads, "graph_optimization": settings.graph_optimization}
        predictors = [Predictor.from_path(v.path, **options) for v in variants]
        rows = [_measure(v, p, examples, labels, label_names, settings, selection)
                for v, p in zip(variants, predictors)]  # fmt: skip
        query = settings.query or median_query(examples)
        load = machine_load()["load_1m"]
        calls = [lambda p=p: p(query) for p in predictors]
        bar = "latency" if settings.progress else None
        timings = interleaved_timings(calls, runs=settings.runs, warmup=settings.warmup, progress=bar)
    for row, seconds in zip(rows, timings):
        row.update({f"latency_{k}": v for k, v in latency_stats(seconds).items()})
        row.update(latency_load_1m_before=load, latency_load_1m_after=machine_load()["load_1m"])
    return rows


def benchmark_variant(
    variant: Variant,
    examples: Sequence[Any],
    labels: Sequence[int] | Sequence[str],
    settings: BenchmarkSettings | None = None,
    *,
    label_names: Sequence[str] | None = None,
    selection_examples: Sequence[Any] | None = None,
    selection_labels: Sequence[int] | Sequence[str] | None = None,
) -> dict[str, Any]:
    """Benchmark a single variant (see :func:`benchmark_variants` for the row's fields)."""
    return benchmark_variants([variant], examples, labels, settings, label_names=label_names,
                              selection_examples=selection_examples, selection_labels=selection_labels)[0]  # fmt: skip


def _measure(variant: Variant, predictor: Predictor, examples: Sequence[Any], labels: Sequence[Any],
             label_names: Sequence[str] | None, settings: BenchmarkSettings,
             selection: tuple[Sequence[Any], Sequence[Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    """Accuracy, throughput, size and counts of one variant, with the machine load around them."""
    load_before = machine_load()
    quality = _quality(predictor, examples, labels, label_names, settings, variant.name)
    if selection is not None:
        val = _quality(predictor, *selection, label_names, settings, f"{variant.name} (validation)")
        quality.update(val_accuracy=val["accuracy"], val_macro_f1=val["macro_f1"], n_val=val["n_eval"])
    speed = throughput(predictor, examples, batch_sizes=settings.batch_sizes, runs=settings.throughput_runs)
    files = artifact_files(variant.path)
    size = size_bytes(files)
    return {
        "name": variant.name,
        "kind": variant.kind or _kind(variant.path, predictor),
        "path": variant.path,
        **quality,
        **{f"throughput_bs{bs}": v for bs, v in speed.items()},
        "size_mb": size / MB,
        "gzip_mb": gzip_size(files) / MB,
        "size_bytes": size,
        **_counts(variant.path, predictor),
        "threads": settings.threads,
        "load_1m_before": load_before["load_1m"],
        "load_1m_after": machine_load()["load_1m"],
        "cpus": load_before["cpus"],
        "notes": variant.notes,
    }


def predict_indices(predictor: Predictor, examples: Sequence[Any], batch_size: int = 32,
                    progress: str | None = None) -> np.ndarray:  # fmt: skip
    """Argmax class index of every example (text or image), in batches."""
    out = []
    for start in tqdm(range(0, len(examples), batch_size), desc=progress, disable=progress is None, leave=False):
        out.append(predictor.logits(list(examples[start : start + batch_size])).argmax(-1))
    return np.concatenate(out)


def _quality(predictor: Predictor, examples: Sequence[Any], labels: Sequence[Any],
             label_names: Sequence[str] | None, settings: BenchmarkSettings, name: str) -> dict[str, Any]:  # fmt: skip
    bar = f"{name}: accuracy" if settings.progress else None
    predicted = predict_indices(predictor, examples, settings.eval_batch_size, bar)
    model_names = set(predictor.id2label.values())
    if isinstance(labels[0], str) or (label_names is not None and model_names <= set(label_names)):
        true = [str(y) if isinstance(y, str) else label_names[int(y)] for y in labels]  # type: ignore[index]
        pred = [predictor.id2label.get(int(i), f"LABEL_{i}") for i in predicted]
        codes = {n: i for i, n in enumerate(sorted(set(true) | set(pred)))}
        metrics = classification_metrics([codes[n] for n in pred], [codes[n] for n in true])
    else:
        metrics = classification_metrics(predicted, [int(y) for y in labels])
    return {**metrics, "n_eval": len(examples)}


def _counts(path: str, predictor: Predictor) -> dict[str, int]:
    if isinstance(predictor, TorchPredictor):
        return torch_parameter_counts(predictor.model)
    src = Path(path)
    return onnx_parameter_counts(src if src.suffix == ".onnx" else src / ONNX_FILE)


def _kind(path: str, predictor: Predictor) -> str:
    src = Path(path)
    manifest = (src if src.is_dir() else src.parent) / "manifest.json"
    if manifest.is_file():
        kind = json.loads(manifest.read_text()).get("kind")
        if kind:
            return str(kind)
    return "onnx" if predictor.kind == "onnx" else "torch"


def settings_dict(settings: BenchmarkSettings) -> dict[str, Any]:
    """Plain-JSON form of the settings, for reports."""
    return asdict(settings)
