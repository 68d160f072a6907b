"""Gradual structured pruning of attention heads and FFN channels, and hidden width, during training (Lightning
adapter).

Any encoder family with a layout (:mod:`lit_compress.models.layout`) is supported.

The math lives in :mod:`lit_compress.prune.structured`; this callback only decides *when* to prune (a schedule
``step -> ratio`` evaluated on optimizer steps), accumulates Taylor importance from real gradients, keeps the
optimizer valid after parameters change shape, and makes the pruned structure survive checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn

from lit_compress.models.architecture import (
    apply_architecture,
    architecture_from_state_dict,
    current_architecture,
    read_architecture,
)
from lit_compress.models.layout import encoder_layers, layout_of
from lit_compress.prune.hidden import hidden_importance, hidden_width, kept_hidden_width, prune_hidden
from lit_compress.prune.structured import (
    Scope,
    UnitScores,
    prune_heads_and_ffn,
    remap_optimizer_state,
    select_units,
    structured_taylor_scores,
)
from lit_compress.utils.target import compression_target

Ratio = float | Callable[[int], float]
CHECKPOINT_KEY = "lit_compress_architecture"


class ScheduledCut(Callback):
    """Base of the callbacks that cut structure on a schedule (:class:`StructuredPruning`, ``ChannelPruning``).

    Calls :meth:`prune` once at every ``every_n_steps``-th optimizer step, and removes the resize-before-load hook
    that the subclass registers in ``setup`` (``self._hook``) when the Trainer tears down.
    """

    every_n_steps: int
    _last_step: int = 0
    _hook: Any = None

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step == self._last_step or step % self.every_n_steps:
            return
        self._last_step = step
        self.prune(trainer, pl_module, step)

    def prune(self, trainer: Trainer, pl_module: LightningModule, step: int) -> None:
        """Cut to the schedule's target at ``step`` (a no-op when already there)."""
        raise NotImplementedError


