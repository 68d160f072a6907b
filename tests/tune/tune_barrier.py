"""Test helper: a Lightning callback that holds each worker's first trial until ``parties`` workers are in one.

Used by the two-worker test so that both processes provably run trials of the shared study.
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
