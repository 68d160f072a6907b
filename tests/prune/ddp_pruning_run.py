"""Helper for test_callback.py: 2-process CPU DDP (gloo) run with movement pruning; each rank saves its masks.

Usage: python tests/prune/ddp_pruning_run.py OUT_DIR   (Lightning re-launches this script for rank 1)
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from transformers import BertForSequenceClassification

from lit_compress.models.tiny import tiny_bert_config
from lit_compress.prune import GradualPruning, PolynomialDecay


class TinyClassifier(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = BertForSequenceClassification(tiny_bert_config())
        self.batches: list[list[int]] = []

    def training_step(self, batch, batch_idx):
        input_ids, labels = batch
        self.batches.append(input_ids[:, 0].tolist())
        return F.cross_entropy(self.model(input_ids=input_ids).logits, labels)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def main(out: Path) -> None:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randint(0, 128, (32, 8), generator=g), torch.randint(0, 3, (32,), generator=g))
    module = TinyClassifier()
    callback = GradualPruning(
        PolynomialDecay(0.3, 0.6, begin_step=2, end_step=4), criterion="movement", scope="global",
        permanent_at_fit_end=False,
    )
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_steps=4, callbacks=[callback], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(data, batch_size=4, shuffle=True))
    state = callback.state_dict()
    torch.save(
        {"world_size": trainer.world_size, "masks": state["masks"], "scores": state["scores"],
         "batches": module.batches},
        out / f"rank{trainer.global_rank}.pt",
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