class StructuredPruning(ScheduledCut):
    """Remove whole attention heads and FFN channels on a schedule and, optionally, hidden (residual) channels.

    At every ``every_n_steps``-th optimizer step the schedules give the *absolute* fraction of the original
    heads / FFN channels to have removed by then; the least important units beyond that are cut (never regrown).
    Importance is the gate-Taylor score ``|∂L/∂ξ|`` summed over every optimizer step so far (Michel et al. 2019;
    Molchanov et al. 2019), or the weight magnitude.

    After each cut the optimizers point at the new parameters and their state (Adam moments) is sliced to the
    kept rows/columns, so LR schedulers and bias correction continue. Checkpoints store the schedule position and
    the scores; the structure itself is read back from the saved weights' shapes (a ``load_state_dict`` pre-hook
    registered in ``setup``, which runs before restore), and also stored as ``checkpoint["lit_compress_architecture"]``
    for tools outside Lightning.

    Args:
        head_pruning_ratio: Fraction of heads removed, constant or ``step -> fraction`` (e.g. a
            ``lit_compress.prune.schedules`` schedule).
        ffn_pruning_ratio: Fraction of FFN intermediate channels removed, constant or a schedule.
        importance: ``"taylor"`` (needs gradients; default) or ``"magnitude"``.
        scope: ``"layer"`` (same ratio per layer) or ``"global"`` (ranked across layers).
        every_n_steps: Evaluate the schedules every this many optimizer steps.
        min_heads: Heads every layer keeps. min_ffn: FFN channels every layer keeps.
        ffn_round_to: Round kept FFN widths up to a multiple of this.
        hidden_pruning_ratio: Fraction of the hidden channels removed: a constant once at the start, or a schedule
            (0: hidden size kept).
        hidden_round_to: Kept hidden width is a multiple of this (4-bit embedding blocks are 128 wide).
        hidden_batches: Training batches that rank the hidden channels.

    ``hidden_pruning_ratio`` narrows the residual stream to ``kept_hidden_width(config.hidden_size, ratio,
    hidden_round_to)`` channels ranked by their activation energy (:mod:`lit_compress.prune.hidden`): a constant
    once, in ``setup`` (before the optimizers exist, ranked on ``hidden_batches`` training batches); a schedule
    gradually, like heads and FFN channels (ranked on the step's batch; rank 0's ranking under DDP), in steps of
    ``hidden_round_to`` channels. Training recovers what the narrower LayerNorms changed. Only families whose
    stream torch-pruning's trace closes are cut (the others are refused with that reason). Hidden-state
    distillation terms (``hidden_weight``, ``cosine_weight``) compare widths fixed before the cut, so they are
    refused with it.

    Under DDP every rank cuts the same units: the decision to prune depends only on the step and the shapes, the
    accumulated scores are rank 0's (broadcast; Taylor scores come from all-reduced gradients anyway), and after a
    cut the ``DistributedDataParallel`` wrapper is rebuilt around the new parameters. FSDP and DeepSpeed shard or
    flatten parameters, so they are refused with that reason.
    """

    #: The ratio arguments that take a schedule (the main job turns a number given for them into a cubic ramp).
    SCHEDULED_RATIOS = ("head_pruning_ratio", "ffn_pruning_ratio", "hidden_pruning_ratio")

    def __init__(
        self,
        head_pruning_ratio: Ratio = 0.0,
        ffn_pruning_ratio: Ratio = 0.0,
        importance: Literal["taylor", "magnitude"] = "taylor",
        scope: Scope = "layer",
        every_n_steps: int = 1,
        min_heads: int = 1,
        min_ffn: int = 1,
        ffn_round_to: int = 1,
        hidden_pruning_ratio: Ratio = 0.0,
        hidden_round_to: int = 32,
        hidden_batches: int = 8,
    ) -> None:
        for name, ratio in (("head_pruning_ratio", head_pruning_ratio), ("ffn_pruning_ratio", ffn_pruning_ratio)):
            if not callable(ratio):
                _check_ratio(name, ratio)
        if importance not in ("taylor", "magnitude"):
            raise ValueError(f"importance must be 'taylor' or 'magnitude'; got {importance!r}.")
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1; got {every_n_steps}.")
        if scope not in ("layer", "global"):
            raise ValueError(f"scope must be 'layer' or 'global'; got {scope!r}.")
        if min(min_heads, min_ffn, ffn_round_to) < 1:
            raise ValueError(
                f"min_heads, min_ffn and ffn_round_to must be >= 1 (a layer cannot lose every head or channel); "
                f"got {min_heads}, {min_ffn}, {ffn_round_to}."
            )
        if not callable(hidden_pruning_ratio):
            kept_hidden_width(768, hidden_pruning_ratio)  # validates the ratio
        if hidden_round_to < 1 or hidden_batches < 1:
            raise ValueError(
                f"hidden_round_to and hidden_batches must be >= 1; got {hidden_round_to}, {hidden_batches}.")
        self.head_pruning_ratio, self.ffn_pruning_ratio = head_pruning_ratio, ffn_pruning_ratio
        self.hidden_pruning_ratio, self.hidden_round_to, self.hidden_batches = (
            hidden_pruning_ratio, hidden_round_to, hidden_batches)  # fmt: skip
        self.importance, self.scope, self.every_n_steps = importance, scope, every_n_steps
        self.min_heads, self.min_ffn, self.ffn_round_to = min_heads, min_ffn, ffn_round_to
        self._scores: UnitScores | None = None
        self._last_step = 0
        self._hook: Any = None
        self._batch: dict[str, torch.Tensor] | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Check the target and register the resize-before-load hook (idempotent; runs before checkpoint restore)."""
        refuse_sharding(trainer, "StructuredPruning")
        target = compression_target(pl_module)
        encoder_layers(target)
        if self._hook is None:
            self._hook = target.register_load_state_dict_pre_hook(_resize_before_load)
        if callable(self.hidden_pruning_ratio) or self.hidden_pruning_ratio > 0:
            if getattr(pl_module, "uses_features", False):
                raise ValueError(
                    "hidden_pruning_ratio cannot be combined with hidden-state distillation terms (their projections "
                    "are sized before the cut); set hidden_weight and cosine_weight to 0, or hidden_pruning_ratio to 0."
                )
            if not callable(self.hidden_pruning_ratio):
                self._narrow_hidden(trainer, target, self.hidden_pruning_ratio, None)

    def _narrow_hidden(self, trainer: Trainer, target: nn.Module, ratio: float,
                       batch: dict[str, torch.Tensor] | None) -> list[Any]:  # fmt: skip
        """Cut the residual stream to the width ``ratio`` sets (no-op when already there: setup is idempotent),
        ranking channels on ``batch`` (None: the first ``hidden_batches`` training batches)."""
        keep = kept_hidden_width(int(target.config.hidden_size), ratio, self.hidden_round_to)
        if hidden_width(target) <= keep:
            return []
        scores = hidden_importance(target, [batch] if batch is not None else
                                   _first_batches(trainer, self.hidden_batches, target))  # fmt: skip
        if trainer.world_size > 1:
            scores = trainer.strategy.broadcast(scores, src=0)  # every rank cuts the same channels
        return prune_hidden(target, torch.topk(scores, keep).indices)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if callable(self.hidden_pruning_ratio) and isinstance(batch, Mapping):
            from lit_compress.distill.base import model_inputs

            self._batch = model_inputs(dict(batch))  # what a scheduled hidden cut at this step ranks channels on
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        if self.importance == "taylor":
            target = compression_target(pl_module)
            batch = structured_taylor_scores(target)
            fits = self._scores is not None and _sizes(self._scores) == _sizes(batch)
            self._scores = self._scores.add_(batch) if fits else batch  # restart if the model was cut elsewhere

    def prune(self, trainer: Trainer, pl_module: LightningModule, step: int) -> None:
        """Prune to the schedules' targets at ``step`` (no-op if already there) and keep optimizers consistent."""
        head_ratio = _check_ratio("head_pruning_ratio", _evaluate(self.head_pruning_ratio, step))
        ffn_ratio = _check_ratio("ffn_pruning_ratio", _evaluate(self.ffn_pruning_ratio, step))
        target = compression_target(pl_module)
        cut = False
        if callable(self.hidden_pruning_ratio) and self._batch is not None:
            remaps = self._narrow_hidden(trainer, target, float(self.hidden_pruning_ratio(step)), self._batch)
            for optimizer in trainer.optimizers:  # before the next cut, which may cut the same tensors again
                remap_optimizer_state(optimizer, remaps)
            cut = bool(remaps)
        if self._would_prune(target, head_ratio, ffn_ratio):  # decided from shapes and the step: same on every rank
            if trainer.world_size > 1 and self._scores is not None:
                self._scores = trainer.strategy.broadcast(self._scores, src=0)  # rank 0 decides; all cut the same
            result = prune_heads_and_ffn(
                target, head_ratio, ffn_ratio, scores=self._scores if self.importance == "taylor" else None,
                scope=self.scope, min_heads=self.min_heads, min_ffn=self.min_ffn, ffn_round_to=self.ffn_round_to,
            )  # fmt: skip
            for optimizer in trainer.optimizers:
                remap_optimizer_state(optimizer, result.remaps)
            if self._scores is not None:
                self._scores = self._scores.select(result.kept_heads, result.kept_ffn)
            cut = True
        if not cut:
            return
        if trainer.world_size > 1:
            _rewrap_ddp(trainer)
        spec = current_architecture(target)
        pl_module.log_dict(
            {"prune/heads": float(sum(spec.num_heads)), "prune/ffn_channels": float(sum(spec.intermediate_sizes)),
             "prune/hidden": float(hidden_width(target))},
            on_step=True, on_epoch=False,
        )  # fmt: skip

    def _would_prune(self, target: nn.Module, head_ratio: float, ffn_ratio: float) -> bool:
        spec, cfg, layout = current_architecture(target), target.config, layout_of(target)
        plans = (
            (spec.num_heads, layout.config_num_heads(cfg), head_ratio, self.min_heads, 1),
            (spec.intermediate_sizes, layout.config_ffn_size(cfg), ffn_ratio, self.min_ffn, self.ffn_round_to),
        )
        for counts, original, ratio, min_keep, round_to in plans:
            kept = select_units(
                [torch.zeros(n) for n in counts], [original] * len(counts), ratio,
                scope=self.scope, min_keep=min_keep, round_to=round_to,
            )  # fmt: skip
            if sum(len(k) for k in kept) < sum(counts):
                return True
        return False

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        spec = read_architecture(compression_target(pl_module))
        checkpoint[CHECKPOINT_KEY] = spec.to_dict() if spec is not None else None

    def state_dict(self) -> dict[str, Any]:
        scores = None if self._scores is None else {"heads": self._scores.heads, "ffn": self._scores.ffn}
        return {"last_step": self._last_step, "scores": scores}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._last_step = int(state_dict["last_step"])
        scores = state_dict["scores"]
        self._scores = None if scores is None else UnitScores(list(scores["heads"]), list(scores["ffn"]))


