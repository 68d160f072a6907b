"""Raw examples in, label name and score out, for any artifact (the book's ``OnnxPipeline``).

Examples are texts for a text classifier and preprocessed float images ``(C, H, W)`` for an image classifier;
the artifact directory alone says which (:func:`~lit_compress.export.inputs.inputs_for`: the tokenizer saved
next to a text model, the geometry in an image model's ``config.json``). ``Predictor.from_path`` loads a
Hugging Face / ``save_model_dir`` directory, a ``torch-dynamic-int8`` directory, or an ONNX file (or a directory
holding ``model.onnx``). The benchmark measures deployments through this same class, so its per-call work is
kept minimal: input names are resolved once, encoding returns numpy arrays directly, and
``score = softmax(z)_argmax``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lit_compress.export.inputs import ModelInputs, inputs_for
from lit_compress.export.kernels import OptimizationLevel
from lit_compress.export.torch_int8 import WEIGHTS_FILE as TORCH_INT8_WEIGHTS

ONNX_FILE = "model.onnx"


class Predictor:
    """Base class: encodes examples (:class:`~lit_compress.export.inputs.ModelInputs`), runs a backend, maps the
    argmax to a label name.

    Subclasses implement :meth:`_run` (encoded batch -> logits). ``kind`` names the artifact type.
    """

    kind = "abstract"
    _tensor_type = "np"

    def __init__(self, inputs: ModelInputs, id2label: Mapping[int, str]) -> None:
        self.inputs = inputs
        self.id2label = {int(k): str(v) for k, v in id2label.items()}
        self._labels = [self.id2label.get(i, f"LABEL_{i}") for i in range(max(self.id2label, default=-1) + 1)]

    @property
    def tokenizer(self) -> Any:
        """The tokenizer of a text model (``None`` for an image model)."""
        return self.inputs.tokenizer

    @property
    def max_length(self) -> int | None:
        """Truncation length of a text model (``None`` for an image model)."""
        return self.inputs.max_length

    @staticmethod
    def from_path(
        path: str | os.PathLike[str],
        *,
        threads: int = 1,
        graph_optimization: OptimizationLevel = "all",
        max_length: int | None = None,
        disabled_optimizers: Sequence[str] | None = None,
    ) -> Predictor:
        """Load the artifact at ``path`` (see the module docstring for what is recognised).

        Args:
            path: ONNX file, directory with ``model.onnx``, ``torch-dynamic-int8`` directory or model directory.
            threads: ORT intra-op threads (the book's fixed single thread by default). PyTorch threads are a
                process-wide setting left to the caller (see ``lit_compress.bench.measure.fixed_threads``).
            graph_optimization: ORT graph optimization level.
            max_length: Text truncation length; default the model's ``max_position_embeddings`` (or 512).
            disabled_optimizers: ORT graph fusions not to run on an ONNX artifact; default the ones measured
                slower on this CPU's int8 target (:data:`~lit_compress.export.levers.SLOWER_FUSIONS`).
        """
        src = Path(path)
        if src.suffix == ".onnx" or (src / ONNX_FILE).is_file():
            model_file = src if src.suffix == ".onnx" else src / ONNX_FILE
            return OnnxPredictor.from_file(model_file, threads=threads, graph_optimization=graph_optimization,
                                           max_length=max_length, disabled_optimizers=disabled_optimizers)  # fmt: skip
        if (src / TORCH_INT8_WEIGHTS).is_file() or (src / "config.json").is_file():
            return TorchPredictor.from_dir(src, max_length=max_length)
        raise FileNotFoundError(
            f"{src} is not an artifact: expected an .onnx file, a directory with {ONNX_FILE}, "
            f"{TORCH_INT8_WEIGHTS} or config.json (export one with `lit-compress export`)."
        )

    def logits(self, examples: Any) -> np.ndarray:
        """Logits, shape ``(len(examples), num_labels)`` (one row for a single string or ``(C, H, W)`` image)."""
        return self._run(self.inputs.encode(examples, self._tensor_type))

    def __call__(self, examples: Any) -> list[dict[str, Any]]:
        """``[{"label": name, "score": softmax probability}]``, one entry per example.

        The score of the arg-max class is ``softmax(z)_max = 1 / sum_j exp(z_j - z_max)``.
        """
        logits = self.logits(examples)
        best = logits.argmax(axis=-1)
        scores = 1.0 / np.exp(logits - logits.max(axis=-1, keepdims=True)).sum(axis=-1)
        return [{"label": self._label(int(i)), "score": float(p)} for i, p in zip(best, scores)]

    def _label(self, index: int) -> str:
        return self._labels[index] if index < len(self._labels) else f"LABEL_{index}"

    def _run(self, encoded: Mapping[str, Any]) -> np.ndarray:
        raise NotImplementedError


class OnnxPredictor(Predictor):
    """Runs an ONNX file with ONNX Runtime on the CPU provider."""

    kind = "onnx"
    #: ORT fusions the session was built without (see :meth:`from_file`).
    disabled_optimizers: tuple[str, ...] = ()

    def __init__(self, session: Any, inputs: ModelInputs, id2label: Mapping[int, str]) -> None:
        super().__init__(inputs, id2label)
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]
        self._outputs = [session.get_outputs()[0].name]

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        threads: int = 1,
        graph_optimization: OptimizationLevel = "all",
        max_length: int | None = None,
        tokenizer: Any | None = None,
        disabled_optimizers: Sequence[str] | None = None,
    ) -> OnnxPredictor:
        """Open ``path`` with the given session options (1 inter-op thread, sequential execution); its inputs
        (tokenizer or image geometry) are read from its directory.

        ``disabled_optimizers`` (default: :func:`~lit_compress.export.levers.default_disabled_optimizers` for the
        host's int8 target) names ORT fusions not to run; the ones used are kept in ``disabled_optimizers``.
        """
        from lit_compress.export.levers import SessionLevers, default_disabled_optimizers
        from lit_compress.export.onnx import read_export_metadata

        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}.")
        disabled = tuple(default_disabled_optimizers() if disabled_optimizers is None else disabled_optimizers)
        levers = SessionLevers(graph_optimization=graph_optimization, intra_op_threads=threads,
                               disabled_optimizers=disabled)  # fmt: skip
        session = levers.session(path)
        directory = Path(path).parent
        inputs = inputs_for(directory, tokenizer=tokenizer, max_length=max_length)
        meta = read_export_metadata(path)
        id2label = meta.get("id2label") or _config_labels(directory)
        predictor = cls(session, inputs, id2label)
        predictor.disabled_optimizers = disabled
        return predictor

    def _run(self, encoded: Mapping[str, Any]) -> np.ndarray:
        return self.session.run(self._outputs, {name: encoded[name] for name in self.input_names})[0]


class TorchPredictor(Predictor):
    """Runs a PyTorch classifier (float or dynamic int8) under ``torch.inference_mode``."""

    kind = "torch"
    _tensor_type = "pt"

    def __init__(self, model: Any, inputs: ModelInputs, id2label: Mapping[int, str]) -> None:
        super().__init__(inputs, id2label)
        self.model = model.eval()
        import inspect

        accepted = inspect.signature(model.forward).parameters
        known = ("input_ids", "attention_mask", "token_type_ids", "pixel_values")
        self.input_names = [n for n in known if n in accepted]

    @classmethod
    def from_dir(cls, path: str | os.PathLike[str], *, max_length: int | None = None) -> TorchPredictor:
        """Load a model directory (``load_model_dir``) or a ``torch-dynamic-int8`` directory."""
        src = Path(path)
        if (src / TORCH_INT8_WEIGHTS).is_file():
            from lit_compress.export.torch_int8 import load_torch_dynamic_int8

            model = load_torch_dynamic_int8(src)
        else:
            from lit_compress.models.io import load_model_dir

            model = load_model_dir(src)
        return cls(model, inputs_for(src, max_length=max_length), model.config.id2label)

    def _run(self, encoded: Mapping[str, Any]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.model(**{n: encoded[n] for n in self.input_names if n in encoded})
        return out.logits.float().numpy()


def load_artifact_tokenizer(directory: str | os.PathLike[str]) -> Any:
    """The tokenizer saved in an artifact or model directory (``AutoTokenizer.from_pretrained``)."""
    from transformers import AutoTokenizer

    directory = Path(directory)
    if not any((directory / name).is_file() for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        raise FileNotFoundError(
            f"No tokenizer in {directory}; save it next to the model (tokenizer.save_pretrained) or export with "
            f"export_model, which copies it."
        )
    return AutoTokenizer.from_pretrained(directory)


def _config_labels(directory: Path) -> dict[int, str]:
    config = directory / "config.json"
    labels = json.loads(config.read_text()).get("id2label", {}) if config.is_file() else {}
    return {int(k): v for k, v in labels.items()}
