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
from torch.utils.data import TensorDataset

from lit_compress.prune import ChannelPruning
from lit_compress.vision import CNNClassifier
from tests.conftest import fit_pruning_on_two_ranks


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
    fit_pruning_on_two_ranks(module, callback, data, out, layer_shapes=lambda model: model.refresh_layer_shapes())


if __name__ == "__main__":
    main(Path(sys.argv[1]))
