"""``DistillationModule``: a trainable student learns from a frozen teacher (Hinton et al. 2015)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lit_compress.distill.base import CompressionModule, apply_labels, model_inputs, primary_input, resolve_labels
from lit_compress.distill.cache import TeacherLogitCache
from lit_compress.distill.losses import CosineEmbeddingLoss, DistillationLoss, HiddenStateMSELoss, default_layer_map
from lit_compress.models.hub import EMBEDDED_MODEL, load_classifier
from lit_compress.models.student import model_depth, student_from_teacher


def load_teacher(teacher: str | nn.Module, labels: Sequence[str] | None) -> nn.Module:
    """A teacher from a module, a ``ClassifierModule`` checkpoint (``.ckpt``), a hub name or a directory."""
    if isinstance(teacher, nn.Module):
        return teacher
    return load_classifier(teacher, labels)  # .ckpt: weights_only=True, one-line error if corrupt


#: Checkpoint key of the teacher-logit cache.
CACHE_KEY = "lit_compress_teacher_logit_cache"

class DistillationModule(CompressionModule):
    """Knowledge distillation of a frozen teacher into a trainable student.

    Loss (each term logged under ``train/``)::

        alpha · CE(s, y) + (1 − alpha) · T² · KL(softmax(t/T) ‖ softmax(s/T))
          + hidden_weight · MSE(h_s, h_t) + cosine_weight · (1 − cos(h_s, h_t))

    The hidden-state terms (TinyBERT / DistilBERT) compare student layer ``i`` with teacher layer
    ``layer_map[i]``; a learned linear projection is added when the hidden sizes differ.

    Args:
        teacher: Hub name, directory, ``ClassifierModule`` checkpoint (``.ckpt``), or module. Frozen, eval mode.
        student: Hub name, directory or module; ``None`` builds it from ``student_layers`` of the teacher.
            A module given with ``labels`` gets them as its config's ``id2label`` (a different class count is
            an error). Batches are tokenized text or images (``pixel_values``).
        student_layers: Teacher layers copied into the student (default: every other layer).
        labels: Ordered label names (the CLI links them from the datamodule).
        alpha: Weight of the hard-label CE (``1`` = pure CE, ``0`` = pure KD).
        temperature: KD softening temperature ``T``.
        hidden_weight: Weight of the hidden-state MSE term.
        cosine_weight: Weight of the cosine-embedding term.
        layer_map: Student layer → teacher layer for the hidden-state terms.
        cache_teacher_logits: Compute teacher logits once per training example (only used when no
            hidden-state term needs the teacher's features).
        lr: Peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_ratio: Linear warm-up fraction of the total steps.
    """

    def __init__(
        self,
        teacher: str | nn.Module = EMBEDDED_MODEL,
        student: str | nn.Module | None = None,
        student_layers: list[int] | None = None,
        labels: Sequence[str] | None = None,
        alpha: float = 0.5,
        temperature: float = 2.0,
        hidden_weight: float = 0.0,
        cosine_weight: float = 0.0,
        layer_map: dict[int, int] | None = None,
        cache_teacher_logits: bool = True,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
    ) -> None:
        teacher_net = load_teacher(teacher, labels)
        names = resolve_labels(labels, teacher_net)
        for given in (teacher, student):
            if isinstance(given, nn.Module) and labels is not None:
                apply_labels(given, names)
        super().__init__(len(names), lr, weight_decay, warmup_ratio)
        modules = [k for k, v in (("teacher", teacher), ("student", student)) if isinstance(v, nn.Module)]
        self.save_hyperparameters(ignore=modules or None)
        self.labels = names
        self.teacher = teacher_net.eval().requires_grad_(False)
        self.student = self._build_student(student, student_layers, names)
        self.loss_fn = DistillationLoss(alpha, temperature)
        self.hidden_weight, self.cosine_weight = hidden_weight, cosine_weight
        self.hidden_mse, self.cosine = HiddenStateMSELoss(), CosineEmbeddingLoss()
        self.layer_map = self._layer_map(layer_map, student_layers)
        self.projections = self._projections()
        self.cache = TeacherLogitCache() if cache_teacher_logits and not self.uses_features else None

    # -- construction ---------------------------------------------------------------------------------------
    def _build_student(
        self, student: str | nn.Module | None, layers: list[int] | None, labels: list[str]
    ) -> nn.Module:
        if isinstance(student, nn.Module):
            return student
        if student is not None:
            return load_classifier(student, labels)
        if layers is None:
            layers = list(range(0, model_depth(self.teacher), 2))
        return student_from_teacher(self.teacher, layers).train()

    @property
    def uses_features(self) -> bool:
        """Whether a hidden-state term needs the teacher's hidden states."""
        return self.hidden_weight > 0 or self.cosine_weight > 0

    def _layer_map(self, layer_map: dict[int, int] | None, layers: list[int] | None) -> dict[int, int]:
        if not self.uses_features:
            return {}
        n_s, n_t = model_depth(self.student), model_depth(self.teacher)
        if layer_map is None:
            layer_map = dict(enumerate(layers)) if layers else default_layer_map(n_s, n_t)
        bad = {s: t for s, t in layer_map.items() if not (0 <= s < n_s and 0 <= t < n_t)}
        if bad:
            raise ValueError(f"layer_map {bad} is out of range: student has {n_s} layers, teacher {n_t}.")
        return {int(s): int(t) for s, t in layer_map.items()}

    def _projections(self) -> nn.ModuleDict:
        if not self.uses_features:
            return nn.ModuleDict()
        d_s, d_t = self.student.config.hidden_size, self.teacher.config.hidden_size
        if d_s == d_t:
            return nn.ModuleDict()
        return nn.ModuleDict({str(s): nn.Linear(d_s, d_t) for s in self.layer_map})

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the teacher-logit cache in the checkpoint (a resumed fit reuses exactly those logits)."""
        if self.cache is not None:
            checkpoint[CACHE_KEY] = self.cache.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.cache is not None and CACHE_KEY in checkpoint:
            self.cache.load_state_dict(checkpoint[CACHE_KEY])

    @property
    def compression_target(self) -> nn.Module:
        """The student (what callbacks prune/quantize and what is exported)."""
        return self.student

    def train(self, mode: bool = True) -> DistillationModule:
        """Switch train/eval mode; the teacher always stays in eval mode (no dropout)."""
        super().train(mode)
        self.teacher.eval()
        return self

    # -- overridable steps ----------------------------------------------------------------------------------
    def student_forward(self, batch: dict[str, Tensor]) -> Any:
        """Run the student (with hidden states when a feature term needs them)."""
        return self.student(**model_inputs(batch), output_hidden_states=self.uses_features)

    @torch.no_grad()
    def teacher_forward(self, batch: dict[str, Tensor]) -> Any:
        """Run the frozen teacher without gradients."""
        return self.teacher(**model_inputs(batch), output_hidden_states=self.uses_features)

    def teacher_logits(self, batch: dict[str, Tensor]) -> tuple[Tensor, Any]:
        """Teacher logits (from the cache when possible) and the full teacher output (or ``None``)."""
        idx, ids, mask = batch.get("idx"), primary_input(batch), batch.get("attention_mask")
        if self.cache is not None and idx is not None:
            cached = self.cache.lookup(idx, ids, mask)
            if cached is not None:
                return cached, None
        out = self.teacher_forward(batch)
        if self.cache is not None and idx is not None:
            self.cache.store(idx, ids, mask, out.logits)
        return out.logits, out

    def compute_loss(self, batch: dict[str, Tensor], student_out: Any, teacher_logits: Tensor, teacher_out: Any) -> dict[str, Tensor]:
        """All loss terms; ``"loss"`` is the total that is optimised."""
        terms = self.loss_fn(student_out.logits, teacher_logits, batch.get("labels"))
        if not self.uses_features:
            return terms
        mask = batch.get("attention_mask")
        hidden = student_out.hidden_states[0].new_zeros(())
        cosine = hidden.clone()
        for s, t in self.layer_map.items():
            h_s, h_t = student_out.hidden_states[s + 1], teacher_out.hidden_states[t + 1]
            if str(s) in self.projections:
                h_s = self.projections[str(s)](h_s)
            hidden = hidden + self.hidden_mse(h_s, h_t, mask) / len(self.layer_map)
            cosine = cosine + self.cosine(h_s, h_t, mask) / len(self.layer_map)
        terms.update(hidden_mse=hidden, cosine=cosine)
        terms["loss"] = terms["loss"] + self.hidden_weight * hidden + self.cosine_weight * cosine
        return terms

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        student_out = self.student_forward(batch)
        teacher_logits, teacher_out = self.teacher_logits(batch)
        terms = self.compute_loss(batch, student_out, teacher_logits, teacher_out)
        bs = primary_input(batch).shape[0]
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items() if k != "loss"}, batch_size=bs)
        self.log("train/loss", terms["loss"].detach(), prog_bar=True, batch_size=bs)
        return terms["loss"]
