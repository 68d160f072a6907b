"""Shared evaluation and optimisation for lit_compress LightningModules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

#: Batch keys a Hugging Face classifier takes: tokenized text, or normalized images ``(B, C, H, W)``.
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "pixel_values")
#: The tensor that identifies an example (its first dimension is the batch): token ids, else pixels.
PRIMARY_INPUTS = ("input_ids", "pixel_values")


def model_inputs(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The keys of a batch that a Hugging Face classifier takes as inputs."""
    return {k: batch[k] for k in MODEL_INPUTS if k in batch}


def primary_input(batch: dict[str, Tensor]) -> Tensor:
    """``input_ids`` of a text batch, ``pixel_values`` of an image batch.

    Raises:
        KeyError: The batch has neither (naming the keys it has).
    """
    for key in PRIMARY_INPUTS:
        if key in batch:
            return batch[key]
    raise KeyError(f"The batch has no {' or '.join(PRIMARY_INPUTS)} (keys: {sorted(batch)}); check the datamodule.")


def apply_labels(model: nn.Module, labels: Sequence[str]) -> None:
    """Name the classes of a ready model: its config's ``id2label`` / ``label2id`` become ``labels``.

    Raises:
        ValueError: The config declares another number of classes than ``labels`` has.
    """
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "num_labels"):
        return
    if int(config.num_labels) != len(labels):
        raise ValueError(
            f"{type(model).__name__} has {config.num_labels} output classes but {len(labels)} labels were given "
            f"({list(labels)[:5]}...); build the model with num_labels={len(labels)}."
        )
    config.id2label = dict(enumerate(labels))
    config.label2id = {name: i for i, name in enumerate(labels)}


class CompressionModule(L.LightningModule):
    """Base of trainable classifiers: evaluation metrics, AdamW with linear warm-up/decay.

    Subclasses define the ``compression_target`` property (the model that callbacks prune/quantize, and that is
    evaluated and exported) and implement ``training_step``.

    Args:
        num_labels: Number of classes (for the metrics).
        lr: Peak learning rate of AdamW.
        weight_decay: Decoupled weight decay (not applied to biases and LayerNorm weights).
        warmup_ratio: Fraction of the total steps spent warming the learning rate up linearly.
    """

    def __init__(self, num_labels: int, lr: float, weight_decay: float, warmup_ratio: float) -> None:
        super().__init__()
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}.")
        if not 0.0 <= warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}.")
        self.lr, self.weight_decay, self.warmup_ratio = lr, weight_decay, warmup_ratio
        metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes=num_labels, average="micro"),
                "f1": MulticlassF1Score(num_classes=num_labels, average="macro"),
            }
        )
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def on_fit_start(self) -> None:
        """Start training in train mode (``from_pretrained`` returns eval-mode models; Lightning keeps modes)."""
        self.train()

    @property
    def compression_target(self) -> nn.Module:
        """The model that callbacks compress, that is evaluated and exported."""
        raise NotImplementedError

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Logits of the compression target for a tokenized batch."""
        return self.compression_target(**model_inputs(batch)).logits

    def _evaluate(self, batch: dict[str, Tensor], metrics: MetricCollection, prefix: str) -> None:
        logits = self(batch)
        if "labels" not in batch:
            return
        bs = batch["labels"].shape[0]
        self.log(f"{prefix}/loss", F.cross_entropy(logits, batch["labels"]), batch_size=bs, sync_dist=True)
        metrics.update(logits, batch["labels"])
        self.log_dict(metrics, batch_size=bs, on_epoch=True, prog_bar=prefix == "val")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics, "test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self(batch).softmax(dim=-1)

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Named parameters that the optimizer updates (override to freeze more)."""
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def configure_optimizers(self) -> Any:
        from transformers import get_linear_schedule_with_warmup

        no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
        named = self.trainable_parameters()
        groups = [
            {"params": [p for n, p in named if not n.endswith(no_decay)], "weight_decay": self.weight_decay},
            {"params": [p for n, p in named if n.endswith(no_decay)], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=self.lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = get_linear_schedule_with_warmup(optimizer, int(self.warmup_ratio * total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def resolve_labels(labels: Sequence[str] | None, model: nn.Module | None = None) -> list[str]:
    """Label names from the argument, else from a model config's ``id2label``."""
    if labels is not None:
        if len(labels) < 2:
            raise ValueError(f"A classifier needs at least 2 labels, got {list(labels)}.")
        return [str(x) for x in labels]
    config = getattr(model, "config", None)
    id2label = getattr(config, "id2label", None)
    if not id2label:
        raise ValueError("Pass `labels` (the CLI links them from the datamodule) or a model whose config has id2label.")
    return [str(id2label[i]) for i in sorted(id2label)]
