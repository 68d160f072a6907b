"""Distillation losses as small modules with explicit signatures (pure tensors in, tensors out)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class KDLoss(nn.Module):
    """Soft-target loss of Hinton et al. (2015), "Distilling the Knowledge in a Neural Network".

    ``T² · KL(softmax(teacher/T) ‖ softmax(student/T))``, averaged over the batch (``KLDivLoss(batchmean)`` on
    ``log_softmax(student/T)`` against ``softmax(teacher/T)``, as the book's DistillationTrainer). The ``T²``
    factor keeps the gradient scale independent of the temperature.

    Args:
        temperature: Softening temperature ``T > 0``.
    """

    def __init__(self, temperature: float = 2.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        self.temperature = float(temperature)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        t = self.temperature
        log_p_student = F.log_softmax(student_logits / t, dim=-1)
        p_teacher = F.softmax(teacher_logits.detach() / t, dim=-1)
        return F.kl_div(log_p_student, p_teacher, reduction="batchmean") * t * t


#: A label that means "no label" (augmented or unlabeled rows): CE skips the row, KD still uses it.
IGNORE_INDEX = -100


def labelled_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy averaged over the rows whose label is not :data:`IGNORE_INDEX`; ``0`` when there are none.

    ``Σ_{i: y_i ≠ −100} −log softmax(z_i)[y_i] / max(1, #{i: y_i ≠ −100})`` (no NaN on an all-unlabelled batch).
    """
    total = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / labels.ne(IGNORE_INDEX).sum().clamp_min(1).to(total.dtype)


class DistillationLoss(nn.Module):
    """``alpha · CE(student, labels) + (1 − alpha) · T² · KL(softmax(teacher/T) ‖ softmax(student/T))``.

    CE runs over the labelled rows only (label ``-100`` = no label: :func:`labelled_cross_entropy`), KD over
    every row of the batch, so augmented and unlabeled rows are taught by the teacher's logits alone.

    Args:
        alpha: Weight of the hard-label cross-entropy, in ``[0, 1]``; ``1`` is pure CE, ``0`` pure KD.
        temperature: Softening temperature of the KD term.
    """

    def __init__(self, alpha: float = 0.5, temperature: float = 2.0) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
        self.alpha = float(alpha)
        self.kd = KDLoss(temperature)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor | None) -> dict[str, Tensor]:
        """Return ``{"loss", "ce", "kd"}``; ``ce`` is zero (and must have weight 0) when ``labels`` is None."""
        kd = self.kd(student_logits, teacher_logits)
        if labels is None:
            if self.alpha > 0:
                raise ValueError("The batch has no labels but alpha > 0; set alpha=0 to distil on unlabeled text.")
            ce = kd.new_zeros(())
        else:
            ce = labelled_cross_entropy(student_logits, labels)
        return {"loss": self.alpha * ce + (1.0 - self.alpha) * kd, "ce": ce, "kd": kd}


def _masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return values.mean()
    weights = mask.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


class HiddenStateMSELoss(nn.Module):
    """Mean squared error between student and teacher hidden states over real (unpadded) tokens.

    ``mean_{tokens with mask=1} mean_d (h_s − h_t)²`` (the hidden-state term of TinyBERT, Jiao et al. 2020).
    """

    def forward(self, student_hidden: Tensor, teacher_hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
        per_token = (student_hidden - teacher_hidden.detach()).pow(2).mean(dim=-1)
        return _masked_mean(per_token, attention_mask)


class CosineEmbeddingLoss(nn.Module):
    """``1 − cos(h_s, h_t)`` averaged over real tokens: DistilBERT's cosine-embedding loss (Sanh et al. 2019)."""

    def forward(self, student_hidden: Tensor, teacher_hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
        cos = F.cosine_similarity(student_hidden, teacher_hidden.detach(), dim=-1)
        return _masked_mean(1.0 - cos, attention_mask)


def default_layer_map(num_student: int, num_teacher: int) -> dict[int, int]:
    """Map student layer ``i`` to teacher layer ``round((i + 1) · L_t / L_s) − 1`` (uniform, last to last)."""
    return {i: int(round((i + 1) * num_teacher / num_student)) - 1 for i in range(num_student)}


def logits_checksum(input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
    """A per-row fingerprint of tokenized inputs, used to detect stale cached teacher logits."""
    ids = input_ids.long() if attention_mask is None else input_ids.long() * attention_mask.long()
    positions = torch.arange(1, ids.shape[1] + 1, device=ids.device)
    return (ids * positions).sum(dim=1) * 1_000_003 + ids.ne(0).sum(dim=1)
