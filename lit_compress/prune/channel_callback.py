"""``ChannelPruning``: the Lightning adapter of :func:`~lit_compress.prune.channels.prune_channels` (gradual
structured pruning of CNN channels with Torch-Pruning, on a schedule, while training)."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor, nn

from lit_compress.prune.channels import Importance, Ratio, _validate, prune_channels, remap_optimizer_elements
from lit_compress.prune.structured import Scope, select_units
from lit_compress.prune.structured_callback import ScheduledCut
from lit_compress.utils.target import compression_target


class ChannelPruning(ScheduledCut):
    """Remove whole CNN channels on a schedule while training (Lightning adapter of :func:`prune_channels`).

    At every ``every_n_steps``-th optimizer step the ratio (constant or ``step -> fraction``, e.g. a
    ``lit_compress.prune.schedules`` schedule) gives the fraction of the original prunable channels removed by
    then; the least important channels beyond that are cut (never regrown). After a cut the optimizers point at
    the new parameters and their state (Adam moments) is cut the same way (:func:`remap_optimizer_elements`), so
    LR schedules and bias correction continue. The structure survives checkpoints: a ``load_state_dict``
    pre-hook (registered in ``setup``, before Lightning restores) rebuilds the modules to the saved shapes.

    Args:
        channel_pruning_ratio: Fraction of the original channels removed, constant or a schedule.
        importance: ``"magnitude"`` (group L2) or ``"taylor"`` (``|w · ∂L/∂w|`` of the last batch).
        scope: ``"layer"`` (every channel group loses the ratio) or ``"global"`` (ranked across groups).
        every_n_steps: Evaluate the ratio every this many optimizer steps.
        round_to: Groups keep a multiple of this many channels.
        ignore: Qualified module names (in the compression target) whose output channels are kept; the final
            classifier always is.

    Under DDP every rank cuts the same channels (weights and all-reduced gradients agree) and the
    ``DistributedDataParallel`` wrapper is rebuilt after a cut; FSDP and DeepSpeed are refused.
    """

    #: The ratio arguments that take a schedule (the main job turns a number given for them into a cubic ramp).
    SCHEDULED_RATIOS = ("channel_pruning_ratio",)

    def __init__(
        self,
        channel_pruning_ratio: Ratio = 0.0,
        importance: Importance = "magnitude",
        scope: Scope = "layer",
        every_n_steps: int = 1,
        round_to: int = 1,
        ignore: list[str] | None = None,
    ) -> None:
        _validate(0.0 if callable(channel_pruning_ratio) else channel_pruning_ratio, importance, scope, round_to)
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1; got {every_n_steps}.")
        self.channel_pruning_ratio, self.importance, self.scope = channel_pruning_ratio, importance, scope
        self.every_n_steps, self.round_to, self.ignore = every_n_steps, round_to, list(ignore or [])
        self._last_step = 0
        self._original: dict[str, int] | None = None
        self._counts: dict[str, int] | None = None
        self._hook: Any = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Refuse sharding strategies; register the resize-before-load hook (idempotent; runs before restore)."""
        from lit_compress.prune.structured_callback import refuse_sharding

        refuse_sharding(trainer, "ChannelPruning")
        if self._hook is None:
            self._hook = compression_target(pl_module).register_load_state_dict_pre_hook(resize_before_load)

    def prune(self, trainer: Trainer, pl_module: LightningModule, step: int) -> None:
        """Prune to the ratio at ``step`` (no-op if already there) and keep the optimizers consistent."""
        ratio = self.channel_pruning_ratio
        ratio = float(ratio(step)) if callable(ratio) else float(ratio)
        _validate(ratio, self.importance, self.scope, self.round_to)
        if not self._would_prune(ratio):
            return  # decided from the step and the counts alone: the same on every rank
        report = prune_channels(
            compression_target(pl_module), ratio, importance=self.importance, scope=self.scope,
            round_to=self.round_to, ignore=self.ignore, original=self._original, measure=False,
        )  # fmt: skip
        self._original, self._counts = report.original, report.after
        if report.remaps:
            for optimizer in trainer.optimizers:
                remap_optimizer_elements(optimizer, report.remaps)
            if trainer.world_size > 1:
                from lit_compress.prune.structured_callback import _rewrap_ddp

                _rewrap_ddp(trainer)
        pl_module.log_dict(
            {"prune/channels": float(sum(report.after.values())), "prune/params": float(report.params_after)},
            on_step=True, on_epoch=False,
        )  # fmt: skip

    def _would_prune(self, ratio: float) -> bool:
        if self._counts is None or self._original is None:
            return True
        counts = list(self._counts.values())
        kept = select_units([torch.zeros(n) for n in counts], [self._original[k] for k in self._counts], ratio,
                            scope=self.scope, min_keep=self.round_to, round_to=self.round_to)  # fmt: skip
        return sum(len(k) for k in kept) < sum(counts)

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self._last_step, "original": self._original, "counts": self._counts}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._last_step = int(state_dict["last_step"])
        self._original, self._counts = state_dict.get("original"), state_dict.get("counts")


def resize_before_load(module: nn.Module, state_dict: dict[str, Tensor], prefix: str, *args: Any) -> None:
    """``load_state_dict`` pre-hook: rebuild ``module``'s Conv2d/Linear/BatchNorm2d to the weights' shapes.

    A depthwise convolution (``groups == in == out``) stays depthwise; other convolutions keep their groups.
    """
    from lit_compress.vision.classifier import module_shapes, resize_modules

    shapes = {}
    for name, now in module_shapes(module).items():
        weight = state_dict.get(f"{prefix}{name}.weight", state_dict.get(f"{prefix}{name}.running_mean"))
        if weight is None:
            continue
        if len(now) == 3:  # Conv2d [in, out, groups]: weight (out, in / groups, kh, kw)
            depthwise = now[2] > 1 and now[0] == now[1] == now[2]
            out = int(weight.shape[0])
            shape = [out, out, out] if depthwise else [int(weight.shape[1]) * now[2], out, now[2]]
        elif len(now) == 2:
            shape = [int(weight.shape[1]), int(weight.shape[0])]
        else:
            shape = [int(weight.shape[0])]
        if shape != now:
            shapes[name] = shape
    if shapes:
        resize_modules(module, shapes)
