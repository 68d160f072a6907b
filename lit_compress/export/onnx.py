"""Export a classifier to ONNX with dynamic axes (texts: batch and sequence; images: batch), gated by parity.

Found by trial on torch 2.13: ``torch.onnx.export`` defaults to the dynamo exporter and writes weights to a
``.onnx.data`` sidecar unless ``external_data=False``; dynamic axes are given as ``dynamic_shapes`` built with
``torch.export.Dim``; the top module must be in eval mode. Dynamo exports carry per-node stack traces
(``metadata_props``) and ``graph.value_info`` that triple the size of a small model and break ONNX Runtime's
quantization tools, so they are stripped here. What was done is recorded in the model's own
``metadata_props`` (``lit_compress.*`` keys, see :func:`read_export_metadata`), so the file describes itself.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lit_compress.export.inputs import INPUT_AXES
from lit_compress.export.parity import Int8Gate, check_parity, derived_parity_inputs
from lit_compress.utils.io import atomic_path

log = logging.getLogger(__name__)

#: Opset 20 has ``Gelu``: the dynamo exporter writes one node where opset 18 spells it out in five (Div, Erf, Add,
#: Mul, Mul), which ORT does not fuse back; 2-4 % faster in ORT dynamic int8 for the main job's student
#: (onnxruntime 1.32, 1 thread, AMX CPU; ``docs/speed.md``).
DEFAULT_OPSET = 20
INPUT_ORDER = ("input_ids", "attention_mask", "token_type_ids", "pixel_values")
META_PREFIX = "lit_compress."

Exporter = Literal["auto", "dynamo", "legacy"]


class LogitsOnly(nn.Module):
    """Wrap a Hugging Face classifier so the exported graph has a single ``logits`` output.

    Text classifiers take ``input_ids``, ``attention_mask`` (and optionally ``token_type_ids``), image
    classifiers ``pixel_values``; only the inputs given are passed on. Also accepts plain modules that return
    a tensor or a tuple whose first item is the logits.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        pixel_values: Tensor | None = None,
    ) -> Tensor:
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
                 "pixel_values": pixel_values}  # fmt: skip
        out = self.model(**{k: v for k, v in given.items() if v is not None})
        if isinstance(out, Tensor):
            return out
        logits = getattr(out, "logits", None)
        return logits if logits is not None else out[0]


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    sample_inputs: Mapping[str, Tensor],
    *,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    atol: float = 1e-4,
    parity_inputs: Sequence[Mapping[str, Tensor]] | None = None,
    exporter: Exporter = "auto",
    strip_metadata: bool = True,
    id2label: Mapping[int, str] | None = None,
    int8_gate: Int8Gate | None = None,
    eager_attention: bool = True,
) -> Path:
    """Export ``model`` to a single self-contained ONNX file whose only output is ``logits``.

    The export is written to a temporary file and renamed onto ``path`` only after the parity gate passed,
    so a failed export never leaves a file that looks complete.

    Args:
        model: A classifier (``model(input_ids=..., attention_mask=...).logits`` or
            ``model(pixel_values=...).logits``), exported in eval mode (its training flag is restored afterwards).
        path: Destination ``.onnx`` file.
        sample_inputs: Example inputs keyed by name: ``input_ids``, ``attention_mask``, optionally
            ``token_type_ids`` (batch and sequence axes exported as dynamic), or ``pixel_values`` ``(B, C, H, W)``
            (batch axis dynamic, see :data:`~lit_compress.export.inputs.INPUT_AXES`). A batch of one is repeated
            to two rows so the exporter does not specialise the batch axis to 1.
        opset: ONNX opset version.
        check: Run the parity gate (ONNX Runtime against PyTorch) before publishing the file.
        atol: Largest allowed ``max |Δlogit|`` of the parity gate.
        parity_inputs: Inputs for the gate, ideally real examples (tokenized texts with padding); by default
            batches of other sizes (and lengths, with padding) are derived from ``sample_inputs``.
        exporter: ``"dynamo"``, ``"legacy"`` (TorchScript, ``dynamic_axes``, opset at most 17), or ``"auto"``:
            dynamo, falling back to legacy if dynamo fails. The one used is recorded in the file's metadata.
        strip_metadata: Drop per-node debug metadata, doc strings and ``graph.value_info``.
        id2label: Label names stored in the file; defaults to ``model.config.id2label`` when present.
        int8_gate: For a model holding int8 Q/DQ ops: judge the export by argmax agreement and logit steps
            (:class:`~lit_compress.export.parity.Int8Gate`) instead of ``atol``.
        eager_attention: Export a Hugging Face model with its ``eager`` attention (matmul, softmax, matmul)
            instead of its runtime choice (usually SDPA, whose export adds mask plumbing: ``IsNaN``/``Where``,
            boolean masks): 36 fewer nodes and 7-9 % faster in ORT dynamic int8 for the main job's 3-layer
            student (onnxruntime 1.32, 1 thread, AMX CPU; ``docs/speed.md``). The parity gate checks the export
            against the same attention; the model's own setting is restored afterwards.

    Returns:
        ``path``.

    Raises:
        ParityError: ``max |Δlogit|`` exceeds ``atol`` (the message says where).
        Int8GateError: ``int8_gate`` given and the export fails it.
    """
    names = _input_names(sample_inputs)
    inputs = _two_row_batch({k: sample_inputs[k] for k in names})
    with _eval_mode(model), _attention(model, "eager" if eager_attention else None):
        wrapper = LogitsOnly(model).eval()
        proto, used, error = _export_proto(wrapper, inputs, names, opset, exporter)
        if strip_metadata:
            strip_onnx_metadata(proto)
        _name_dynamic_axes(proto, names)
        props = {"exporter": used, "opset": str(_default_opset(proto)), "inputs": json.dumps(names)}
        labels = id2label if id2label is not None else getattr(getattr(model, "config", None), "id2label", None)
        if labels:
            props["id2label"] = json.dumps({str(int(k)): str(v) for k, v in labels.items()})
        if error:
            props["dynamo_error"] = error[:2000]
        if check:
            batches = list(parity_inputs) if parity_inputs is not None else derived_parity_inputs(inputs)
            report = check_parity(wrapper, proto.SerializeToString(), batches, atol=atol, input_names=names,
                                  int8_gate=int8_gate, what=f"ONNX export {Path(path).parent.name}/{Path(path).name}")
            props["parity"] = json.dumps(report)
    set_export_metadata(proto, props)
    import onnx

    with atomic_path(path) as tmp:
        onnx.save_model(proto, str(tmp))
    return Path(path)


