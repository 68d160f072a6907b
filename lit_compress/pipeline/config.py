"""Typed, validated configuration of the main job (``lit-compress pipeline``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lit_compress.data.embedded import EMBEDDED_DATA, TextMode
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
