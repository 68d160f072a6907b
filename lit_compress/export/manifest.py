"""The JSON manifest that travels with every artifact: what it is, where it came from, how it was checked.

An artifact directory is complete only once its ``manifest.json`` exists: the manifest is written last and
atomically, so a crash mid-export leaves a directory that is visibly unfinished.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from lit_compress.export.files import artifact_files, file_table, gzip_size, size_bytes
from lit_compress.utils.io import write_json_atomic

MANIFEST_NAME = "manifest.json"
SCHEMA = "lit_compress.artifact/1"
ArtifactKind = Literal[
    "torch-fp32", "onnx-fp32", "ort-dynamic-int8", "ort-static-int8", "ort-int4", "torch-dynamic-int8"
]
ARTIFACT_KINDS: tuple[str, ...] = ("torch-fp32", "onnx-fp32", "ort-dynamic-int8", "ort-static-int8", "ort-int4",
                                   "torch-dynamic-int8")  # fmt: skip
_PACKAGES = ("torch", "onnx", "onnxruntime", "onnxscript", "transformers", "lightning", "numpy", "lit-compress")


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries an artifact depends on (``None`` when not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def build_manifest(
    kind: ArtifactKind,
    artifact: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    source: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    onnx: Mapping[str, Any] | None = None,
    quantization: Mapping[str, Any] | None = None,
    parameters: Mapping[str, int] | None = None,
    parity: Mapping[str, Any] | None = None,
    kernels: Mapping[str, Any] | None = None,
    warnings: Sequence[str] = (),
    int8: Mapping[str, Any] | None = None,
    inputs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Describe one artifact.

    Args:
        kind: One of :data:`ARTIFACT_KINDS`.
        artifact: The artifact's main file (``model.onnx``, ``model_int8.pt``) or directory.
        root: Directory that relative paths are given against (default: the artifact's directory).
        source: Where it came from, e.g. ``{"model_dir": ..., "checkpoint": ...}``.
        config: The resolved configuration of the run that produced it.
        onnx: ``{"opset", "exporter", ...}`` for ONNX artifacts.
        quantization: The quantization scheme (``None`` for float artifacts).
        parameters: ``{"parameters", "nonzero"}``.
        parity: Parity report against the PyTorch model.
        kernels: Kernel report of ORT's optimized graph (see :func:`~lit_compress.export.kernels.kernel_report`).
        warnings: Problems found while producing it (e.g. an int8 artifact that runs no int8 kernel).
        int8: The CPU's int8 features and the int8 target
            (:func:`~lit_compress.quant.targets.int8_environment`); default: this CPU and its own preset.
        inputs: What the artifact takes (``ModelInputs.describe()``): ``{"kind": "text" | "image", "names",
            "shape": {name: ["batch", ...]}, "dtype"}``.
    """
    from lit_compress.quant.targets import int8_environment

    if kind not in ARTIFACT_KINDS:
        raise ValueError(f"Unknown artifact kind {kind!r}; expected one of {ARTIFACT_KINDS}.")
    path = Path(artifact)
    base = Path(root) if root is not None else (path if path.is_dir() else path.parent)
    files = artifact_files(path)
    return {
        "schema": SCHEMA,
        "kind": kind,
        "artifact": os.path.relpath(path, base),
        "files": file_table(files, base),
        "size_bytes": size_bytes(files),
        "gzip_bytes": gzip_size(files),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": dict(source or {}),
        "config": dict(config or {}),
        "versions": library_versions(),
        "int8": dict(int8) if int8 is not None else int8_environment(),
        "inputs": dict(inputs) if inputs is not None else None,
        "onnx": dict(onnx) if onnx is not None else None,
        "quantization": dict(quantization) if quantization is not None else None,
        "parameters": dict(parameters or {}),
        "parity": dict(parity) if parity is not None else None,
        "kernels": dict(kernels) if kernels is not None else None,
        "runs_int8": None if kernels is None else kernels.get("runs_int8"),
        "warnings": list(warnings),
    }


def write_manifest(directory: str | os.PathLike[str], manifest: Mapping[str, Any]) -> Path:
    """Write ``manifest`` atomically as ``<directory>/manifest.json``."""
    return write_json_atomic(Path(directory) / MANIFEST_NAME, dict(manifest))


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a manifest from its file or from the artifact directory holding it."""
    import json

    src = Path(path)
    src = src / MANIFEST_NAME if src.is_dir() else src
    if not src.is_file():
        raise FileNotFoundError(f"No {MANIFEST_NAME} at {src}: the artifact is incomplete or was not exported.")
    return json.loads(src.read_text())
