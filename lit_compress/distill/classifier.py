"""``ClassifierModule``: fine-tune a teacher or a baseline with cross-entropy."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from lit_compress.distill.base import CompressionModule, apply_labels, model_inputs, resolve_labels
from lit_compress.distill.losses import labelled_cross_entropy
from lit_compress.models.hub import EMBEDDED_MODEL, load_classifier


class ClassifierModule(CompressionModule):
    """Fine-tunes a Hugging Face classifier (text or image batches) with cross-entropy.

    Args:
        model: Hub name, local directory, ``"embedded:all-MiniLM-L6-v2"``, or a ready ``nn.Module`` (with a
            config, its ``id2label`` is set from ``labels``; a different class count is an error).
        labels: Ordered label names (the CLI links them from the datamodule).
        lr: Peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_ratio: Linear warm-up fraction of the total steps.
        trust_remote_code: Forwarded to ``from_pretrained`` (off by default).
    """

    def __init__(
        self,
        model: str | nn.Module = EMBEDDED_MODEL,
        labels: Sequence[str] | None = None,
        lr: float = 5e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        trust_remote_code: bool = False,
    ) -> None:
        if isinstance(model, nn.Module):
            net, names = model, resolve_labels(labels, model)
            if labels is not None:
                apply_labels(net, names)
        else:
            net = load_classifier(model, labels, trust_remote_code=trust_remote_code)
            names = resolve_labels(labels, net)
        super().__init__(len(names), lr, weight_decay, warmup_ratio)
        self.save_hyperparameters(ignore=["model"] if isinstance(model, nn.Module) else None)
        self.labels = names
        self.model = net

    @property
    def compression_target(self) -> nn.Module:
        """The fine-tuned model (what callbacks compress and export)."""
        return self.model

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        logits = self.model(**model_inputs(batch)).logits
        loss = labelled_cross_entropy(logits, batch["labels"])  # -100 rows (augmented/unlabeled) carry no label
        self.log("train/loss", loss, prog_bar=True, batch_size=logits.shape[0])
        return loss
