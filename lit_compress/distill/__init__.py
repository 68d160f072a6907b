"""Training modules and distillation losses."""

from lit_compress.distill.base import CompressionModule
from lit_compress.distill.cache import TeacherLogitCache
from lit_compress.distill.classifier import ClassifierModule
from lit_compress.distill.losses import CosineEmbeddingLoss, DistillationLoss, HiddenStateMSELoss, KDLoss
from lit_compress.distill.module import DistillationModule

__all__ = [
    "ClassifierModule",
    "CompressionModule",
    "CosineEmbeddingLoss",
    "DistillationLoss",
    "DistillationModule",
    "HiddenStateMSELoss",
    "KDLoss",
    "TeacherLogitCache",
]
