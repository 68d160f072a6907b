"""Helper for test_channels.py: 2-process CPU DDP (gloo) run with gradual CNN channel pruning (ChannelPruning).

Each rank saves its final CNN weights, channel counts and whether the DDP wrapper holds the cut parameters.
Usage: python tests/prune/ddp_channels_run.py OUT_DIR   (Lightning re-launches this script for rank 1)
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from lit_compress.prune import ChannelPruning
from lit_compress.vision import CNNClassifier


class TinyCNN(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = CNNClassifier(arch="resnet18", width=4, num_channels=1, image_size=16, num_labels=3)
        self.batches: list[list[float]] = []

    @property
    def compression_target(self) -> torch.nn.Module:
        return self.model

    def training_step(self, batch, batch_idx):
        images, labels = batch
        self.batches.append(images[:, 0, 0, 0].tolist())
        return F.cross_entropy(self.model(pixel_values=images).logits, labels)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def main(out: Path) -> None:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(48, 1, 16, 16, generator=g), torch.randint(0, 3, (48,), generator=g))
    module = TinyCNN()
    callback = ChannelPruning(lambda step: 0.5 if step >= 4 else 0.25 if step >= 2 else 0.0, importance="taylor")
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_steps=6, callbacks=[callback], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(data, batch_size=4, shuffle=True))
    wrapped = {id(p) for p in trainer.strategy.model.parameters()}
    torch.save(
        {"world_size": trainer.world_size, "batches": module.batches,
         "state": {k: v.detach().clone() for k, v in module.model.state_dict().items()},
         "layer_shapes": module.model.refresh_layer_shapes(),
         "wrapper_holds_cut_params": wrapped == {id(p) for p in module.parameters()}},
        out / f"rank{trainer.global_rank}.pt",
    )  # fmt: skip


if __name__ == "__main__":
    main(Path(sys.argv[1]))
