"""lit_compress: Lightning-native model compression (distillation, pruning, QAT, ONNX/int8 export, benchmarks).

Public API re-exports only; importing this package runs nothing.
"""

from lit_compress.data import TextClassificationDataModule
from lit_compress.distill import ClassifierModule, DistillationLoss, DistillationModule, KDLoss
from lit_compress.models import EMBEDDED_MODEL, load_model_dir, save_model_dir, student_from_teacher

__version__ = "0.1.0"

__all__ = [
    "EMBEDDED_MODEL",
    "ClassifierModule",
    "DistillationLoss",
    "DistillationModule",
    "KDLoss",
    "TextClassificationDataModule",
    "__version__",
    "load_model_dir",
    "save_model_dir",
    "student_from_teacher",
]
