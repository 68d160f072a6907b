"""Training to convergence: stop when the validation metric stops improving, and keep the best weights.

A fixed epoch count under-trains on one dataset and wastes time on another; the teacher is the ceiling of
every student, so it is trained until its validation metric has not improved for ``patience`` epochs
(Lightning's ``EarlyStopping``) and the weights of its best epoch are restored (:class:`RestoreBestWeights`),
as Prechelt (1998), "Early Stopping — But When?", recommends.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch


def improves(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """Whether ``value`` beats ``best`` by more than ``min_delta`` (``mode`` ``"min"``: lower is better)."""
    if math.isnan(value):
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def metric_mode(monitor: str) -> str:
    """``"min"`` for a loss or error metric (``val/loss``), else ``"max"`` (``val/acc``, ``val/f1``)."""
    name = monitor.lower()
    return "min" if any(word in name for word in ("loss", "error", "perplexity")) else "max"


@dataclass(frozen=True)
class EarlyStoppingOptions:
    """When the teacher stops.

    Attributes:
        patience: Validation epochs without improvement before stopping; ``0`` trains the recipe's
            ``max_epochs`` (a fixed count) and keeps the last weights.
        monitor: The validation metric watched (``val/loss``, ``val/acc``, ``val/f1``).
        min_delta: The least change that counts as an improvement.
    """

    patience: int = 2
    monitor: str = "val/loss"
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        if self.patience < 0:
            raise ValueError(f"teacher.early_stopping.patience must be >= 0 (0: fixed epochs), got {self.patience}.")
        if not self.monitor.startswith("val/"):
            raise ValueError(f"teacher.early_stopping.monitor must be a validation metric such as 'val/loss' or "
                             f"'val/acc', got {self.monitor!r}.")  # fmt: skip

    @property
    def mode(self) -> str:
        return metric_mode(self.monitor)

    def callbacks(self) -> list[dict[str, Any]]:
        """The recipe entries (``EarlyStopping`` then :class:`RestoreBestWeights`); none with ``patience=0``."""
        if self.patience == 0:
            return []
        stop = {"class_path": "lightning.pytorch.callbacks.EarlyStopping",
                "init_args": {"monitor": self.monitor, "mode": self.mode, "patience": self.patience,
                              "min_delta": self.min_delta, "check_finite": True, "strict": False,
                              "check_on_train_epoch_end": False}}  # fmt: skip
        best = {"class_path": f"{__name__}.RestoreBestWeights", "init_args": {"monitor": self.monitor,
                                                                               "min_delta": self.min_delta}}
        return [stop, best]


class RestoreBestWeights(L.Callback):
    """Keep a copy of the weights at the best validation epoch and load it back when fitting ends.

    Also records the validation curve: one row per validation epoch with every ``val/`` metric the module
    logged (:attr:`history`), which the teacher stage writes to ``teacher/val_curve.csv``. The best weights and the
    curve are part of the callback's state, so a fit resumed from a mid-stage checkpoint restores the same epoch.

    Args:
        monitor: Validation metric (``mode`` from its name: ``min`` for losses, else ``max``).
        min_delta: The least change that counts as an improvement.
    """

    def __init__(self, monitor: str = "val/loss", min_delta: float = 0.0) -> None:
        self.monitor, self.min_delta, self.mode = monitor, float(min_delta), metric_mode(monitor)
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.history: list[dict[str, float]] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit" or self.monitor not in trainer.callback_metrics:
            return  # a trainer.validate() after fitting is not an epoch of the curve
        row = {"epoch": float(trainer.current_epoch), "step": float(trainer.global_step)}
        row.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})
        self.history.append(row)
        value = row[self.monitor]
        if improves(value, self.best, self.mode, self.min_delta):
            self.best, self.best_epoch = value, trainer.current_epoch
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()}

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.best_state is not None:
            pl_module.load_state_dict(self.best_state)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "best_state": self.best_state,
                "history": copy.deepcopy(self.history)}  # fmt: skip

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.best, self.best_epoch = state_dict.get("best"), state_dict.get("best_epoch")
        self.best_state, self.history = state_dict.get("best_state"), list(state_dict.get("history") or [])

    def summary(self) -> dict[str, Any]:
        """``best_epoch`` (0-based), ``epochs`` validated, and the best value of the monitored metric."""
        return {"monitor": self.monitor, "best_epoch": self.best_epoch, "best": self.best, "epochs": len(self.history)}


def curve_csv(history: list[Mapping[str, float]]) -> str:
    """The validation curve as CSV text (columns: epoch, step, then the metrics in sorted order)."""
    metrics = sorted({k for row in history for k in row} - {"epoch", "step"})
    lines = [",".join(["epoch", "step", *metrics])]
    for row in history:
        cells = [str(int(row["epoch"])), str(int(row["step"]))]
        lines.append(",".join(cells + [f"{row[m]:.6g}" if m in row else "" for m in metrics]))
    return "\n".join(lines) + "\n"
