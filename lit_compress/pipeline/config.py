"""Typed, validated configuration of the main job (``lit-compress pipeline``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lit_compress.data.embedded import EMBEDDED_DATA, TextMode
from lit_compress.export.parity import Int8Gate
from lit_compress.models.hub import EMBEDDED_MODEL


@dataclass
class DataConfig:
    """Data of the run (see ``TextClassificationDataModule`` for each field)."""

    dataset: str = EMBEDDED_DATA
    dataset_config: str | None = None
    data_files: dict[str, str] | None = None
    text_column: str = "text"
    label_column: str | None = "label"
    text_mode: TextMode = "title_lead"
    max_length: int = 128
    batch_size: int = 32
    num_workers: int = 0
    seed: int = 42


@dataclass
class TrainConfig:
    """Shared training knobs of a stage.

    Attributes:
        epochs: Passes over the training split.
        lr: Peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_ratio: Linear warm-up fraction.
        max_steps: Stop after this many optimizer steps (``-1``: no limit; for quick runs and tests).
    """

    epochs: int = 3
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_steps: int = -1

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}.")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}.")


@dataclass
class TeacherConfig:
    """Teacher stage: fine-tune ``model`` (``train.epochs = 0`` is not allowed; set ``finetune: false``)."""

    model: str = EMBEDDED_MODEL
    finetune: bool = True
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3, lr=1e-4))


@dataclass
class DistillConfig:
    """Distillation stage: the student keeps ``layers`` of the teacher, or is loaded from ``student``."""

    layers: list[int] | None = field(default_factory=lambda: [0, 2, 4])
    student: str | None = None
    alpha: float = 0.5
    temperature: float = 2.0
    hidden_weight: float = 0.0
    cosine_weight: float = 0.0
    cache_teacher_logits: bool = True
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=4, lr=1e-4))

    def __post_init__(self) -> None:
        if self.layers is None and self.student is None:
            raise ValueError("Distillation needs `layers` (teacher layers to keep) or a `student` model.")


@dataclass
class PruneConfig:
    """Compression stage: vocabulary trimming, then distillation with gradual structured pruning.

    Attributes:
        enabled: Run the stage.
        head_ratio: Final fraction of attention heads removed (per layer, or globally with ``scope: global``).
        ffn_ratio: Final fraction of FFN intermediate channels removed.
        importance: ``"taylor"`` (accumulated gate gradients) or ``"magnitude"``.
        scope: ``"layer"`` or ``"global"`` ranking of heads/channels.
        schedule_end: Fraction of the stage's steps at which the cubic schedule reaches the final ratios
            (Zhu & Gupta 2017); the rest of the stage recovers accuracy.
        vocab_min_frequency: Keep tokens the training split uses at least this often (0 disables trimming).
        alpha: Weight of the hard-label CE in this stage's distillation loss.
        temperature: KD temperature.
        train: Training knobs of the stage.
    """

    enabled: bool = True
    head_ratio: float = 0.5
    ffn_ratio: float = 0.75
    importance: str = "taylor"
    scope: str = "layer"
    schedule_end: float = 0.6
    vocab_min_frequency: int = 2
    alpha: float = 0.5
    temperature: float = 2.0
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=5, lr=1e-4))

    def __post_init__(self) -> None:
        for name in ("head_ratio", "ffn_ratio"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"prune.{name} must be in [0, 1), got {getattr(self, name)}.")
        if not 0.0 < self.schedule_end <= 1.0:
            raise ValueError(f"prune.schedule_end must be in (0, 1], got {self.schedule_end}.")
        if self.vocab_min_frequency < 0:
            raise ValueError(f"prune.vocab_min_frequency must be >= 0, got {self.vocab_min_frequency}.")


@dataclass
class QATConfig:
    """Quantization-aware distillation of the pruned student (dynamic and/or static activation schemes).

    Attributes:
        schemes: ``"dynamic"`` (mimics ORT dynamic quantization; the deploy artifact) and/or ``"static"``
            (learned activation scales, exported as Q/DQ ONNX). Empty disables the stage.
        start_fraction: Fraction of the steps trained in fp32 before fake quantization starts.
        freeze_fraction: Fraction of the steps after which static observers freeze.
        alpha: Weight of the hard-label CE.
        temperature: KD temperature.
        train: Training knobs of the stage.
    """

    schemes: list[str] = field(default_factory=lambda: ["dynamic", "static"])
    start_fraction: float = 0.0
    freeze_fraction: float = 0.7
    alpha: float = 0.5
    temperature: float = 2.0
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=2, lr=3e-5))

    def __post_init__(self) -> None:
        unknown = set(self.schemes) - {"dynamic", "static"}
        if unknown:
            raise ValueError(f"qat.schemes has unknown entries {sorted(unknown)}; use 'dynamic' and/or 'static'.")


@dataclass
class ExportConfig:
    """ONNX / int8 export of the students.

    Attributes:
        formats: Artifact kinds for the distilled student (the compressed students get ORT fp32/int8).
        per_channel: Per-output-channel int8 weight scales.
        quantize_embeddings: Quantize the embedding tables too (the biggest size cut after trimming).
        embedding_bits: Bits of the quantized embedding tables in the ORT artifacts (4: blockwise, 8: int8).
        calibration_size: Training texts used to calibrate static quantization.
        target: int8 deployment CPU: ``auto`` (the machine the job runs on) or a preset of
            ``lit_compress.quant.targets.TARGETS`` (``avx2``, ``avx512``, ``avx512_vnni``, ``avx_vnni``, ``amx``,
            ``arm64``, ``portable``). QAT trains on this target's weight grid and ORT quantizes to it.
        int8_gate: Acceptance of int8 artifacts against the fake-quantized model that simulates them (argmax
            agreement over the validation texts, at least ``min_texts``, and the logit error in steps).
    """

    formats: list[str] = field(
        default_factory=lambda: ["onnx-fp32", "ort-dynamic-int8", "ort-static-int8", "torch-dynamic-int8"]
    )
    per_channel: bool = True
    quantize_embeddings: bool = True
    embedding_bits: int = 4
    calibration_size: int = 256
    target: str = "auto"
    int8_gate: Int8Gate = field(default_factory=Int8Gate)

    def __post_init__(self) -> None:
        from lit_compress.quant.targets import AUTO, TARGETS

        if self.target != AUTO and self.target not in TARGETS:
            raise ValueError(f"export.target={self.target!r} is not an int8 target; use 'auto' (this CPU) or one "
                             f"of {sorted(TARGETS)}.")


@dataclass
class BenchConfig:
    """Benchmark settings (the book's: one thread, 100 timed single queries after warm-up).

    Attributes:
        enabled: Export and benchmark after training.
        threads: Intra-op threads of every variant.
        runs: Timed single-query calls per variant.
        warmup: Untimed calls first.
        batch_sizes: Batch sizes of the throughput measurement.
        throughput_runs: Timed calls per batch size.
        accuracy_budget: The final artifact is the fastest (p50) variant whose validation accuracy is at least
            the teacher's minus this many accuracy points (1.0: ``val_acc >= teacher_val_acc - 0.01``).
    """

    enabled: bool = True
    threads: int = 1
    runs: int = 100
    warmup: int = 10
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32])
    throughput_runs: int = 10
    accuracy_budget: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.accuracy_budget <= 100.0:
            raise ValueError(f"benchmark.accuracy_budget is in accuracy points and must be in [0, 100], got "
                             f"{self.accuracy_budget} (1.0 allows one point below the teacher on validation).")
