"""LightningModule for the vision recipe: a small CNN classifier with cross-entropy and accuracy."""

from __future__ import annotations

from typing import Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from lit_compress.vision.models import build_cnn


class LeNetModule(pl.LightningModule):
    """Train ``LeNet`` (seed 003) or the TF tutorial CNN (seed 001) on MNIST with Adam.

    Logs ``{train,val,test}/loss`` and ``{train,val,test}/acc`` (epoch means weighted by batch size, i.e.
    exact accuracy over the split).

    Args:
        arch: ``"lenet5"`` or ``"tutorial"``.
        lr: Adam learning rate (Keras' default 1e-3, as in seed 001).
        weight_decay: Adam weight decay.
        num_classes: Output classes.
        init_from: Optional checkpoint to start from (a Lightning ``.ckpt`` of this module or a plain state
            dict of the CNN), loaded with ``weights_only=True`` -- e.g. the baseline before a pruning fine-tune.
    """

    def __init__(
        self,
        arch: Literal["lenet5", "tutorial"] = "lenet5",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        num_classes: int = 10,
        init_from: str | None = None,
    ) -> None:
        super().__init__()
        if lr <= 0:
            raise ValueError(f"lr={lr} must be positive.")
        self.save_hyperparameters()
        self.model = build_cnn(arch, num_classes)
        if init_from is not None:
            self.model.load_state_dict(_cnn_state_dict(init_from))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def _step(self, batch: tuple[Tensor, Tensor], split: str) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(-1) == y).float().mean()
        on_step = split == "train"
        self.log(f"{split}/loss", loss, batch_size=len(y), on_step=on_step, on_epoch=True)
        self.log(f"{split}/acc", acc, batch_size=len(y), on_step=False, on_epoch=True, prog_bar=split != "train")
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


def _cnn_state_dict(path: str) -> dict[str, Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "state_dict" in state:  # a Lightning checkpoint of LeNetModule
        prefix = "model."
        state = {k[len(prefix) :]: v for k, v in state["state_dict"].items() if k.startswith(prefix)}
    return state
