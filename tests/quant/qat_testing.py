"""A minimal LightningModule and data for the QAT tests (tiny BERT, cross-entropy, random tokens)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from lit_compress.models.tiny import tiny_bert


class TokenData(Dataset):
    """Fixed random token sequences with labels (deterministic: seeded, no shuffling needed)."""

    def __init__(self, n: int = 16, length: int = 12, vocab: int = 128, labels: int = 3, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, vocab, (n, length), generator=gen)
        self.mask = torch.ones_like(self.ids)
        self.mask[::3, length // 2 :] = 0  # some padding
        self.labels = torch.randint(0, labels, (n,), generator=gen)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {
            "input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": self.labels[i], "idx": torch.tensor(i)
        }  # fmt: skip


def loader(n: int = 16, batch_size: int = 4, seed: int = 0) -> DataLoader:
    return DataLoader(TokenData(n=n, seed=seed), batch_size=batch_size, shuffle=False)


def no_dropout(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model


class TinyClassifier(L.LightningModule):
    """``compression_target`` is the wrapped tiny BERT, as in lit_compress's own modules."""

    def __init__(self, seed: int = 0, lr: float = 1e-2) -> None:
        super().__init__()
        self.model = no_dropout(tiny_bert(seed=seed)).train()
        self.lr = lr

    @property
    def compression_target(self) -> nn.Module:
        return self.model

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = F.cross_entropy(logits, batch["labels"])
        self.log("train/loss", loss, batch_size=len(logits))
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


def trainer(max_steps: int, callbacks: list[L.Callback], **kwargs: Any) -> L.Trainer:
    options: dict[str, Any] = {
        "max_steps": max_steps,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "accelerator": "cpu",
        "devices": 1,
        "num_sanity_val_steps": 0,
    }
    options.update(kwargs)
    return L.Trainer(callbacks=callbacks, **options)
