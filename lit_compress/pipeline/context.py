"""The run directory and what stages hand to each other."""

from __future__ import annotations

import json
import os
import time
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
    """

    run_dir: Path
    resume: bool = False
    models: dict[str, Path] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

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
        """Write the stage's record last, atomically: a stage without it did not finish."""
        write_json_atomic(self.run_dir / name / DONE_FILE, record)


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