def read_export_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the ``lit_compress.*`` metadata of an ONNX file (JSON values decoded), without weights."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    meta: dict[str, Any] = {}
    for prop in proto.metadata_props:
        if prop.key.startswith(META_PREFIX):
            key = prop.key[len(META_PREFIX) :]
            meta[key] = _maybe_json(prop.value)
    meta.setdefault("opset", _default_opset(proto))
    return meta


def set_export_metadata(proto: Any, props: Mapping[str, str]) -> None:
    """Set ``lit_compress.<key>`` entries of ``proto.metadata_props`` (replacing existing keys)."""
    keys = {META_PREFIX + k: v for k, v in props.items()}
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in keys]
    del proto.metadata_props[:]
    for key, value in [*kept, *keys.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def strip_onnx_metadata(proto: Any) -> None:
    """Remove ``graph.value_info``, per-node ``metadata_props`` and doc strings (in place).

    ONNX Runtime's quantizers fail on the ``value_info`` a dynamo export carries; the node metadata (stack
    traces) is pure size. Neither changes what the graph computes.
    """
    del proto.graph.value_info[:]
    proto.graph.doc_string = ""
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""


def _export_proto(
    wrapper: nn.Module, inputs: dict[str, Tensor], names: list[str], opset: int, exporter: Exporter
) -> tuple[Any, str, str | None]:
    if exporter not in ("auto", "dynamo", "legacy"):
        raise ValueError(f"exporter={exporter!r} is not one of 'auto', 'dynamo', 'legacy'.")
    if exporter == "legacy":
        return _export_legacy(wrapper, inputs, names, opset), "legacy", None
    try:
        return _export_dynamo(wrapper, inputs, names, opset), "dynamo", None
    except Exception as err:  # the dynamo exporter raises many types; "auto" falls back on any of them
        if exporter == "dynamo":
            raise
        log.warning("dynamo ONNX export failed (%s); falling back to the legacy exporter", err)
        return _export_legacy(wrapper, inputs, names, opset), "legacy", f"{type(err).__name__}: {err}"


def _export_dynamo(wrapper: nn.Module, inputs: dict[str, Tensor], names: list[str], opset: int) -> Any:
    dims = {"batch": torch.export.Dim("batch"), "sequence": torch.export.Dim("sequence")}
    shapes = {name: {axis: dims[label] for axis, label in INPUT_AXES[name].items()} for name in names}
    with _quiet():
        program = torch.onnx.export(
            wrapper, (), None, kwargs=inputs, dynamo=True, external_data=False, dynamic_shapes=shapes,
            input_names=names, output_names=["logits"], opset_version=opset, verbose=False,
        )  # fmt: skip
    return program.model_proto


def _export_legacy(wrapper: nn.Module, inputs: dict[str, Tensor], names: list[str], opset: int) -> Any:
    import onnx

    axes = {name: dict(INPUT_AXES[name]) for name in names}
    axes["logits"] = {0: "batch"}
    buffer = io.BytesIO()
    with _quiet():
        torch.onnx.export(
            wrapper, (), buffer, kwargs=inputs, dynamo=False, input_names=names,
            output_names=["logits"], dynamic_axes=axes, opset_version=min(opset, 17),
        )  # fmt: skip
    return onnx.load_model_from_string(buffer.getvalue())


def _default_opset(proto: Any) -> int | None:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


def _input_names(sample_inputs: Mapping[str, Tensor]) -> list[str]:
    unknown = set(sample_inputs) - set(INPUT_ORDER)
    text = {"input_ids", "attention_mask"} <= set(sample_inputs) and "pixel_values" not in sample_inputs
    image = set(sample_inputs) == {"pixel_values"}
    if unknown or not (text or image):
        raise ValueError(
            f"sample_inputs must hold 'input_ids' and 'attention_mask' (optionally 'token_type_ids'), or only "
            f"'pixel_values'; got {sorted(sample_inputs)}. Drop other keys (e.g. 'labels') before exporting."
        )
    return [n for n in INPUT_ORDER if n in sample_inputs]


def _two_row_batch(inputs: dict[str, Tensor]) -> dict[str, Tensor]:
    """Repeat every dynamic axis of length 1 to length 2 (the exporter would specialise it to 1)."""
    out = {}
    for name, value in inputs.items():
        axes = INPUT_AXES[name]
        if value.dim() != (2 if len(axes) == 2 else 4):
            expected = "2-D (batch, sequence)" if len(axes) == 2 else "4-D (batch, channels, height, width)"
            raise ValueError(f"sample input {name!r} must be {expected}; got shape {tuple(value.shape)}.")
        out[name] = value.repeat(*[2 if axis in axes and size == 1 else 1 for axis, size in enumerate(value.shape)])
    return out


def _name_dynamic_axes(proto: Any, names: list[str]) -> None:
    for value in proto.graph.input:
        if value.name in names:
            dims = value.type.tensor_type.shape.dim
            for axis, label in INPUT_AXES[value.name].items():
                dims[axis].dim_param = label
    for value in proto.graph.output:
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 2:
            dims[0].dim_param = "batch"


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside the block; afterwards every submodule gets its own previous mode back."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def _attention(model: nn.Module, implementation: str | None) -> Iterator[None]:
    """A Hugging Face model's attention implementation switched inside the block (``None``: left as it is)."""
    config = getattr(model, "config", None)
    previous = getattr(config, "_attn_implementation", None)
    if implementation is None or previous in (None, implementation) or not hasattr(model, "set_attn_implementation"):
        yield
        return
    try:
        model.set_attn_implementation(implementation)
    except (ValueError, ImportError) as error:  # a family without that implementation exports as it runs
        log.info("attention left as %s for export: %s", previous, error)
        yield
        return
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


#: Logs "torchvision is not installed. Skipping torchvision::nms" (and roi_align, roi_pool, deform_conv2d)
#: each time the dynamo exporter builds its op registry. Harmless here: those are detection ops that no
#: text classifier contains, and the registry simply leaves them out.
_REGISTRATION_LOG = "torch.onnx._internal.exporter._registration"


#: Logs "Skipping constant folding for op LayerNormalization with multiple outputs" on DeBERTa-v2/v3 graphs
#: (its LayerNorm nodes also output mean and inverse std): the optimizer leaves those nodes as they are.
_FOLDING_LOG = "onnxscript.optimizer._constant_folding"


def _drop_torchvision_skips(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("torchvision is not installed")


def _drop_multi_output_folding(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Skipping constant folding for op LayerNormalization")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' progress prints and warnings (stdout, ``warnings``, the known harmless log lines)."""
    filters = ((logging.getLogger(_REGISTRATION_LOG), _drop_torchvision_skips),
               (logging.getLogger(_FOLDING_LOG), _drop_multi_output_folding))  # fmt: skip
    for logger, drop in filters:
        logger.addFilter(drop)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, drop in filters:
            logger.removeFilter(drop)


def _maybe_json(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value
