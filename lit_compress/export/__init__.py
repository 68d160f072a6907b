"""Export: ONNX with a parity gate, int8 artifacts (ORT dynamic/static, torch dynamic), manifests, predictor,
for text and image classifiers alike (:mod:`lit_compress.export.inputs`)."""

from lit_compress.export.api import export_model
from lit_compress.export.files import (
    artifact_files,
    gzip_size,
    onnx_parameter_counts,
    size_bytes,
    torch_parameter_counts,
)
from lit_compress.export.inputs import ImageInputs, ModelInputs, TextInputs, inputs_for, is_image_config
from lit_compress.export.int8 import (
    OrtQuantization,
    TokenizedBatches,
    int4_weight_count,
    quantize_ort_dynamic,
    quantize_ort_int4,
    quantize_ort_static,
    tokenize_batches,
)
from lit_compress.export.kernels import INT8_COMPUTE_OPS, NoInt8KernelWarning, kernel_report, optimized_op_counts
from lit_compress.export.manifest import (
    ARTIFACT_KINDS,
    build_manifest,
    library_versions,
    read_manifest,
    write_manifest,
)
from lit_compress.export.onnx import LogitsOnly, export_onnx, read_export_metadata
from lit_compress.export.parity import ParityError, check_parity, compare_logits
from lit_compress.export.predictor import OnnxPredictor, Predictor, TorchPredictor, load_artifact_tokenizer
from lit_compress.export.torch_int8 import (
    load_torch_dynamic_int8,
    quantize_torch_dynamic,
    save_torch_dynamic_int8,
    torch_dynamic_int8_unavailable,
)

__all__ = [
    "ARTIFACT_KINDS",
    "INT8_COMPUTE_OPS",
    "ImageInputs",
    "LogitsOnly",
    "ModelInputs",
    "NoInt8KernelWarning",
    "OnnxPredictor",
    "OrtQuantization",
    "ParityError",
    "Predictor",
    "TextInputs",
    "TokenizedBatches",
    "TorchPredictor",
    "artifact_files",
    "build_manifest",
    "check_parity",
    "compare_logits",
    "export_model",
    "export_onnx",
    "gzip_size",
    "inputs_for",
    "int4_weight_count",
    "is_image_config",
    "kernel_report",
    "library_versions",
    "load_artifact_tokenizer",
    "load_torch_dynamic_int8",
    "onnx_parameter_counts",
    "optimized_op_counts",
    "quantize_ort_dynamic",
    "quantize_ort_int4",
    "quantize_ort_static",
    "quantize_torch_dynamic",
    "read_export_metadata",
    "read_manifest",
    "save_torch_dynamic_int8",
    "size_bytes",
    "tokenize_batches",
    "torch_dynamic_int8_unavailable",
    "torch_parameter_counts",
    "write_manifest",
]
