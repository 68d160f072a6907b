"""``Benchmark``: at the end of fit (or test), export the trained model and benchmark every variant."""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
from torch import nn

from lit_compress.bench.report import log_results, write_report
from lit_compress.bench.suite import BenchmarkSettings, Variant, benchmark_variants, settings_dict
from lit_compress.bench.measure import machine_block
from lit_compress.utils.target import compression_target

VARIANT_NAMES = {
    "onnx-fp32": "student ORT fp32",
    "ort-dynamic-int8": "student ORT dynamic int8",
    "ort-static-int8": "student ORT static int8",
    "ort-int4": "student ORT int4",
    "torch-dynamic-int8": "student torch dynamic int8",
}
TEACHER = "teacher fp32 (torch)"
STUDENT = "student fp32 (torch)"


class Benchmark(L.Callback):
    """Export the compression target when training (or testing) ends and benchmark it side by side.

    The model returned by ``compression_target(pl_module)`` is saved with ``save_model_dir``, exported to
    the requested artifact kinds (``export_model``: parity-gated ONNX, int8 with kernel checks), then every
    variant, plus the teacher of a distillation module, is measured with ``benchmark_variants``. The report
    (``benchmark.{md,json,csv,png}``) goes to ``out_dir`` and to the trainer's logger. Runs on rank zero only.

    Evaluation examples and labels come from ``examples``/``labels`` or from the datamodule's
    ``examples(split)`` (an image datamodule's preprocessed ``(C, H, W)`` images) or ``texts(split)``, its
    ``labels(split)`` and ``label_names``; calibration examples for static int8 from the same source's
    ``"train"`` split. An image model needs no tokenizer.

    Args:
        out_dir: Report directory.
        on: ``"fit"`` (``on_fit_end``) or ``"test"`` (``on_test_end``).
        formats: Artifact kinds to export and benchmark next to the student's PyTorch fp32 model.
        split: Datamodule split to evaluate on.
        examples: Evaluation examples, texts or images (instead of the datamodule's).
        labels: Their class indices.
        label_names: Dataset label names, to match predictions by name.
        tokenizer: Tokenizer saved with a text model; default the datamodule's ``tokenizer``.
        include_teacher: Also benchmark ``pl_module.teacher`` when there is one (the ratio baseline).
        extra_variants: More variants for the same table (e.g. artifacts of earlier runs).
        settings: Measurement settings (threads, runs, batch sizes).
        calibration_examples: Examples to calibrate static int8 with (default the datamodule's training split).
        calibration_size: At most this many calibration examples are used.
        export_options: Extra keyword arguments of ``export_model`` (``per_channel``, ``quantize_embeddings``,
            ``exporter``, ``opset``, ...).
        keep_artifacts: Keep the exported artifacts under ``out_dir/artifacts`` instead of a temporary dir.
    """

    def __init__(
        self,
        out_dir: str = "benchmark",
        *,
        on: Literal["fit", "test"] = "fit",
        formats: Sequence[str] = ("onnx-fp32", "ort-dynamic-int8", "ort-static-int8", "torch-dynamic-int8"),
        split: str = "test",
        examples: Sequence[Any] | None = None,
        labels: Sequence[int] | None = None,
        label_names: Sequence[str] | None = None,
        tokenizer: Any | None = None,
        include_teacher: bool = True,
        extra_variants: Sequence[Variant] = (),
        settings: BenchmarkSettings | None = None,
        calibration_examples: Sequence[Any] | None = None,
        calibration_size: int = 128,
        export_options: Mapping[str, Any] | None = None,
        keep_artifacts: bool = False,
    ) -> None:
        unknown = [f for f in formats if f not in VARIANT_NAMES]
        if unknown:
            raise ValueError(f"Benchmark formats {unknown} are not exportable; choose from {list(VARIANT_NAMES)}.")
        if on not in ("fit", "test"):
            raise ValueError(f"on={on!r}; use 'fit' or 'test'.")
        if (examples is None) != (labels is None):
            raise ValueError("Pass both examples and labels, or neither (then the datamodule provides them).")
        self.out_dir, self.on, self.formats, self.split = Path(out_dir), on, list(formats), split
        self.examples, self.labels, self.label_names = examples, labels, label_names
        self.tokenizer, self.include_teacher, self.extra_variants = tokenizer, include_teacher, list(extra_variants)
        self.settings = settings or BenchmarkSettings()
        self.calibration_examples, self.calibration_size = calibration_examples, calibration_size
        self.export_options, self.keep_artifacts = dict(export_options or {}), keep_artifacts
        self.rows: list[dict[str, Any]] = []
        self.report: dict[str, Path] = {}

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.on == "fit":
            self.run(trainer, pl_module)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.on == "test":
            self.run(trainer, pl_module)

    def run(self, trainer: L.Trainer, pl_module: L.LightningModule) -> list[dict[str, Any]]:
        """Export, benchmark and report now (rank zero only); returns the rows."""
        if not trainer.is_global_zero:
            return []
        examples, labels, names = self.benchmark_data(trainer)
        if self.keep_artifacts:
            self.rows = self._run_in(self.out_dir / "artifacts", trainer, pl_module, examples, labels, names)
        else:
            with tempfile.TemporaryDirectory(prefix="lc-benchmark-") as work:
                self.rows = self._run_in(Path(work), trainer, pl_module, examples, labels, names)
        return self.rows

    def benchmark_data(self, trainer: L.Trainer) -> tuple[list[Any], list[int], list[str] | None]:
        """Evaluation examples, labels and label names (override to draw them from elsewhere)."""
        if self.examples is not None and self.labels is not None:
            return list(self.examples), list(self.labels), list(self.label_names) if self.label_names else None
        dm = getattr(trainer, "datamodule", None)
        if _split_examples(dm) is None or not hasattr(dm, "labels"):
            raise RuntimeError(
                "Benchmark needs evaluation data: pass examples= and labels=, or train with a datamodule that has "
                "examples(split) or texts(split), and labels(split) (e.g. TextClassificationDataModule, "
                "ImageClassificationDataModule)."
            )
        labels = dm.labels(self.split)
        if labels is None:
            raise RuntimeError(f"The datamodule's {self.split!r} split has no labels; choose a labelled split.")
        names = self.label_names or getattr(dm, "label_names", None)
        return list(_split_examples(dm)(self.split)), list(labels), list(names) if names else None

    def _run_in(self, work: Path, trainer: L.Trainer, pl_module: L.LightningModule, examples: list[Any],
                labels: list[int], names: list[str] | None) -> list[dict[str, Any]]:  # fmt: skip
        from lit_compress.models.io import save_model_dir

        tokenizer = self._tokenizer(trainer, compression_target(pl_module))
        variants = []
        teacher = getattr(pl_module, "teacher", None)
        if self.include_teacher and isinstance(teacher, nn.Module):
            variants.append(Variant(TEACHER, str(save_model_dir(teacher, work / "teacher", tokenizer))))
        from lit_compress.quant.export import strip_fake_quant

        # a QAT-prepared student is saved as the plain fp32 model it deploys as (weights on the int8 grid)
        student = save_model_dir(strip_fake_quant(compression_target(pl_module)), work / "student", tokenizer)
        variants.append(Variant(STUDENT, str(student), kind="torch-fp32"))
        variants += self._export(trainer, student, work / "export", examples)
        variants += self.extra_variants
        rows = benchmark_variants(variants, examples, labels, self.settings, label_names=names)
        meta = {"settings": settings_dict(self.settings), "machine": machine_block(), "split": self.split,
                "epoch": trainer.current_epoch, "global_step": trainer.global_step}  # fmt: skip
        baseline = TEACHER if variants[0].name == TEACHER else None
        self.report = write_report(rows, self.out_dir, baseline=baseline, highlight=VARIANT_NAMES["ort-dynamic-int8"],
                                   meta=meta)  # fmt: skip
        log_results(trainer.logger, rows, self.report["plot"])
        return rows

    def _export(self, trainer: L.Trainer, student: Path, out: Path, examples: list[Any]) -> list[Variant]:
        """Export the saved student to ``self.formats``; one variant per artifact produced."""
        from lit_compress.export.api import export_model

        calibration = self._calibration(trainer) if "ort-static-int8" in self.formats else []
        formats = [f for f in self.formats if f != "ort-static-int8" or calibration]
        if len(formats) < len(self.formats):
            warnings.warn("Benchmark skips ort-static-int8: no calibration examples (pass calibration_examples= or "
                          "use a datamodule with a 'train' split).", stacklevel=2)  # fmt: skip
        if not formats:
            return []
        export_model(str(student), str(out), formats=formats, parity_examples=examples[:13],
                     calibration_examples=calibration or None, **self.export_options)  # fmt: skip
        from lit_compress.loggers import log_export_artifacts

        log_export_artifacts(trainer, out, name="student")  # a no-op without a W&B run
        return [Variant(VARIANT_NAMES[f], str(out / f), kind=f) for f in formats
                if (out / f / "manifest.json").is_file()]  # fmt: skip

    def _tokenizer(self, trainer: L.Trainer, model: nn.Module) -> Any:
        from lit_compress.export.inputs import is_image_config

        if is_image_config(getattr(model, "config", {})):
            return None  # an image model's config carries its input geometry
        tokenizer = self.tokenizer if self.tokenizer is not None else getattr(trainer.datamodule, "tokenizer", None)
        if tokenizer is None:
            raise RuntimeError("Benchmark needs a tokenizer: pass tokenizer= or use a datamodule with .tokenizer.")
        if isinstance(tokenizer, (str, Path)):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        return tokenizer

    def _calibration(self, trainer: L.Trainer) -> list[Any]:
        if self.calibration_examples is not None:
            return list(self.calibration_examples)[: self.calibration_size]
        split = _split_examples(getattr(trainer, "datamodule", None))
        return [] if split is None else list(split("train"))[: self.calibration_size]


def _split_examples(dm: Any) -> Any:
    """The datamodule's ``examples(split)`` (images) or ``texts(split)``; ``None`` when it has neither."""
    return getattr(dm, "examples", None) or getattr(dm, "texts", None)
