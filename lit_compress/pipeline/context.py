"""The run directory, and the typed results that stages hand to each other."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lit_compress.utils.io import write_json_atomic

DONE_FILE = "stage.json"


@dataclass(frozen=True)
class TrainedModel:
    """What a training stage leaves for the next ones.

    Attributes:
        stage: Stage that made it (``teacher``, ``distill``, ``prune``, ``qat_dynamic``, ``qat_static``).
        variant: Its name in the summary table (``teacher``, ``student``, ``pruned``, ``qat_<scheme>``).
        model_dir: Saved model (HF layout); its tokenizer is saved with it.
        metrics: Test accuracy and macro-F1, parameters, size in MB.
        recipe: The stage's resolved ``lit-compress fit`` recipe (``None`` for a stage that did not fit).
    """

    stage: str
    variant: str
    model_dir: Path
    metrics: dict[str, Any]
    recipe: Path | None = None

    @property
    def tokenizer_dir(self) -> Path:
        """The tokenizer the model was trained with (saved next to its weights)."""
        return self.model_dir

    def record(self, seconds: float | None) -> dict[str, Any]:
        """The stage's ``stage.json`` (paths as strings; :meth:`from_record` reads it back)."""
        plain = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**{k: str(v) if isinstance(v, Path) else v for k, v in plain.items()}, "seconds": seconds}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> TrainedModel:
        names = {f.name: f for f in dataclasses.fields(cls)}
        values = {k: record[k] for k in names if k in record}
        for key in ("model_dir", "recipe", "teacher_dir", "artifact"):
            if values.get(key) is not None:
                values[key] = Path(values[key])
        return cls(**values)


@dataclass(frozen=True)
class PrunedModel(TrainedModel):
    """The trimmed and pruned student, and the teacher trimmed to the same vocabulary.

    Attributes:
        teacher_dir: The teacher with the student's trimmed vocabulary (later stages distil from it).
        architecture: Heads and FFN channels kept per layer (``ArchitectureSpec.to_dict``).
        vocabulary: The vocabulary trimming report (empty when trimming is off).
    """

    teacher_dir: Path = Path()
    architecture: dict[str, Any] = field(default_factory=dict)
    vocabulary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class QuantizedModel(TrainedModel):
    """A QAT student (saved unwrapped to fp32), and for the static scheme its Q/DQ ONNX artifact.

    Attributes:
        scheme: ``dynamic`` or ``static``.
        int8_target: The int8 target whose weight grid it trained on.
        artifact: The Q/DQ ONNX file (static scheme only).
    """

    scheme: str = "dynamic"
    int8_target: str = ""
    artifact: Path | None = None


@dataclass(frozen=True)
class Deployable:
    """One benchmarked variant: a trained model or an exported artifact.

    Attributes:
        name: Row label in the benchmark table.
        source: Variant it was made from (``teacher``, ``student``, ``pruned``, ``qat_dynamic``, ``qat_static``).
        kind: ``torch-fp32`` for a saved model, else the artifact kind (``ort-dynamic-int8``, ...).
        path: Model directory or artifact directory.
    """

    name: str
    source: str
    kind: str
    path: Path

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "source": self.source, "kind": self.kind, "path": str(self.path)}


@dataclass
class RunContext:
    """State shared by the stages of one run.

    Attributes:
        run_dir: Directory that holds every stage's outputs (``<run_dir>/<stage>/``).
        resume: Skip stages whose ``stage.json`` exists (their outputs are reused), and continue a stage that was
            killed from its ``checkpoints/last.ckpt``.
        checkpoint_every_n_steps: Training stages write ``<stage>/checkpoints/last.ckpt`` every this many
            optimizer steps (0: never); it is removed when the stage is done.
        teacher: The fine-tuned teacher.
        student: The distilled student.
        pruned: The trimmed and pruned student (``None`` when the stage does not run).
        quantized: The QAT students, in the order of ``qat.schemes``.
        search: The search stage's result (:class:`~lit_compress.pipeline.search.SearchResult`), when it ran.
        timings: Stage name -> wall seconds, filled by :class:`Stopwatch`.
        echo: Where the one-line summary of each finished stage goes (``None``: nowhere).
    """

    run_dir: Path
    resume: bool = False
    checkpoint_every_n_steps: int = 50
    teacher: TrainedModel | None = None
    student: TrainedModel | None = None
    pruned: PrunedModel | None = None
    quantized: list[QuantizedModel] = field(default_factory=list)
    search: Any = None
    timings: dict[str, float] = field(default_factory=dict)
    echo: Callable[[str], Any] | None = print

    @property
    def trained(self) -> list[TrainedModel]:
        """Every trained model so far, in stage order."""
        models = [self.teacher, self.student, self.pruned, *self.quantized]
        return [m for m in models if m is not None]

    @property
    def distillation_teacher(self) -> Path:
        """The teacher later stages distil from: the vocabulary-trimmed one once the prune stage ran."""
        assert self.teacher is not None
        return self.pruned.teacher_dir if self.pruned is not None else self.teacher.model_dir

    @property
    def latest_student(self) -> TrainedModel:
        """The most compressed student before quantization (pruned, else distilled)."""
        assert self.student is not None
        return self.pruned or self.student

    def stage_dir(self, name: str) -> Path:
        path = self.run_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def load_done(self, name: str) -> dict[str, Any] | None:
        """The record of a completed stage when resuming, else ``None``."""
        marker = self.run_dir / name / DONE_FILE
        if self.resume and marker.exists():
            return json.loads(marker.read_text())
        return None

    def mark_done(self, name: str, record: dict[str, Any]) -> None:
        """Write the stage's record last, atomically (a stage without it did not finish), then say it in one line."""
        write_json_atomic(self.run_dir / name / DONE_FILE, record)
        if self.echo is not None:
            self.echo(stage_line(name, record))


def stage_line(name: str, record: dict[str, Any]) -> str:
    """``[teacher] 133 s · val acc 0.9641 · 22.7 M params · 86.7 MB``: the parts the record has."""
    metrics = record.get("metrics") or {}
    parts = [f"[{name}] done"]
    if record.get("seconds") is not None:
        parts[0] = f"[{name}] {_seconds(float(record['seconds']))}"
    if metrics.get("val_accuracy") is not None:
        parts.append(f"val acc {float(metrics['val_accuracy']):.4f}")
    if metrics.get("parameters") is not None:
        parts.append(f"{_count(int(metrics['parameters']))} params")
    if metrics.get("size_mb") is not None:
        parts.append(f"{float(metrics['size_mb']):.1f} MB")
    return " · ".join(parts)


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"


def _count(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.1f} M"
    return f"{n / 1e3:.1f} k" if n >= 1_000 else str(n)


class Stopwatch:
    """Wall time of a block, stored in ``ctx.timings[name]``."""

    def __init__(self, ctx: RunContext, name: str) -> None:
        self.ctx, self.name = ctx, name

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.ctx.timings[self.name] = round(time.perf_counter() - self.start, 2)


def dir_size(path: str | os.PathLike[str], pattern: str = "*.safetensors") -> int:
    """Bytes of the files matching ``pattern`` under ``path`` (the weights of a model directory)."""
    return sum(p.stat().st_size for p in Path(path).rglob(pattern) if p.is_file())
