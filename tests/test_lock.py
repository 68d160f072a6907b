"""The environment `make install` builds is exactly the one requirements.lock pins."""

from __future__ import annotations

import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)")


def _pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        match = PIN.match(line.strip())
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def test_lock_pins_every_direct_dependency_exactly() -> None:
    pins = _pins()
    for name in ("torch", "lightning", "transformers", "onnxruntime", "onnx", "torch-pruning", "optuna", "wandb",
                 "datasets", "torchmetrics", "jsonargparse", "numpy"):
        assert name in pins, f"{name} is not pinned in {LOCK.name}"
    assert not any(line.startswith("-e ") for line in LOCK.read_text().splitlines())
    assert "lit-compress" not in pins  # the project itself is installed editable, never pinned


@pytest.mark.skipif(not (Path(sys.prefix) / ".lit-compress-installed").exists(),
                    reason="not the environment make install built (its stamp file is absent)")
def test_installed_versions_match_the_lock() -> None:
    mismatched = {}
    for name, pinned in _pins().items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            mismatched[name] = (pinned, None)
            continue
        if installed != pinned:
            mismatched[name] = (pinned, installed)
    assert not mismatched, f"installed versions differ from {LOCK.name}: {mismatched}; run make install"
