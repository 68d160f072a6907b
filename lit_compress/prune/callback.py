"""``GradualPruning``: unstructured pruning to a per-step sparsity schedule, as a Lightning callback.

Lifecycle:

- ``setup``: pick the parameters to prune in ``compression_target(pl_module)`` (idempotent; runs before a
  checkpoint is restored, so restored masks find their parameters).
- after optimizer step ``t`` (``on_train_batch_end``; ``trainer.global_step`` is then ``t + 1``) and at the
  start of training: when the schedule says so, score the weights, build masks for the *absolute* target
  ``schedule(global_step)`` and zero the pruned weights. So the model always has the sparsity of its step
  count -- also in checkpoints, which ``ModelCheckpoint`` writes after this hook -- and a run of N steps ends
  at ``schedule(N)``.
- after every ``optimizer.step()`` (a step post-hook, no patched ``forward``): re-zero pruned weights.
- ``on_before_optimizer_step``: accumulate movement scores from the (all-reduced) gradients.
- ``on_fit_end`` (optional): make pruning permanent -- drop the masks; the weights already hold the zeros.

Masks, scores and the schedule position live in the callback's ``state_dict`` (checkpoint ``callbacks``
section), never in the model: the model's state dict stays a plain dense model that loads and exports
without this package, and a resumed run continues exactly like an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from lit_compress.models.layout import default_linear_filter
from lit_compress.prune.functional import (
    FilterFn,
    Scope,
    apply_masks,
    compute_masks,
    module_filter,
    select_parameters,
)
from lit_compress.prune.schedules import as_schedule, should_update
from lit_compress.prune.scoring import Criterion, check_criterion, magnitude_scores, movement_update, random_scores
from lit_compress.utils.target import compression_target


WEIGHT_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class GradualPruning(pl.Callback):
    """Prune weights to ``schedule(step)`` sparsity during training (magnitude, movement or random).

    Args:
        schedule: Target sparsity per optimizer step: a number (constant), a schedule from
            :mod:`lit_compress.prune.schedules`, or any callable ``step -> sparsity``.
        criterion: ``"magnitude"`` (|W|), ``"movement"`` (Sanh et al. 2020) or ``"random"`` (seeded baseline).
        scope: ``"local"`` prunes every tensor to the target; ``"global"`` ranks all selected weights together.
        filter_fn: ``filter_fn(module, qualified_name) -> bool`` choosing modules. Mutually exclusive with
            ``module_types`` / ``name_regex``. Default (all three unset): the ``nn.Linear`` layers of the encoder
            blocks, asked of the model's layout (``lit_compress.models.layout.default_linear_filter``): no
            embeddings, pooler or classifier.
        module_types: Module classes to prune (e.g. ``[torch.nn.Conv2d, torch.nn.Linear]``).
        name_regex: Regex searched in module names; restricted to ``module_types`` when given, else to
            ``WEIGHT_LAYERS`` (Linear and Conv1d/2d/3d -- never LayerNorm or embeddings by accident).
        parameter_names: Parameter names to prune inside each selected module.
        permanent_at_fit_end: Drop the masks when ``fit`` ends (the zeros stay in the weights).
        log_per_layer: Log ``sparsity/<parameter>`` as well as ``sparsity/global`` at every update.
        seed: Seed of the ``"random"`` criterion (identical on every rank).
    """

    def __init__(
        self,
        schedule: float | Callable[[int], float],
        criterion: Criterion = "magnitude",
        scope: Scope = "local",
        filter_fn: Callable[[nn.Module, str], bool] | None = None,
        module_types: Sequence[type[nn.Module]] | None = None,
        name_regex: str | None = None,
        parameter_names: Sequence[str] = ("weight",),
        permanent_at_fit_end: bool = True,
        log_per_layer: bool = True,
        seed: int = 0,
    ) -> None:
        self.schedule = as_schedule(schedule)
        self.criterion = check_criterion(criterion)
        if scope not in ("local", "global"):
            raise ValueError(f"scope={scope!r} is unknown; use 'local' (per layer) or 'global' (across layers).")
        self.scope: Scope = scope
        if filter_fn is not None and (module_types or name_regex is not None):
            raise ValueError("Pass either filter_fn or module_types/name_regex, not both.")
        if filter_fn is not None:
            self.filter_fn: FilterFn = filter_fn
        elif module_types or name_regex is not None:
            self.filter_fn = module_filter(module_types or WEIGHT_LAYERS, name_regex)
        else:
            self.filter_fn = None  # type: ignore[assignment]  # the encoder blocks' Linears, asked in setup
        self._selection = getattr(filter_fn, "__qualname__", None) or f"{module_types}|{name_regex}"
        self.parameter_names = tuple(parameter_names)
        self.permanent_at_fit_end = permanent_at_fit_end
        self.log_per_layer = log_per_layer
        self.seed = seed
        self.last_sparsity: dict[str, float] = {}
        self._target: nn.Module | None = None
        self._names: list[str] | None = None
        self._masks: dict[str, Tensor] = {}
        self._scores: dict[str, Tensor] = {}
        self._last_step = -1
        self._hooks: list[RemovableHandle] = []

    # ----------------------------------------------------------------- overridable hooks
    def select_parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """Return ``{qualified_name: parameter}`` to prune; override for custom selection."""
        return select_parameters(model, self.filter_fn or default_linear_filter(model), self.parameter_names)

    def on_masks_update(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        """Called right after new masks were computed and applied at an update ``step`` (no-op here)."""

    # ----------------------------------------------------------------- public state
    @property
    def masks(self) -> dict[str, Tensor]:
        """Current boolean masks (``True`` = kept), keyed by parameter name; empty before the first update."""
        return dict(self._masks)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(criterion=self.criterion, scope=self.scope, selection=self._selection)

    # ----------------------------------------------------------------- Lightning hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        _refuse_sharded(trainer, type(self).__name__)
        self._target = compression_target(pl_module)
        params = self.select_parameters(self._target)
        if not params:
            raise ValueError(
                f"{type(self).__name__} selected no parameters in {type(self._target).__name__}. The default "
                f"selects the nn.Linear layers of the encoder blocks; pass module_types=[...], "
                f"name_regex='...' or filter_fn=... to choose the layers to prune."
            )
        names = list(params)
        if names == self._names:
            return
        if self._masks:
            self._raise_mismatch(self._names or [], names)
        self._names = names
        self._scores = self._initial_scores(params)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._remove_hooks()
        for optimizer in trainer.optimizers:
            self._hooks.append(optimizer.register_step_post_hook(lambda *_: self.apply_masks()))
        params = self._parameters()
        self._scores = {n: s.to(params[n].device) for n, s in self._scores.items()}
        self.apply_masks()

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._maybe_update(trainer, pl_module, trainer.global_step)  # step 0 (or the first step after a resume)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._maybe_update(trainer, pl_module, trainer.global_step)

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self.criterion != "movement":
            return
        in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
        for name, param in self._parameters().items():
            if param.grad is not None and id(param) in in_optimizer:
                movement_update(self._scores[name], param, param.grad)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.permanent_at_fit_end:
            self.make_permanent()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._remove_hooks()

    def state_dict(self) -> dict[str, Any]:
        return {
            "names": list(self._names or []),
            "masks": {k: v.detach().cpu() for k, v in self._masks.items()},
            "scores": {k: v.detach().cpu() for k, v in self._scores.items()},
            "last_step": self._last_step,
            "last_sparsity": dict(self.last_sparsity),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        names = list(state_dict["names"])
        if self._names is not None and names and names != self._names:
            self._raise_mismatch(names, self._names)
        self._names = names or self._names
        self._masks = dict(state_dict["masks"])
        self._scores = dict(state_dict["scores"]) or self._scores
        self._last_step = int(state_dict["last_step"])
        self.last_sparsity = dict(state_dict.get("last_sparsity", {}))

    # ----------------------------------------------------------------- actions
    def apply_masks(self) -> None:
        """Zero the pruned weights (``W <- W * M``); called after every optimizer step."""
        if self._masks and self._target is not None:
            params = self._parameters()
            for name, mask in self._masks.items():
                if mask.device != params[name].device:
                    self._masks[name] = mask.to(params[name].device)
            apply_masks(params, self._masks)

    def make_permanent(self) -> None:
        """Apply the masks one last time and stop pruning: hooks removed, masks and scores released."""
        self.apply_masks()
        self._remove_hooks()
        self._masks, self._scores, self._names = {}, {}, None

    # ----------------------------------------------------------------- internals
    def _parameters(self) -> dict[str, nn.Parameter]:
        assert self._target is not None and self._names is not None, "setup() has not run"
        return {name: self._target.get_parameter(name) for name in self._names}

    def _initial_scores(self, params: dict[str, nn.Parameter]) -> dict[str, Tensor]:
        if self.criterion == "movement":
            return {n: torch.zeros(p.shape, dtype=torch.float32, device=p.device) for n, p in params.items()}
        if self.criterion == "random":
            generator = torch.Generator().manual_seed(self.seed)
            return {n: random_scores(p, generator).to(p.device) for n, p in params.items()}
        return {}

    def _current_scores(self, params: dict[str, nn.Parameter]) -> dict[str, Tensor]:
        if self.criterion == "magnitude":
            return {n: magnitude_scores(p) for n, p in params.items()}
        return {n: self._scores[n] for n in params}

    def _maybe_update(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        if step <= self._last_step:  # already done, or gradient accumulation (several batches, one step)
            return
        self._last_step = step
        if not should_update(self.schedule, step):
            return
        sparsity = float(self.schedule(step))
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(
                f"schedule({step}) returned {sparsity!r}; a sparsity schedule must return values in [0, 1)."
            )
        params = self._parameters()
        self._masks = compute_masks(self._current_scores(params), sparsity, self.scope)
        self.apply_masks()
        self._log(trainer, step, sparsity)
        self.on_masks_update(trainer, pl_module, step)

    def _log(self, trainer: pl.Trainer, step: int, target: float) -> None:
        zeros = {n: int((~m).sum()) for n, m in self._masks.items()}
        sizes = {n: m.numel() for n, m in self._masks.items()}
        metrics = {"sparsity/target": target, "sparsity/global": sum(zeros.values()) / max(1, sum(sizes.values()))}
        if self.log_per_layer:
            metrics.update({f"sparsity/{n}": zeros[n] / max(1, sizes[n]) for n in zeros})
        self.last_sparsity = metrics
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)

    def _remove_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    def _raise_mismatch(self, saved: list[str], selected: list[str]) -> None:
        raise ValueError(
            f"{type(self).__name__} holds masks for {len(saved)} parameters ({saved[:3]}...) but now selects "
            f"{len(selected)} ({selected[:3]}...). Resume with the same module selection (filter_fn / "
            f"module_types / name_regex / parameter_names) as the run that wrote the checkpoint."
        )


def _refuse_sharded(trainer: pl.Trainer, who: str) -> None:
    """Masks address whole named parameters and are applied after every optimizer step; FSDP and DeepSpeed
    flatten and shard the parameters, so each rank would mask the wrong (or no) values."""
    strategy = getattr(trainer, "strategy", None)
    name = type(strategy).__name__
    if getattr(trainer, "world_size", 1) > 1 and ("FSDP" in name or "DeepSpeed" in name):
        raise RuntimeError(
            f"{who} masks whole named parameters after every optimizer step; under {name} they are flattened and "
            "sharded across ranks, so the masks would not land on the right values. Use strategy='ddp' (tested), or "
            "prune in a single-process or DDP run and continue from the pruned weights."
        )
