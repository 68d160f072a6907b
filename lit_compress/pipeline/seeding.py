"""``SeedBeforeFit``: the distillation stages' training draws the same random numbers however its models were built."""

from __future__ import annotations

import lightning as L
from lightning.pytorch import Callback


class SeedBeforeFit(Callback):
    """Seed every generator (``seed_everything(seed, workers=True)``) when ``fit`` sets up.

    LightningCLI seeds before it builds the model, and building a model may draw random numbers (a pruned
    student is made with ``from_config`` before its weights are loaded; a student of teacher layers is
    initialised before the copy), so without this the data order and dropout of a stage would depend on how
    its inputs were loaded. The main job puts it first in the distillation stages' callbacks, where it runs
    before the other callbacks' ``setup`` (and so before anything of the fit draws a random number).

    Args:
        seed: The seed; the recipe's ``seed_everything``.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            L.seed_everything(self.seed, workers=True, verbose=False)
