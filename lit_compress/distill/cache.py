"""Teacher-logit cache: compute each training example's teacher logits once, reuse them every epoch."""

from __future__ import annotations

import torch
from torch import Tensor

from lit_compress.distill.losses import logits_checksum


class TeacherLogitCache:
    """Per-example teacher logits keyed by the example index ``idx`` of the batch.

    Valid while the inputs of an example do not change; each row stores a fingerprint of its inputs (token ids, or
    the bits of its pixel values: :func:`input_checksum`), and a row whose fingerprint differs (new tokenizer,
    augmentation) counts as a miss and is recomputed.
    The cache is not part of the model's ``state_dict`` (the exported student needs none of it); Lightning
    checkpoints carry it (:meth:`state_dict`, through ``DistillationModule.on_save_checkpoint``), so a fit resumed
    in the middle of an epoch reuses the logits the interrupted one computed — recomputing them in other batches
    (other padding) would change them in the last float bits.
    """

    def __init__(self) -> None:
        self.logits: Tensor | None = None
        self.checksums: Tensor | None = None
        self.hits = 0
        self.misses = 0

    def _grow(self, size: int, num_labels: int, like: Tensor) -> None:
        if self.logits is not None and self.logits.shape[0] >= size:
            return
        logits = like.new_zeros((size, num_labels))
        checksums = torch.full((size,), -1, dtype=torch.long, device=like.device)
        if self.logits is not None and self.checksums is not None:
            logits[: self.logits.shape[0]] = self.logits
            checksums[: self.checksums.shape[0]] = self.checksums
        self.logits, self.checksums = logits, checksums

    def lookup(self, idx: Tensor, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor | None:
        """Cached logits for the whole batch, or ``None`` if any row is missing or stale.

        ``input_ids`` is the batch's primary input: token ids, or ``pixel_values`` of an image batch.
        """
        if self.logits is None or self.checksums is None or int(idx.max()) >= self.logits.shape[0]:
            self.misses += 1
            return None
        idx = idx.to(self.logits.device)
        fresh = self.checksums[idx] == input_checksum(input_ids, attention_mask).to(self.checksums.device)
        if not bool(fresh.all()):
            self.misses += 1
            return None
        self.hits += 1
        return self.logits[idx]

    def store(self, idx: Tensor, input_ids: Tensor, attention_mask: Tensor | None, logits: Tensor) -> None:
        """Remember the teacher logits of a batch."""
        self._grow(int(idx.max()) + 1, logits.shape[-1], logits.detach())
        assert self.logits is not None and self.checksums is not None
        idx = idx.to(self.logits.device)
        self.logits[idx] = logits.detach().to(self.logits.dtype)
        self.checksums[idx] = input_checksum(input_ids, attention_mask).to(self.checksums.device)

    def state_dict(self) -> dict[str, Tensor | None]:
        """The cached rows (for a checkpoint)."""
        return {"logits": self.logits, "checksums": self.checksums}

    def load_state_dict(self, state: dict[str, Tensor | None]) -> None:
        """Restore rows saved by :meth:`state_dict`."""
        self.logits, self.checksums = state.get("logits"), state.get("checksums")


def input_checksum(inputs: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """Per-row fingerprint of a batch's primary input (int64, one per example).

    Token ids: :func:`~lit_compress.distill.losses.logits_checksum` (unchanged for text). Pixel values (any float
    tensor): each row's values as float32 bit patterns ``b_j`` (int32, so any change of a value changes it),
    ``Σ_j (j + 1) · b_j`` over the flattened row (int64, wrapping on overflow: exact and order-independent).
    """
    if not inputs.is_floating_point():
        return logits_checksum(inputs, attention_mask)
    bits = inputs.detach().float().contiguous().view(torch.int32).flatten(1).long()
    positions = torch.arange(1, bits.shape[1] + 1, device=bits.device)
    return (bits * positions).sum(dim=1)
