"""``LotteryTicket``: iterative magnitude pruning with weight rewinding (Frankle & Carbin 2019).

The algorithm (seed 001): store the weights at step ``k`` (``k = 0``: the initialisation; ``k > 0``: "late
rewinding", Frankle et al. 2020), train a round, remove ``p`` of the remaining weights with the lowest
magnitude, reset the surviving weights to their step-``k`` values, and repeat. After ``r`` rounds the
sparsity is ``1 - (1 - p) ** r``.

Implemented as a :class:`~lit_compress.prune.callback.GradualPruning` with an
:class:`~lit_compress.prune.schedules.IterativeSparsity` schedule whose ``on_masks_update`` hook rewinds.
The snapshot is part of the callback state, so resuming between rounds rewinds to the same values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from lit_compress.prune.callback import GradualPruning
from lit_compress.prune.functional import Scope
from lit_compress.prune.schedules import IterativeSparsity
from lit_compress.utils.target import compression_target


class LotteryTicket(GradualPruning):
    """Find a winning ticket: prune ``prune_fraction`` of the remaining weights every ``round_length`` steps
    and rewind the survivors to their values at ``rewind_step``.

    Args:
        round_length: Optimizer steps of training per round.
        rounds: Number of prune-and-rewind rounds; the last round's weights are the ticket's starting point
            (train ``round_length`` more steps after the last rewind to get the trained ticket).
        prune_fraction: Share of the remaining weights removed per round (0.2 in the paper).
        rewind_step: Step whose weights are restored (0 = the initialisation); must come before the first
            pruning step ``round_length``.
        scope: ``"global"`` (the paper, for conv nets) or ``"local"`` magnitude ranking.
        reset_optimizer: Clear the optimizer state (e.g. Adam moments) at every rewind, as a fresh run would.
        filter_fn: As in :class:`~lit_compress.prune.callback.GradualPruning`.
        module_types: As in ``GradualPruning``.
        name_regex: As in ``GradualPruning``.
        parameter_names: As in ``GradualPruning``.
        permanent_at_fit_end: As in ``GradualPruning``.
        log_per_layer: As in ``GradualPruning``.
    """

    def __init__(
        self,
        round_length: int,
        rounds: int,
        prune_fraction: float = 0.2,
        rewind_step: int = 0,
        scope: Scope = "global",
        reset_optimizer: bool = True,
        filter_fn: Callable[[nn.Module, str], bool] | None = None,
        module_types: Sequence[type[nn.Module]] | None = None,
        name_regex: str | None = None,
        parameter_names: Sequence[str] = ("weight",),
        permanent_at_fit_end: bool = True,
        log_per_layer: bool = True,
    ) -> None:
        schedule = IterativeSparsity(prune_fraction=prune_fraction, round_length=round_length, rounds=rounds)
        if not isinstance(rewind_step, int) or not 0 <= rewind_step < round_length:
            raise ValueError(
                f"rewind_step={rewind_step!r} must be an integer in [0, round_length={round_length}): the "
                f"weights are stored before the first pruning round ends."
            )
        super().__init__(
            schedule=schedule,
            criterion="magnitude",
            scope=scope,
            filter_fn=filter_fn,
            module_types=module_types,
            name_regex=name_regex,
            parameter_names=parameter_names,
            permanent_at_fit_end=permanent_at_fit_end,
            log_per_layer=log_per_layer,
        )
        self.rewind_step = rewind_step
        self.reset_optimizer = reset_optimizer
        self._snapshot: dict[str, Tensor] | None = None

    @property
    def snapshot(self) -> dict[str, Tensor] | None:
        """The stored ``{parameter name: value}`` at ``rewind_step`` (all parameters of the target model)."""
        return None if self._snapshot is None else dict(self._snapshot)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._maybe_snapshot(trainer, pl_module)
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._maybe_snapshot(trainer, pl_module)
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def _maybe_snapshot(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step == self.rewind_step and self._snapshot is None:
            model = compression_target(pl_module)
            self._snapshot = {n: p.detach().clone() for n, p in model.named_parameters()}

    def on_masks_update(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        self.rewind(compression_target(pl_module))
        if self.reset_optimizer:
            for optimizer in trainer.optimizers:
                optimizer.state.clear()

    @torch.no_grad()
    def rewind(self, model: nn.Module) -> None:
        """Copy the snapshot back into ``model`` and re-apply the masks (pruned weights stay zero)."""
        if self._snapshot is None:
            raise RuntimeError(
                f"LotteryTicket has no weights from step {self.rewind_step} to rewind to; training must pass "
                f"through rewind_step (or resume from a checkpoint written by this callback)."
            )
        params = dict(model.named_parameters())
        missing = sorted(set(self._snapshot) - set(params))
        if missing:
            raise RuntimeError(f"Cannot rewind: the model no longer has parameters {missing[:3]}...")
        for name, value in self._snapshot.items():
            params[name].copy_(value.to(params[name].device))
        self.apply_masks()

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["snapshot"] = None if self._snapshot is None else {k: v.cpu() for k, v in self._snapshot.items()}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        snapshot = state_dict.get("snapshot")
        self._snapshot = None if snapshot is None else dict(snapshot)

    def make_permanent(self) -> None:
        super().make_permanent()
        self._snapshot = None
