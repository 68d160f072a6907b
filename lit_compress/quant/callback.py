"""Quantization-aware training as a Lightning callback: prepare in ``setup()``, schedule by global step."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any

import lightning as L
import torch
from torch import nn

from lit_compress.quant.config import ActivationQuantConfig, QuantizationSchedule, WeightQuantConfig
from lit_compress.models.geometry import zero_images
from lit_compress.quant.fold import fold_batchnorm
from lit_compress.quant.observers import all_reduce_ranges
from lit_compress.models.layout import default_linear_filter
from lit_compress.quant.fake_quant import (
    FakeQuantized,
    FakeQuantizedConv2d,
    FilterFn,
    default_filter,
    fake_quantized_modules,
    module_types_from_names,
    prepare_qat,
    regex_filter,
    set_quantization_state,
    with_convs,
)
from lit_compress.utils.target import compression_target

log = logging.getLogger(__name__)


class QuantizationAwareTraining(L.Callback):
    """Fake-quantize the chosen Linears and Conv2ds of the compression target while it trains (Jacob et al., 2018).

    In ``setup()`` (which Lightning runs before restoring a checkpoint) the selected ``nn.Linear`` and
    ``nn.Conv2d`` layers of :func:`~lit_compress.utils.target.compression_target` are swapped for
    :class:`~lit_compress.quant.fake_quant.FakeQuantizedLinear` /
    :class:`~lit_compress.quant.fake_quant.FakeQuantizedConv2d` — idempotently, and in every stage, so
    ``trainer.test(ckpt_path=...)`` and resumed fits load the quantization buffers. Before each training batch
    the schedule switches fake quantization (from ``start_step``) and observer updates (until
    ``freeze_observers_step``) as pure functions of ``trainer.global_step``; observer ranges are buffers of the
    model. A resumed run therefore continues exactly where it stopped. Swapped layers keep their ``weight``
    Parameter, so pruning callbacks and distillation (which only sees the student) compose with this one.
    Conversion for deployment is a separate step: :mod:`lit_compress.quant.export`.

    Args:
        weight: Weight quantization; default the ``target``'s grid (int8 symmetric per channel, 7-bit where the
            target's kernel saturates: :mod:`lit_compress.quant.targets`).
        activation: Input quantization (default dynamic uint8 per tensor, as ORT dynamic quantization).
        start_step: First optimizer step with fake quantization (full-precision warm-up before).
        freeze_observers_step: Step from which static observers stop updating (``None``: never).
        filter_fn: ``(module, fqn) -> bool`` or a regex on the qualified name choosing the layers; default
            the Linears of the encoder blocks, asked of the model's layout
            (:func:`~lit_compress.models.layout.default_linear_filter`), and every Conv2d.
        module_types: Layer types that may be fake-quantized: ``["Linear", "Conv2d"]`` (default) or a subset,
            e.g. ``["Linear"]`` to leave convolutions (a ViT's patch embedding) in float (``torch.nn.Linear``
            spellings, as the pruning callbacks take, work too).
        conv_weight: Weight quantization of the convolutions; default ``weight``, but per tensor under the
            dynamic activation scheme, because ORT's dynamic ``ConvInteger`` takes one weight scale per tensor
            (:func:`~lit_compress.quant.export.ort_dynamic_scheme`).
        fold_batchnorm: In ``setup()``, before the swap, fold every eval-mode BatchNorm2d into the conv that
            feeds it (:func:`~lit_compress.quant.fold.fold_batchnorm`; the example batch comes from
            ``config.num_channels`` / ``config.image_size``), so the convs train on the weights the ONNX
            exporter writes. Needed for faithful dynamic-scheme QAT of CNNs: ORT's per-tensor ``ConvInteger``
            grid of the folded weights differs from that of the unfolded ones (measured, max / mean |QAT - ORT|
            in logit steps: ResNet-18-style width 4, 1.0 / 0.035 folded, 4.9 / 1.1 unfolded, fp32 3.5; tiny CNN
            exact folded). For fine-tuning a trained net: the BN statistics are frozen into the convs and each
            BN trains as a per-channel bias (:class:`~lit_compress.quant.fold.FoldedBatchNorm2d`, same
            state-dict keys, so the model saves and reloads as before).
        log_per_module: Also log every layer's input scale (static scheme), not just summaries.
        target: int8 deployment CPU whose kernel the fake quantizer simulates: ``"auto"`` (this machine) or a
            preset name (``"avx2"``, ``"avx512_vnni"``, ``"arm64"``, ...); used when ``weight`` is not given.
    """

    def __init__(
        self,
        weight: WeightQuantConfig | None = None,
        activation: ActivationQuantConfig | None = None,
        start_step: int = 0,
        freeze_observers_step: int | None = None,
        filter_fn: str | FilterFn | None = None,
        log_per_module: bool = False,
        target: str = "auto",
        module_types: Sequence[str] = ("Linear", "Conv2d"),
        conv_weight: WeightQuantConfig | None = None,
        fold_batchnorm: bool = False,
    ) -> None:
        from lit_compress.quant.targets import resolve_target

        self.target = resolve_target(target)
        self.weight = weight or self.target.weight_config()
        self.activation = activation or ActivationQuantConfig()
        self.module_types = module_types_from_names(module_types)
        self.fold_batchnorm = fold_batchnorm
        dynamic = self.activation.scheme == "dynamic"  # ORT's ConvInteger: one weight scale per tensor
        self.conv_weight = conv_weight or (replace(self.weight, granularity="per_tensor") if dynamic else self.weight)
        self.schedule = QuantizationSchedule(start_step, freeze_observers_step)
        if isinstance(filter_fn, str):
            filter_fn = regex_filter(filter_fn)
        self.filter_fn: FilterFn | None = filter_fn
        self._default_filter: FilterFn = default_filter
        self.log_per_module = log_per_module
        self.quantized_modules: list[str] = []
        self._restored_modules: list[str] | None = None

    def filter_modules(self, module: nn.Module, fqn: str) -> bool:
        """Whether the layer ``module`` named ``fqn`` is fake-quantized (override for custom selection)."""
        return (self.filter_fn or self._default_filter)(module, fqn)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        target = compression_target(pl_module)
        if self.fold_batchnorm and any(type(m) is nn.BatchNorm2d for m in target.modules()):
            fold_batchnorm(target, zero_images(target, batch=2), inplace=True)  # once: no BN is left after it
        self._default_filter = with_convs(default_linear_filter(target))
        self.quantized_modules = prepare_qat(target, self.weight, self.activation, self.filter_modules,
                                             self.module_types, self.conv_weight)  # fmt: skip
        self._check_restored(self.quantized_modules)
        self._apply_schedule(target, trainer.global_step)
        log.info("QuantizationAwareTraining: %d layers fake-quantized", len(self.quantized_modules))

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._apply_schedule(compression_target(pl_module), trainer.global_step)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.world_size > 1:  # every rank's batch counts, not rank 0's alone (DDP broadcasts buffers)
            observing = [o for _, m in fake_quantized_modules(compression_target(pl_module))
                         if bool(m.observer_enabled) for o in m.observers()]  # fmt: skip
            all_reduce_ranges(observing)
        if trainer.logger is None:
            return
        metrics = quantization_metrics(compression_target(pl_module), per_module=self.log_per_module)
        pl_module.log_dict(metrics, on_step=True, on_epoch=False, batch_size=1)

    def state_dict(self) -> dict[str, Any]:
        return {
            "quantized_modules": list(self.quantized_modules),
            "weight": asdict(self.weight),
            "conv_weight": asdict(self.conv_weight),
            "module_types": [t.__name__ for t in self.module_types],
            "fold_batchnorm": self.fold_batchnorm,
            "target": self.target.name,
            "activation": asdict(self.activation),
            "schedule": asdict(self.schedule),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored_modules = list(state_dict.get("quantized_modules", []))
        self._check_restored(self.quantized_modules)

    def _check_restored(self, current: list[str]) -> None:
        saved = self._restored_modules
        if saved is None or not current or sorted(saved) == sorted(current):
            return
        raise RuntimeError(
            f"The checkpoint was trained with {len(saved)} fake-quantized layers but this run quantizes "
            f"{len(current)} (differences: {sorted(set(saved) ^ set(current))[:5]}); use the same filter_fn."
        )

    def _apply_schedule(self, model: nn.Module, step: int) -> None:
        set_quantization_state(
            model, self.schedule.fake_quant_enabled(step), self.schedule.observers_enabled(step)
        )


@torch.no_grad()
def quantization_metrics(model: nn.Module, per_module: bool = False) -> dict[str, float]:
    """Loggable quantization state of ``model``.

    Keys: ``quant/enabled`` and ``quant/observers_enabled`` (fraction of layers), ``quant/weight_scale_mean``
    (mean weight scale), ``quant/input_scale_mean`` (mean frozen-or-observed input scale, static scheme),
    ``quant/output_scale_mean`` (static-scheme convolutions' output scale) and, with ``per_module``,
    ``quant/input_scale/<fqn>``.
    """
    layers = list(fake_quantized_modules(model))
    if not layers:
        return {}
    out = {
        "quant/enabled": _mean([float(m.fake_quant_enabled) for _, m in layers]),
        "quant/observers_enabled": _mean([float(m.observer_enabled) for _, m in layers if m.input_observer]),
        "quant/weight_scale_mean": _mean([m.weight_qparams()[0].mean().item() for _, m in layers]),
    }
    input_scales = {fqn: _input_scale(m) for fqn, m in layers}
    observed = [s for s in input_scales.values() if s is not None]
    if observed:
        out["quant/input_scale_mean"] = _mean(observed)
    outputs = [float(q[0]) for _, m in layers if isinstance(m, FakeQuantizedConv2d) and (q := m.output_qparams())]
    if outputs:
        out["quant/output_scale_mean"] = _mean(outputs)
    if per_module:
        out.update({f"quant/input_scale/{k}": v for k, v in input_scales.items() if v is not None})
    return {k: v for k, v in out.items() if v == v}  # drop NaN (no static observers)


def _input_scale(module: FakeQuantized) -> float | None:
    qparams = module.input_qparams() if module.input_observer is not None else None
    return None if qparams is None else float(qparams[0])


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")
