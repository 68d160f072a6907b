"""The run directory and what stages hand to each other."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lit_compress.utils.io import write_json_atomic

DONE_FILE = "stage.json"


@dataclass
class RunContext:
    """State shared by the stages of one run.

    Attributes:
        run_dir: Directory that holds every stage's outputs (``<run_dir>/<stage>/``).
        resume: Skip stages whose ``stage.json`` exists (their outputs are reused).
        models: Variant name -> saved model directory (HF layout), filled by training stages.
        results: Variant name -> metrics, filled by evaluation stages.
        timings: Stage name -> wall seconds, filled by :class:`Stopwatch`.
        echo: Where the one-line summary of each finished stage goes (``None``: nowhere).
    """

    run_dir: Path
    resume: bool = False
    models: dict[str, Path] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    echo: Callable[[str], Any] | None = print

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
    """``[teacher] 133 s · test acc 0.9505 · 22.7 M params · 86.7 MB``: the parts the record has."""
    metrics = record.get("metrics") or {}
    parts = [f"[{name}] done"]
    if record.get("seconds") is not None:
        parts[0] = f"[{name}] {_seconds(float(record['seconds']))}"
    if metrics.get("accuracy") is not None:
        parts.append(f"test acc {float(metrics['accuracy']):.4f}")
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