def _is_ddp(strategy: Any) -> bool:
    from lightning.pytorch.strategies import DDPStrategy

    return isinstance(strategy, DDPStrategy)


def refuse_sharding(trainer: Trainer, callback: str) -> None:
    """Refuse a multi-process strategy other than DDP for a callback that cuts parameters (FSDP and DeepSpeed
    shard or flatten them, so a cut cannot be applied)."""
    if trainer.world_size > 1 and not _is_ddp(trainer.strategy):
        raise RuntimeError(
            f"{callback} changes parameter shapes; under {type(trainer.strategy).__name__} the parameters are "
            "sharded or flattened (FSDP, DeepSpeed), so a cut cannot be applied to them. Use strategy='ddp' (the DDP "
            "wrapper is rebuilt after each cut), or prune in a single-process run and train the pruned model "
            "(save_model_dir / load_model_dir) with any strategy."
        )


def _rewrap_ddp(trainer: Trainer) -> None:
    """Wrap the LightningModule in a fresh ``DistributedDataParallel`` after a cut (a collective: every rank).

    DDP registers its gradient all-reduce hooks on the parameters it was built with; the cut parameters are new
    objects, so without a new wrapper their gradients would stay local and the ranks would drift apart. The new
    wrapper broadcasts rank 0's parameters and buffers (identical already) and keeps the strategy's DDP kwargs.
    """
    strategy = trainer.strategy
    strategy.model = strategy._setup_model(strategy.lightning_module)  # Lightning's own wrapping (DDPStrategy)
    strategy._register_ddp_hooks()


