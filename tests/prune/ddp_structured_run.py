"""Helper for test_structured_callback.py: 2-process CPU DDP (gloo) run with gradual structured pruning.

Each rank saves its final student weights, architecture and whether the DDP wrapper holds the cut parameters.
Usage: python tests/prune/ddp_structured_run.py OUT_DIR   (Lightning re-launches this script for rank 1)
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset
from transformers import BertForSequenceClassification

from lit_compress.models.architecture import current_architecture
from lit_compress.models.tiny import tiny_bert_config
from lit_compress.prune import StructuredPruning
from tests.conftest import fit_pruning_on_two_ranks


class TinyClassifier(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = BertForSequenceClassification(tiny_bert_config(num_layers=2)).eval()
        self.batches: list[list[int]] = []

    @property
    def compression_target(self) -> torch.nn.Module:
        return self.model

    def training_step(self, batch, batch_idx):
        input_ids, labels = batch
        self.batches.append(input_ids[:, 0].tolist())
        return F.cross_entropy(self.model(input_ids=input_ids).logits, labels)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def main(out: Path) -> None:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randint(0, 128, (48, 8), generator=g), torch.randint(0, 3, (48,), generator=g))
    module = TinyClassifier()
    ramp = lambda step: 0.25 if step >= 2 else 0.0  # noqa: E731 - first cut at step 2, second at step 4
    callback = StructuredPruning(lambda step: 0.5 if step >= 4 else ramp(step), ramp, importance="taylor")
    fit_pruning_on_two_ranks(module, callback, data, out,
                             architecture=lambda model: current_architecture(model).to_dict())


if __name__ == "__main__":
    main(Path(sys.argv[1]))
