"""Test helpers: Lightning callbacks that hold a worker's trial (until ``parties`` workers are in one; while a
file exists).

Used by the multi-worker tests so that each process provably runs trials of the shared study, and by the kill test.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import lightning as L


class Barrier(L.Callback):
    def __init__(self, directory: str, parties: int = 2, timeout: float = 120.0) -> None:
        self.directory, self.parties, self.timeout = Path(directory), parties, timeout

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / str(os.getpid())).touch()
        deadline = time.monotonic() + self.timeout
        while len(list(self.directory.iterdir())) < self.parties:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(list(self.directory.iterdir()))} of {self.parties} workers arrived")
            time.sleep(0.1)


class Hold(L.Callback):
    """Blocks a trial at ``on_fit_start`` while the file ``marker`` exists, after touching ``<started>/<pid>``.

    Used by the kill test: the worker is SIGKILLed while it is held, in the middle of a RUNNING trial.
    """

    def __init__(self, marker: str, started: str) -> None:
        self.marker, self.started = Path(marker), Path(started)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started.mkdir(parents=True, exist_ok=True)
        (self.started / str(os.getpid())).touch()
        while self.marker.exists():
            time.sleep(0.1)
