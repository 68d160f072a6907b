"""The ``export`` verb: a trained model directory in, deployable artifacts with manifests out.

Text and image classifiers go through the same path: a :class:`~lit_compress.export.inputs.ModelInputs`
(:func:`~lit_compress.export.inputs.inputs_for`) turns the examples (texts, or preprocessed ``(C, H, W)`` float
images) into the model's inputs for tracing, the parity and int8 gates and calibration.

Layout written under ``out_dir`` (one self-contained directory per artifact, tokenizer or image geometry
included: text artifacts hold the tokenizer, image artifacts the ``config.json`` with ``num_channels``,
``image_size`` and ``id2label``)::

    out_dir/
      manifest.json              index: source, inputs, artifacts, skipped kinds and why (written last)
      onnx-fp32/model.onnx       + tokenizer (text), config.json, manifest.json
      ort-dynamic-int8/model.onnx
      ort-static-int8/model.onnx
      ort-int4/model.onnx        4-bit weight-only (MatMulNBits; 4-bit tables unpacked by standard ops)
      torch-dynamic-int8/model_int8.pt
      torch-fp32/model.safetensors
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from lit_compress.export.files import onnx_parameter_counts, torch_parameter_counts
from lit_compress.export.inputs import ModelInputs, inputs_for
from lit_compress.export.int8 import (
    OrtQuantization,
    int4_weight_count,
    quantize_ort_dynamic,
    quantize_ort_int4,
    quantize_ort_static,
)
from lit_compress.export.kernels import kernel_report
from lit_compress.export.manifest import (
    ARTIFACT_KINDS,
    MANIFEST_NAME,
    build_manifest,
    library_versions,
    write_manifest,
)
from lit_compress.export.onnx import DEFAULT_OPSET, Exporter, LogitsOnly, export_onnx, read_export_metadata
from lit_compress.export.parity import Int8Gate, check_parity, compare_logits, judge_int8, torch_logits
from lit_compress.export.predictor import ONNX_FILE
from lit_compress.export.torch_int8 import (
    load_torch_dynamic_int8,
    save_torch_dynamic_int8,
    torch_dynamic_int8_unavailable,
)
from lit_compress.quant.targets import AUTO, Int8Target, int8_environment, resolve_target
from lit_compress.utils.io import write_json_atomic

DEFAULT_FORMATS = ("onnx-fp32", "ort-dynamic-int8")
GATE_BATCH_SIZE = 32
CALIBRATION_BATCH_SIZE = 8


def export_model(
    model_dir: str,
    out_dir: str,
    *,
    formats: Sequence[str] = DEFAULT_FORMATS,
    calibration_examples: Sequence[Any] | None = None,
    parity_examples: Sequence[Any] | None = None,
    per_channel: bool = False,
    target: str | Int8Target = AUTO,
    int8_gate: Int8Gate | None = None,
    quantize_embeddings: bool = True,
    embedding_bits: int = 4,
    int4_lookup: str = "unpack",
    opset: int = DEFAULT_OPSET,
    max_length: int = 128,
    atol: float = 1e-4,
    exporter: Exporter = "auto",
    run_config: Mapping[str, Any] | None = None,
    source_checkpoint: str | None = None,
) -> Path:
    """Export the model in ``model_dir`` to the requested artifact kinds, each with a manifest.

    Every ONNX export passes the fp32 parity gate (``max |Δlogit| <= atol`` against PyTorch on
    ``parity_examples``) before anything is quantized. ``ort-dynamic-int8`` is gated by ``int8_gate`` against the
    fake-quantized PyTorch model that simulates it (:func:`~lit_compress.quant.export.dynamic_int8_reference`)
    over all ``parity_examples``; the other low-bit kinds have no simulating model (ORT's static calibration,
    4-bit blocks, torch's engine) and record the same figures against fp32 without gating. Every manifest
    records the CPU's int8 features, the int8 target and the inputs (kind, names, shapes). Kinds the installed
    libraries cannot produce, or that do not apply to the model (``ort-int4`` without MatMul weights or
    embeddings, ``torch-dynamic-int8`` on a model whose weights are mostly convolutions), are skipped with the
    reason recorded.

    Image models (config with ``num_channels`` and ``image_size``, no tokenizer: ViT, ``ImageClassifier``)
    take preprocessed float images ``(C, H, W)`` as examples and export a ``pixel_values`` input with a dynamic
    batch axis; their ``Conv`` layers are quantized too (``ConvInteger`` dynamic, ``QLinearConv`` static).

    Args:
        model_dir: A ``save_model_dir`` / ``save_pretrained`` directory (holding the tokenizer of a text model).
        out_dir: Output directory (see the module docstring for its layout).
        formats: Any of ``torch-fp32``, ``onnx-fp32``, ``ort-dynamic-int8``, ``ort-static-int8``, ``ort-int4``,
            ``torch-dynamic-int8``.
        calibration_examples: Examples for static quantization (a few hundred from the training split):
            texts, or preprocessed ``(C, H, W)`` images (a ``(N, C, H, W)`` tensor or a sequence of images).
        parity_examples: Real examples for the gates, ideally 256 or more from validation (default: fixed
            sample sentences or seeded random images, plus derived batches).
        per_channel: Per-output-channel weight scales for the ORT int8 kinds.
        target: int8 deployment target: ``"auto"`` (this CPU) or a preset of
            :data:`~lit_compress.quant.targets.TARGETS` (``avx2``: 7-bit weights, whose kernel cannot saturate).
        int8_gate: Bounds of the int8 gate (default :class:`~lit_compress.export.parity.Int8Gate`).
        quantize_embeddings: Quantize the embedding tables too (most of a small model's size).
        embedding_bits: 4 (blockwise, the smallest file) or 8 bits per embedding value in the ORT int8 kinds
            (see ``OrtQuantization`` for measured sizes and accuracy).
        int4_lookup: How 4-bit tables are looked up: ``"unpack"`` (standard ops, bit-identical and faster,
            :mod:`~lit_compress.export.int4_lookup`) or ``"kernel"`` (ORT's ``GatherBlockQuantized``).
        opset: ONNX opset.
        max_length: Truncation length of texts for calibration and parity inputs (ignored for images).
        atol: Tolerance of the fp32 parity gate.
        exporter: ``auto`` (dynamo, legacy fallback), ``dynamo`` or ``legacy``.
        run_config: Resolved run configuration recorded in each manifest (not named ``config``, which the
            command line reserves for ``--config FILE``).
        source_checkpoint: Lightning checkpoint the model directory came from, recorded in the manifests.

    Returns:
        Path of the index ``manifest.json`` in ``out_dir``.
    """
    kinds = _validate_formats(formats, calibration_examples)
    from lit_compress.models.io import load_model_dir

    model, inputs = load_model_dir(model_dir), inputs_for(model_dir, max_length=max_length)
    out = Path(out_dir)
    (out / MANIFEST_NAME).unlink(missing_ok=True)  # an index from an earlier export must not outlive a crash
    int8_target = resolve_target(target)
    # an image model has no embedding tables (ViT's patch embedding is a Conv, its positions a Parameter)
    tables = quantize_embeddings and any(isinstance(m, nn.Embedding) for m in model.modules())
    scheme = OrtQuantization(per_channel=per_channel, quantize_embeddings=tables,
                             embedding_bits=embedding_bits, int4_lookup=int4_lookup,
                             reduce_range=int8_target.reduce_range,
                             quantize_convs=_has_convs(model))  # fmt: skip
    source = source_record(model_dir, source_checkpoint)
    job = _Job(model, inputs, out, scheme, source, dict(run_config or {}), inputs.parity_batches(parity_examples),
               atol, target=int8_target, int8_gate=int8_gate or Int8Gate(),
               gate_batches=gate_batches(inputs, parity_examples))  # fmt: skip
    artifacts, skipped = {}, {}
    with tempfile.TemporaryDirectory(prefix="lc-export-") as staging:
        fp32 = None
        if any(k.startswith(("onnx", "ort")) for k in kinds):
            fp32 = job.export_fp32(out if "onnx-fp32" in kinds else Path(staging), opset, exporter)
        for kind in kinds:
            reason = _unavailable(kind, model, fp32)
            if reason:
                skipped[kind] = reason
                warnings.warn(f"skipping {kind}: {reason}", stacklevel=2)
                continue
            artifacts[kind] = job.produce(kind, fp32, calibration_examples)
    index = {"schema": "lit_compress.export/1", "source": job.source, "config": job.config,
             "inputs": inputs.describe(), "versions": library_versions(), "int8": int8_environment(int8_target),
             "artifacts": artifacts, "skipped": skipped,
             "warnings": [w for a in artifacts.values() for w in a["warnings"]]}  # fmt: skip
    return write_json_atomic(out / MANIFEST_NAME, index)


@dataclass
class _Job:
    """State shared by the artifacts of one export (model, its inputs, parity batches, options)."""

    model: nn.Module
    inputs: ModelInputs
    out: Path
    scheme: OrtQuantization
    source: dict[str, Any]
    config: dict[str, Any]
    parity_batches: list[dict[str, Tensor]]  # the last one is also the export sample
    atol: float = 1e-4
    target: Int8Target | None = None
    int8_gate: Int8Gate = field(default_factory=Int8Gate)
    gate_batches: list[dict[str, Tensor]] | None = None
    fp32_report: dict[str, Any] | None = None

    def _gate_inputs(self) -> list[dict[str, Tensor]]:
        return self.gate_batches or self.parity_batches

    def export_fp32(self, root: Path, opset: int, exporter: Exporter) -> Path:
        path = export_onnx(self.model, root / "onnx-fp32" / ONNX_FILE, self.parity_batches[-1], opset=opset,
                           atol=self.atol, parity_inputs=self.parity_batches, exporter=exporter)  # fmt: skip
        self.fp32_report = read_export_metadata(path).get("parity")
        return path

    @property
    def tokenizer(self) -> Any:
        """The text model's tokenizer (``None`` for an image model)."""
        return self.inputs.tokenizer

    def produce(self, kind: str, fp32: Path | None, calibration_examples: Sequence[Any] | None) -> dict[str, Any]:
        directory = self.out / kind
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MANIFEST_NAME).unlink(missing_ok=True)  # written again last, once the artifact is complete
        producers = {"torch-fp32": self._torch_fp32, "onnx-fp32": self._onnx_fp32,
                     "ort-dynamic-int8": self._ort_dynamic_int8, "ort-static-int8": self._ort_static_int8,
                     "ort-int4": self._ort_int4, "torch-dynamic-int8": self._torch_dynamic_int8}  # fmt: skip
        manifest = producers[kind](directory, fp32, calibration_examples)
        path = write_manifest(directory, manifest)
        return {"dir": kind, "manifest": str(path.relative_to(self.out)), "size_bytes": manifest["size_bytes"],
                "gzip_bytes": manifest["gzip_bytes"], "runs_int8": manifest["runs_int8"],
                "warnings": manifest["warnings"]}  # fmt: skip

    def _torch_fp32(self, directory: Path, fp32: Path | None, texts: Any) -> dict[str, Any]:
        from lit_compress.models.io import save_model_dir

        save_model_dir(self.model, directory, self.tokenizer)
        return self._manifest("torch-fp32", directory, torch_parameter_counts(self.model), None, None, None)

    def _onnx_fp32(self, directory: Path, fp32: Path | None, texts: Any) -> dict[str, Any]:
        assert fp32 is not None
        self._sidecars(directory)
        return self._manifest("onnx-fp32", fp32, onnx_parameter_counts(fp32), None, self.fp32_report,
                              kernel_report(fp32, expect_int8=False))  # fmt: skip

    def _ort_dynamic_int8(self, directory: Path, fp32: Path | None, texts: Any) -> dict[str, Any]:
        assert fp32 is not None
        from lit_compress.quant.export import dynamic_int8_reference

        path = quantize_ort_dynamic(fp32, directory / ONNX_FILE, self.scheme)
        convs = {"convs": True, "example_inputs": self.parity_batches[-1]} if "Conv" in self.scheme.op_types else {}
        reference = dynamic_int8_reference(self.model, self.scheme.per_channel, self.scheme.reduce_range,
                                           self.scheme.embedding_storage, self.scheme.block_size, **convs)
        try:
            return self._ort_int8("ort-dynamic-int8", path, {"scheme": "ort-dynamic", **self.scheme.to_dict()},
                                  reference=reference)  # fmt: skip
        except Exception:
            path.unlink(missing_ok=True)  # a refused artifact must not look complete
            raise

    def _ort_static_int8(self, directory: Path, fp32: Path | None, examples: Sequence[Any] | None
                         ) -> dict[str, Any]:  # fmt: skip
        assert fp32 is not None and examples is not None and len(examples) > 0
        batches = [{k: v.numpy() for k, v in b.items()} for b in self.inputs.batches(examples, CALIBRATION_BATCH_SIZE)]
        # static QDQ has no simulating model to gate against, so convs are quantized whenever the model has them
        static = replace(self.scheme, op_types=[], quantize_convs=_has_convs(self.model))
        path = quantize_ort_static(fp32, directory / ONNX_FILE, batches, static)
        scheme = {"scheme": "ort-static-qdq", "calibration_examples": len(examples), **static.to_dict()}
        return self._ort_int8("ort-static-int8", path, scheme)

    def _ort_int4(self, directory: Path, fp32: Path | None, texts: Any) -> dict[str, Any]:
        assert fp32 is not None
        path = quantize_ort_int4(fp32, directory / ONNX_FILE, self.scheme)
        scheme = {"scheme": "ort-weight-only-int4", "block_size": self.scheme.block_size, "symmetric": True,
                  "accuracy_level": 4, "embeddings": "int4" if self.scheme.quantize_embeddings else "fp32"}  # fmt: skip
        return self._ort_int8("ort-int4", path, scheme)

    def _torch_dynamic_int8(self, directory: Path, fp32: Path | None, texts: Any) -> dict[str, Any]:
        weights = save_torch_dynamic_int8(self.model, directory, self.tokenizer)
        quantized = load_torch_dynamic_int8(directory)
        batches = self._gate_inputs()
        reference = torch_logits(LogitsOnly(self.model), batches)
        parity = compare_logits(reference, torch_logits(LogitsOnly(quantized), batches), batches, atol=self.atol,
                                gate=False, what="torch dynamic int8")  # fmt: skip
        parity = {**judge_int8(parity, reference, self.int8_gate, "torch dynamic int8", False),
                  "gated": False, "reference": "fp32 (torch's own int8 engine: no simulating model)"}  # fmt: skip
        scheme = {"scheme": "torch-dynamic", "weight_type": "qint8", "per_channel": False, "modules": ["Linear"]}
        return self._manifest("torch-dynamic-int8", weights, torch_parameter_counts(quantized), scheme, parity,
                              None)  # fmt: skip

    def _ort_int8(self, kind: str, path: Path, scheme: dict[str, Any], reference: nn.Module | None = None
                  ) -> dict[str, Any]:  # fmt: skip
        """Sidecars, the int8 gate (or, without a simulating ``reference``, the same figures against fp32) and
        the kernel check of an ORT low-bit artifact."""
        self._sidecars(path.parent)
        batches = self._gate_inputs()
        gated = reference is not None
        parity = check_parity(LogitsOnly(reference if gated else self.model), path, batches, atol=self.atol,
                              gate=gated, input_names=list(batches[0]), int8_gate=self.int8_gate,
                              what=f"{kind} ({path})")  # fmt: skip
        parity["reference"] = ("fake-quantized PyTorch model (int8 weights, dynamic uint8 inputs, embeddings as "
                               f"stored: {self.scheme.embedding_storage})" if gated
                               else "fp32 (no simulating model for this scheme): recorded, not gated")  # fmt: skip
        parity["gated"] = gated
        scheme = {**scheme, "target": self.target.to_dict() if self.target else None}
        kernels = kernel_report(path, expect_int8=True)
        return self._manifest(kind, path, onnx_parameter_counts(path), scheme, parity, kernels)

    def _manifest(self, kind: str, artifact: Path, counts: Mapping[str, int], scheme: Any, parity: Any,
                  kernels: Mapping[str, Any] | None) -> dict[str, Any]:  # fmt: skip
        return artifact_manifest(kind, artifact, parameters=counts, source=self.source, config=self.config,
                                 quantization=scheme, parity=parity, kernels=kernels, target=self.target,
                                 inputs=self.inputs.describe())  # fmt: skip

    def _sidecars(self, directory: Path) -> None:
        """Tokenizer (text) and config (image geometry, labels) next to an ONNX file: a deployable unit."""
        self.inputs.save(directory)
        self.model.config.save_pretrained(directory)


def source_record(model_dir: str | Path, checkpoint: str | None = None, **extra: Any) -> dict[str, Any]:
    """The ``source`` block of a manifest: the resolved model directory, its checkpoint, anything ``extra``."""
    return {"model_dir": str(Path(model_dir).resolve()), "checkpoint": checkpoint, **extra}


def artifact_manifest(
    kind: str,
    artifact: Path,
    *,
    parameters: Mapping[str, int],
    source: Mapping[str, Any],
    config: Mapping[str, Any],
    quantization: Mapping[str, Any] | None = None,
    parity: Mapping[str, Any] | None = None,
    kernels: Mapping[str, Any] | None = None,
    target: Int8Target | None = None,
    inputs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of one artifact as every exporter of lit_compress writes it (``export_model`` and the main
    job's QAT Q/DQ artifact): the ONNX export metadata read back from the file, the kernel report's warning,
    the CPU's int8 features, the int8 target and the inputs (``ModelInputs.describe()``: kind, names, shapes;
    see :func:`~lit_compress.export.manifest.build_manifest`)."""
    onnx_meta = None
    if artifact.suffix == ".onnx":
        meta = read_export_metadata(artifact)
        onnx_meta = {k: meta.get(k) for k in ("opset", "exporter", "inputs", "dynamo_error") if k in meta}
    warnings_ = [kernels["warning"]] if kernels and kernels.get("warning") else []
    return build_manifest(kind, artifact, source=source, config=config, onnx=onnx_meta,  # type: ignore[arg-type]
                          quantization=quantization, parameters=parameters, parity=parity, kernels=kernels,
                          warnings=warnings_, int8=int8_environment(target), inputs=inputs)  # fmt: skip


def _validate_formats(formats: Sequence[str], calibration_examples: Sequence[Any] | None) -> list[str]:
    if isinstance(formats, str):
        formats = [formats]
    unknown = [f for f in formats if f not in ARTIFACT_KINDS]
    if unknown or not formats:
        raise ValueError(f"Unknown export formats {unknown or formats}; choose from {list(ARTIFACT_KINDS)}.")
    if "ort-static-int8" in formats and (calibration_examples is None or len(calibration_examples) == 0):
        raise ValueError("ort-static-int8 needs calibration_examples (a few hundred training texts or images).")
    return list(dict.fromkeys(formats))


def _unavailable(kind: str, model: nn.Module, fp32: Path | None) -> str | None:
    """Why ``kind`` cannot be produced (libraries) or does not apply to ``model``; ``None`` when it can."""
    if kind == "torch-dynamic-int8":
        linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
        conv = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d))
        if conv > linear:
            return (f"torch dynamic int8 quantizes nn.Linear only, and {conv} of this model's {conv + linear} "
                    f"Linear/Conv2d weights are convolutions that would stay fp32; use ort-dynamic-int8 or "
                    f"ort-static-int8")  # fmt: skip
        return torch_dynamic_int8_unavailable()
    if kind == "ort-int4" and fp32 is not None and int4_weight_count(fp32) == 0:
        return ("4-bit weight-only quantizes MatMul weights and embedding tables, and this model has neither "
                "(its Conv and Gemm layers would stay fp32); use ort-dynamic-int8 or ort-static-int8")
    return None


def _has_convs(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def gate_batches(inputs: ModelInputs, examples: Sequence[Any] | None) -> list[dict[str, Tensor]] | None:
    """All ``examples`` (texts or preprocessed images) in batches of :data:`GATE_BATCH_SIZE` (texts padded per
    batch) for the int8 gate; ``None`` without examples."""
    if examples is None or len(examples) == 0:
        return None
    return inputs.batches(examples, GATE_BATCH_SIZE)
