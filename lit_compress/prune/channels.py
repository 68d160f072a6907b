"""Structured pruning of CNN channels with Torch-Pruning: the pure, Trainer-free core (the Lightning callback is
:class:`~lit_compress.prune.channel_callback.ChannelPruning`).

Channels are removed whole, so the pruned network is really smaller and faster. Which channels are coupled
(a residual stage's convolutions and BatchNorms that add their outputs, a depthwise convolution and the
expansion that feeds it, the next layer's input channels) comes from torch-pruning's ``DependencyGraph`` (Fang
et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023): every *group* of coupled channels is one unit
row, scored and cut together. The final classifier (the last Conv2d/Linear the forward pass calls) is never cut.

Importance per channel of a group (higher = keep), torch-pruning's group importances with ``mean`` reduction
over the group's members and ``mean`` normalisation per group:

* ``"magnitude"``: ``MagnitudeImportance(p=2)``, the squared L2 norm of every coupled weight slice (Li et al.,
  "Pruning Filters for Efficient ConvNets", ICLR 2017; grouped as in DepGraph). Data-free.
* ``"taylor"``: ``GroupTaylorImportance``, ``|w · ∂L/∂w|`` summed over each slice (Molchanov et al.,
  "Importance Estimation for Neural Network Pruning", CVPR 2019), from the gradients in ``.grad`` now (the
  callback: the last training batch's).

Ratios are absolute: ``ratio`` is the fraction of the *original* channels of each group (``scope="layer"``) or
of all groups together (``scope="global"``) removed once the call returns; groups keep a multiple of
``round_to`` (at least one), so repeated calls with a growing ratio never compound.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lit_compress.models.geometry import zero_images
from lit_compress.prune.structured import Scope, select_units

Ratio = float | Callable[[int], float]
Importance = Literal["magnitude", "taylor"]
#: Largest parameter whose element positions float32 represents exactly (the optimizer-state remap below).
_EXACT_FLOAT32 = 2**24


@dataclass
class ElementRemap:
    """How one parameter was cut: ``new.flatten() == old.flatten()[index]`` (``index`` None: not traceable)."""

    old: nn.Parameter
    new: nn.Parameter
    index: Tensor | None

    def apply(self, value: Tensor) -> Tensor:
        """Cut ``value`` (a tensor shaped like ``old``: a gradient, an Adam moment) as the parameter was cut."""
        assert self.index is not None
        return value.flatten()[self.index.to(value.device)].view(self.new.shape)


@dataclass
class ChannelPruningReport:
    """Outcome of :func:`prune_channels`.

    Attributes:
        original: Per group (named by its root module), the channels of the unpruned model.
        before / after: Per group, the channels before and after the call.
        params_before / params_after: Parameter counts. macs_before / macs_after: multiply-accumulates of one
            example, counted by torch-pruning's op counter (``None`` when not measured).
        remaps: The parameters that changed (for optimizer state).
    """

    original: dict[str, int]
    before: dict[str, int]
    after: dict[str, int]
    params_before: int
    params_after: int
    macs_before: int | None = None
    macs_after: int | None = None
    remaps: list[ElementRemap] = field(default_factory=list)

    @property
    def removed_fraction(self) -> float:
        """Fraction of the original prunable channels removed so far: ``1 − Σ after / Σ original``."""
        return 1.0 - sum(self.after.values()) / max(1, sum(self.original.values()))


def _forward(model: nn.Module, inputs: Any) -> Tensor:
    out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    return getattr(out, "logits", out)


def output_layers(model: nn.Module, inputs: Any) -> list[nn.Module]:
    """The last ``Conv2d``/``Linear`` a forward pass of ``model`` calls (the classifier: never pruned)."""
    called: list[nn.Module] = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: called.append(mod))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]  # fmt: skip
    try:
        with torch.no_grad():
            _forward(model, inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return called[-1:]


def channel_groups(model: nn.Module, inputs: Any, ignore: Sequence[str] = ()) -> list[tuple[str, Any]]:
    """Trace ``model`` (eval mode, modes restored) and return its prunable channel groups as ``(root name, group)``.

    Raises:
        ValueError: An ``ignore`` name is not a module of ``model``.
    """
    import torch_pruning as tp

    names = {m: n for n, m in model.named_modules()}
    missing = [n for n in ignore if n not in set(names.values())]
    if missing:
        raise ValueError(f"ignore names {missing}, which are not modules of {type(model).__name__}.")
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        ignored = output_layers(model, inputs) + [model.get_submodule(n) for n in ignore]
        with torch.enable_grad():
            dg = tp.DependencyGraph().build_dependency(model, example_inputs=inputs, output_transform=_logits_of)
    finally:
        for module, training in modes.items():
            module.training = training
    groups = dg.get_all_groups(ignored_layers=ignored, root_module_types=[nn.Conv2d, nn.Linear])
    return [(names[g[0].dep.target.module], g) for g in groups]


def _logits_of(out: Any) -> Tensor:
    return getattr(out, "logits", out)


def original_channels(model: nn.Module) -> dict[str, int] | None:
    """Output channels per module of the default (unpruned) build of an ``ImageClassifier``; else ``None``."""
    from lit_compress.vision.classifier import ImageClassifier, default_shapes

    if not isinstance(model, ImageClassifier):
        return None
    return {f"net.{k}": v[1] if len(v) > 1 else v[0] for k, v in default_shapes(model.config).items()}


def prune_channels(
    model: nn.Module,
    ratio: float,
    *,
    importance: Importance = "magnitude",
    scope: Scope = "layer",
    round_to: int = 1,
    ignore: Sequence[str] | None = None,
    original: Mapping[str, int] | None = None,
    example_inputs: Any = None,
    measure: bool = True,
) -> ChannelPruningReport:
    """Remove the least important channels of ``model`` in place so that ``ratio`` of the original ones are gone.

    Args:
        model: A CNN (e.g. an :class:`~lit_compress.vision.classifier.ImageClassifier`).
        ratio: Fraction of the original channels removed, in ``[0, 1]``.
        importance: ``"magnitude"`` (data-free) or ``"taylor"`` (needs ``.grad`` from a backward pass).
        scope: ``"layer"`` (each group loses ``ratio``) or ``"global"`` (normalised scores ranked across groups).
        round_to: Each group keeps a multiple of this many channels (at least one multiple).
        ignore: Qualified names of further modules whose output channels are kept.
        original: Per group root name, the unpruned channel count (default: the default build of an
            ``ImageClassifier``'s config, else the channels now).
        example_inputs: Inputs for tracing (default: zeros shaped by ``model.config``).
        measure: Count MACs before and after (one forward of one example each).

    Raises:
        ValueError: A ratio outside [0, 1], an unknown importance or scope, ``round_to < 1``.
        RuntimeError: ``importance="taylor"`` without gradients.
    """
    _validate(ratio, importance, scope, round_to)
    inputs = example_inputs if example_inputs is not None else zero_images(model)
    groups = channel_groups(model, inputs, ignore or ())
    current = {name: len(g[0].idxs) for name, g in groups}
    default = original if original is not None else original_channels(model) or {}
    origin = {name: int(default.get(name, n)) for name, n in current.items()}
    params_before, macs_before = _count(model), _macs(model, inputs) if measure else None
    scores = _scores(groups, importance)
    kept = select_units(scores, [origin[n] for n, _ in groups], ratio, scope=scope, min_keep=round_to, round_to=round_to)
    remaps = _cut(model, [(g, k) for (_, g), k in zip(groups, kept)])
    return ChannelPruningReport(
        original=origin, before=current, after={n: len(k) for (n, _), k in zip(groups, kept)},
        params_before=params_before, params_after=_count(model),
        macs_before=macs_before, macs_after=_macs(model, inputs) if measure else None, remaps=remaps,
    )  # fmt: skip


def _validate(ratio: float, importance: str, scope: str, round_to: int) -> None:
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"channel_pruning_ratio must be in [0, 1] (fraction of the original channels); got {ratio}.")
    if importance not in ("magnitude", "taylor"):
        raise ValueError(f"importance must be 'magnitude' or 'taylor'; got {importance!r}.")
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global'; got {scope!r}.")
    if round_to < 1:
        raise ValueError(f"round_to must be >= 1; got {round_to}.")


def _scores(groups: list[tuple[str, Any]], importance: str) -> list[Tensor]:
    import torch_pruning as tp

    if importance == "taylor":
        if any(dep.target.module.weight.grad is None for _, g in groups for dep, _ in g
               if isinstance(dep.target.module, (nn.Conv2d, nn.Linear))):  # fmt: skip
            raise RuntimeError("Taylor importance needs gradients: call after loss.backward() and before zero_grad().")
        scorer = tp.importance.GroupTaylorImportance(group_reduction="mean", normalizer="mean")
    else:
        scorer = tp.importance.MagnitudeImportance(p=2, group_reduction="mean", normalizer="mean")
    return [scorer(g).detach().float().cpu() for _, g in groups]


def _cut(model: nn.Module, plan: list[tuple[Any, Tensor]]) -> list[ElementRemap]:
    """Prune each group down to its kept root channels; trace each parameter's kept elements through ``.grad``.

    torch-pruning cuts a parameter and its ``.grad`` with the same ``index_select``s, so a ``.grad`` holding each
    element's flat position comes out holding the kept positions (exact for float32 up to 2**24 elements). The
    real gradients are restored (cut the same way) afterwards.
    """
    todo = [(g, k) for g, k in plan if len(k) < len(g[0].idxs)]
    if not todo:
        return []
    before = dict(model.named_parameters())
    grads = {n: p.grad for n, p in before.items()}
    for p in before.values():
        traceable = p.dtype in (torch.float32, torch.float64) and p.numel() <= _EXACT_FLOAT32
        p.grad = torch.arange(p.numel(), dtype=p.dtype, device=p.device).view(p.shape) if traceable else None
    try:
        for group, keep in todo:
            drop = sorted(set(range(len(group[0].idxs))) - set(keep.tolist()))
            group.prune(idxs=drop)
    finally:
        after = dict(model.named_parameters())
        remaps = _remaps(before, after)
        by_new = {id(r.new): r for r in remaps}
        for name, p in after.items():
            real, r = grads.get(name), by_new.get(id(p))
            p.grad = real if r is None else (r.apply(real) if real is not None and r.index is not None else None)
    return remaps


def _remaps(before: dict[str, nn.Parameter], after: dict[str, nn.Parameter]) -> list[ElementRemap]:
    remaps = []
    for name, new in after.items():
        old = before[name]
        if new is not old:
            index = new.grad.detach().flatten().round().long().cpu() if new.grad is not None else None
            remaps.append(ElementRemap(old, new, index))
    return remaps


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _macs(model: nn.Module, inputs: Any) -> int:
    import torch_pruning as tp

    key, tensor = next(iter(inputs.items())) if isinstance(inputs, dict) else (None, inputs)
    with torch.no_grad():
        macs, _ = tp.utils.count_ops_and_params(_LogitsOnly(model, key), tensor)
    return int(macs)


class _LogitsOnly(nn.Module):
    """``model``'s logits from one positional tensor (what the op counter calls and wants back)."""

    def __init__(self, model: nn.Module, key: str | None) -> None:
        super().__init__()
        self.model, self.key = model, key

    def forward(self, x: Tensor) -> Tensor:
        return _forward(self.model, {self.key: x} if self.key else x)


def remap_optimizer_elements(optimizer: torch.optim.Optimizer, remaps: Sequence[ElementRemap]) -> None:
    """Point ``optimizer`` at the cut parameters and cut their state (Adam moments, momentum) the same way.

    Scalar state (Adam's ``step``) is kept, so bias correction and LR schedules continue; a parameter whose cut
    could not be traced (``index`` None) restarts with empty state.
    """
    by_id = {id(r.old): r for r in remaps}
    for group in optimizer.param_groups:
        group["params"] = [by_id[id(p)].new if id(p) in by_id else p for p in group["params"]]
    for r in remaps:
        state = optimizer.state.pop(r.old, None)
        if state is not None and r.index is not None:
            optimizer.state[r.new] = {
                k: r.apply(v) if isinstance(v, Tensor) and v.shape == r.old.shape else v for k, v in state.items()
            }
