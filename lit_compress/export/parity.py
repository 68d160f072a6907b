"""Parity between an exported artifact and the PyTorch model it came from.

The gate compares logits on the same inputs: ``max |Δlogit| = max_{b,i,c} |z_torch - z_artifact|`` over every
parity batch ``b``, row ``i`` and class ``c``. An fp32 export must stay within ``atol`` (1e-4 by default).

An int8 artifact is judged against the PyTorch model that *simulates* it (fake-quantized weights and inputs on
the same grid, see :mod:`lit_compress.quant`), by what matters (:class:`Int8Gate`): the argmax agreement over
at least 256 real texts, and the worst logit error counted in *logit steps*,
``max |Δlogit| / s_z`` with ``s_z = (max z - min z) / 255`` over the reference logits (the step of an 8-bit
grid spanning them). A value that lands next to a rounding boundary of an activation code flips to the
neighbouring code and moves logits by a fraction of a step to a few steps; an export bug (wrong scale,
transposed weight, saturating kernel on 8-bit weights) moves them by tens to hundreds of steps.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn


class ParityError(AssertionError):
    """An exported artifact disagrees with the PyTorch model by more than the tolerance."""


class Int8GateError(ParityError):
    """An int8 artifact does not compute what the PyTorch model simulating it computes."""


@dataclass(frozen=True)
class Int8Gate:
    """Acceptance bounds of an int8 artifact against its simulating PyTorch model.

    Attributes:
        min_agreement: Smallest fraction of texts with the same predicted class (0.99).
        max_error_steps: Largest ``max |Δlogit| / s_z``, ``s_z = (max z - min z) / 255`` (16 steps).
        min_texts: Texts the agreement should be measured on; fewer are recorded as ``enough_texts: false``.
    """

    min_agreement: float = 0.99
    max_error_steps: float = 16.0
    min_texts: int = 256

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_agreement <= 1.0 or self.max_error_steps <= 0 or self.min_texts < 1:
            raise ValueError(f"Int8Gate needs min_agreement in [0, 1], max_error_steps > 0, min_texts >= 1: {self}.")


def logit_step(reference: Sequence[np.ndarray]) -> float:
    """``s_z = (max z - min z) / 255`` over all reference logits (1.0 for constant logits)."""
    values = np.concatenate([np.asarray(r, dtype=np.float64).ravel() for r in reference])
    spread = float(values.max() - values.min()) if values.size else 0.0
    return spread / 255.0 if spread > 0 else 1.0


def judge_int8(report: Mapping[str, Any], reference: Sequence[np.ndarray], gate: Int8Gate,
               what: str, raise_on_failure: bool = True) -> dict[str, Any]:  # fmt: skip
    """Add the int8 verdict to a :func:`compare_logits` report; raise :class:`Int8GateError` if it fails.

    Adds ``logit_step``, ``error_steps`` (``max |Δlogit| / s_z``), ``texts``, ``enough_texts``, ``gate`` (the
    bounds) and ``passed``.
    """
    step = logit_step(reference)
    texts = int(sum(len(r) for r in reference))
    verdict = {**report, "logit_step": step, "error_steps": float(report["max_abs_diff"]) / step, "texts": texts,
               "enough_texts": texts >= gate.min_texts, "gate": {"kind": "int8", **asdict(gate)}, "gated": True}  # fmt: skip
    verdict["passed"] = bool(verdict["argmax_agreement"] >= gate.min_agreement
                             and verdict["error_steps"] <= gate.max_error_steps)  # fmt: skip
    if raise_on_failure and not verdict["passed"]:
        raise Int8GateError(_int8_message(what, verdict))
    return verdict


def check_parity(
    model: nn.Module,
    onnx_model: str | os.PathLike[str] | bytes,
    batches: Sequence[Mapping[str, Tensor]],
    *,
    atol: float = 1e-4,
    input_names: Sequence[str] = ("input_ids", "attention_mask"),
    gate: bool = True,
    int8_gate: Int8Gate | None = None,
    what: str = "ONNX Runtime",
) -> dict[str, Any]:
    """Run ONNX Runtime and PyTorch on ``batches`` and compare logits.

    Args:
        model: Module called as ``model(**inputs)`` returning logits (e.g. ``LogitsOnly``) or an object with
            ``.logits``.
        onnx_model: Path to an ONNX file or its serialized bytes.
        batches: Input batches (tensors keyed by name); include several batch sizes, lengths and padding.
        atol: Tolerance of the gate on ``max |Δlogit|``.
        input_names: Names fed to the ONNX graph.
        gate: Raise :class:`ParityError` when the tolerance is exceeded.
        int8_gate: Judge an int8 artifact by :class:`Int8Gate` instead of ``atol`` (``model`` then is the
            fake-quantized model that simulates it); with ``gate=False`` the verdict is recorded, not raised.
        what: Name of the artifact in error messages.

    Returns:
        The report of :func:`compare_logits` (with :func:`judge_int8`'s fields for ``int8_gate``).
    """
    import onnxruntime as ort

    source = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    reference = torch_logits(model, batches)
    names = [n for n in input_names if any(n == i.name for i in session.get_inputs())]
    candidate = [session.run(["logits"], {n: b[n].numpy() for n in names})[0] for b in batches]
    if int8_gate is None:
        return compare_logits(reference, candidate, batches, atol=atol, gate=gate, what=what)
    report = compare_logits(reference, candidate, batches, atol=atol, gate=False, what=what)
    return judge_int8(report, reference, int8_gate, what, raise_on_failure=gate)


def torch_logits(model: nn.Module, batches: Sequence[Mapping[str, Tensor]]) -> list[np.ndarray]:
    """Logits of ``model`` on each batch, as float32 numpy arrays (no grad)."""
    out = []
    with torch.inference_mode():
        for batch in batches:
            result = model(**batch)
            logits = result if isinstance(result, Tensor) else result.logits
            out.append(logits.float().cpu().numpy())
    return out


def compare_logits(
    reference: Sequence[np.ndarray],
    candidate: Sequence[np.ndarray],
    batches: Sequence[Mapping[str, Any]],
    *,
    atol: float = 1e-4,
    gate: bool = True,
    what: str = "artifact",
) -> dict[str, Any]:
    """Compare two lists of logits batch by batch and locate the worst disagreement.

    Returns:
        ``{"atol", "max_abs_diff", "argmax_agreement", "passed", "gated", "batches": [...], "worst": {...}}``
        where ``argmax_agreement`` is the fraction of rows whose predicted class is the same.

    Raises:
        ParityError: ``gate`` and ``max_abs_diff > atol``; the message names the batch, row and logit.
    """
    rows, worst = [], {"max_abs_diff": -1.0}
    agree = total = 0
    for index, (ref, cand, batch) in enumerate(zip(reference, candidate, batches, strict=True)):
        if ref.shape != cand.shape:
            raise ParityError(f"{what} logits of parity input #{index} have shape {cand.shape}, torch {ref.shape}.")
        diff = np.abs(ref.astype(np.float64) - cand.astype(np.float64))
        row, col = np.unravel_index(int(np.argmax(diff)), diff.shape)
        pads = _padding_per_row(batch)
        same = ref.argmax(-1) == cand.argmax(-1)
        agree, total = agree + int(same.sum()), total + len(same)
        entry = {"shape": list(_shape(batch)), "padding_tokens": int(pads.sum()), "max_abs_diff": float(diff.max())}
        rows.append(entry)
        if entry["max_abs_diff"] > worst["max_abs_diff"]:
            worst = {**entry, "input": index, "row": int(row), "logit": int(col), "row_padding": int(pads[row]),
                     "torch": float(ref[row, col]), "other": float(cand[row, col])}  # fmt: skip
    max_diff = max((r["max_abs_diff"] for r in rows), default=0.0)
    report = {"atol": atol, "max_abs_diff": max_diff, "argmax_agreement": agree / max(total, 1),
              "passed": bool(max_diff <= atol), "gated": gate, "batches": rows, "worst": worst}  # fmt: skip
    if gate and not report["passed"]:
        raise ParityError(_message(what, report))
    return report


def derived_parity_inputs(sample: Mapping[str, Tensor], seed: int = 0) -> list[dict[str, Tensor]]:
    """Batches of other sizes and lengths than ``sample``, with right padding, built from its token ids.

    Shapes: ``(1, L)``, ``(B + 1, L + 3)`` with rows padded to different lengths, ``(2, max(2, L // 2))``.
    Token ids are drawn from those present in ``sample["input_ids"]`` so they stay in the vocabulary. For an
    image sample (``pixel_values`` ``(B, C, H, W)``): standard-normal images in batches of 1, ``B + 1`` and 2
    (only the batch axis is dynamic).
    """
    gen = torch.Generator().manual_seed(seed)
    if "pixel_values" in sample:
        pixels = sample["pixel_values"]
        shape = tuple(pixels.shape[1:])
        return [{"pixel_values": torch.randn((rows, *shape), generator=gen, dtype=pixels.dtype)}
                for rows in (1, pixels.shape[0] + 1, 2)]  # fmt: skip
    ids = sample["input_ids"]
    vocab = torch.unique(ids)
    batch, length = ids.shape
    out = []
    for rows, cols in [(1, length), (batch + 1, length + 3), (2, max(2, length // 2))]:
        new_ids = vocab[torch.randint(len(vocab), (rows, cols), generator=gen)]
        mask = torch.ones(rows, cols, dtype=sample["attention_mask"].dtype)
        for r in range(1, rows):
            keep = int(torch.randint(1, cols + 1, (1,), generator=gen))
            mask[r, keep:] = 0
        new_ids = new_ids.masked_fill(mask == 0, 0)
        entry = {"input_ids": new_ids.to(ids.dtype), "attention_mask": mask}
        if "token_type_ids" in sample:
            entry["token_type_ids"] = torch.zeros_like(new_ids)
        out.append(entry)
    return out


def _padding_per_row(batch: Mapping[str, Any]) -> np.ndarray:
    mask = batch.get("attention_mask")
    if mask is None:
        return np.zeros(_shape(batch)[0], dtype=np.int64)
    mask = mask.numpy() if isinstance(mask, Tensor) else np.asarray(mask)
    return (mask == 0).sum(-1)


def _shape(batch: Mapping[str, Any]) -> tuple[int, ...]:
    return tuple(batch["input_ids"].shape if "input_ids" in batch else next(iter(batch.values())).shape)


def _message(what: str, report: Mapping[str, Any]) -> str:
    w = report["worst"]
    return (
        f"{what} parity failed: max |Δlogit| = {report['max_abs_diff']:.3e} > atol {report['atol']:.0e}, "
        f"at parity input #{w['input']} (shape {'x'.join(map(str, w['shape']))}), row {w['row']} "
        f"({w['row_padding']} padding tokens), logit {w['logit']}: torch {w['torch']:.6f} vs {w['other']:.6f}. "
        f"Argmax agreement {report['argmax_agreement']:.1%}. Check that the model is in eval mode, was not "
        f"modified after export, and that the ONNX file matches it."
    )


def _int8_message(what: str, r: Mapping[str, Any]) -> str:
    g = r["gate"]
    return (
        f"{what}: int8 gate failed: argmax agreement {r['argmax_agreement']:.2%} (need >= {g['min_agreement']:.0%}), "
        f"max |Δlogit| {r['max_abs_diff']:.3g} = {r['error_steps']:.1f} logit steps of {r['logit_step']:.3g} (need "
        f"<= {g['max_error_steps']:g}) over {r['texts']} texts, against the fake-quantized PyTorch model. "
        f"Try: an int8 target that matches this CPU (target: auto, or avx2 = 7-bit weights where the CPU lacks "
        f"VNNI), per_channel: true, more calibration texts, or QAT."
    )
