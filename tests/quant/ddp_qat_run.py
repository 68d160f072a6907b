"""Helper for test_qat_callback.py: 2-process CPU DDP (gloo) run with static-scheme QAT (running min/max).

Each rank records the extremes of every fake-quantized layer's inputs it saw, and its final observer ranges.
Usage: python tests/quant/ddp_qat_run.py OUT_DIR   (Lightning re-launches this script for rank 1)
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
from lit_compress.quant import ActivationQuantConfig, QuantizationAwareTraining
from lit_compress.quant.fake_quant import fake_quantized_modules


class TinyClassifier(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = BertForSequenceClassification(tiny_bert_config(num_layers=1))  # train mode: observers observe

    @property
    def compression_target(self) -> torch.nn.Module:
        return self.model

    def training_step(self, batch, batch_idx):
        input_ids, labels = batch
        return F.cross_entropy(self.model(input_ids=input_ids).logits, labels)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)  # frozen weights: the ranges depend on the data only


class RecordInputs(pl.Callback):
    """Per layer, the min and max of every input the layer received while observers were on."""

    def __init__(self) -> None:
        self.seen: dict[str, list[tuple[float, float]]] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        for name, module in fake_quantized_modules(pl_module.model):
            module.register_forward_pre_hook(lambda m, args, n=name: self._record(m, n, args[0]))

    def _record(self, module, name: str, x: torch.Tensor) -> None:
        if module.training and bool(module.observer_enabled):
            lo, hi = torch.aminmax(x.detach().float())
            self.seen.setdefault(name, []).append((float(lo), float(hi)))


def main(out: Path) -> None:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 128, (32, 8), generator=g)
    ids[16:] = ids[16:] % 16  # the two halves of the data differ (rank 1 sees other tokens)
    data = TensorDataset(ids, torch.randint(0, 3, (32,), generator=g))
    module = TinyClassifier()
    record = RecordInputs()
    qat = QuantizationAwareTraining(activation=ActivationQuantConfig(scheme="static", observer="minmax"),
                                    filter_fn=".")  # fmt: skip
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_steps=4, callbacks=[qat, record], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(data, batch_size=4, shuffle=False))
    ranges = {n: (float(m.input_observer.min_val), float(m.input_observer.max_val))
              for n, m in fake_quantized_modules(module.model)}  # fmt: skip
    torch.save({"world_size": trainer.world_size, "seen": record.seen, "ranges": ranges},
               out / f"rank{trainer.global_rank}.pt")  # fmt: skip


if __name__ == "__main__":
    main(Path(sys.argv[1]))