def _resize_before_load(module: nn.Module, state_dict: dict[str, torch.Tensor], prefix: str, *args: Any) -> None:
    """``load_state_dict`` pre-hook: shrink ``module`` to the shapes of the weights about to be loaded."""
    try:
        spec = architecture_from_state_dict(module, state_dict, prefix)
    except KeyError:
        return  # a partial state dict: let load_state_dict report what is missing
    if spec != current_architecture(module):
        apply_architecture(module, spec)


def _first_batches(trainer: Trainer, n: int, target: nn.Module) -> list[dict[str, torch.Tensor]]:
    """The model inputs of the first ``n`` training batches of the Trainer's datamodule."""
    from lit_compress.distill.base import model_inputs

    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is None:
        raise ValueError(
            "hidden_pruning_ratio > 0 ranks hidden channels on training batches: pass a LightningDataModule to "
            "trainer.fit(datamodule=...), or set hidden_pruning_ratio to 0."
        )
    device = next(target.parameters()).device
    batches = []
    for batch in datamodule.train_dataloader():
        batches.append({k: v.to(device) for k, v in model_inputs(batch).items()})
        if len(batches) == n:
            break
    return batches


def _sizes(scores: UnitScores) -> list[int]:
    return [len(s) for s in (*scores.heads, *scores.ffn)]


def _evaluate(ratio: Ratio, step: int) -> float:
    return float(ratio(step)) if callable(ratio) else float(ratio)


def _check_ratio(name: str, ratio: float) -> float:
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"{name} must be in [0, 1] (fraction of the original units removed); got {ratio}.")
    return ratio
