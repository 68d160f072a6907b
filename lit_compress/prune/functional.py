"""Pure, Trainer-free unstructured pruning: select parameters, build top-k masks, apply, measure, strip.

Masks are boolean tensors keyed by the parameter's fully qualified name (``"bert.encoder.layer.0...weight"``).
Every mask is built for an *absolute* target sparsity from fresh scores, so calling it twice with 50% gives
50% -- unlike repeated ``torch.nn.utils.prune`` calls, which prune a fraction of what is *left* (50% then 75%).

Honest size: zeros in a dense tensor change neither the file size nor the speed of dense kernels. What they
change is the *nonzero fraction* and the *compressed* size (seed 001: gzip makes the pruned model 3x smaller);
:func:`sparsity_report` and :func:`serialized_size` report exactly those.
"""

from __future__ import annotations

import gzip
import io
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

FilterFn = Callable[[nn.Module, str], bool]
Scope = Literal["local", "global"]


def encoder_linear_filter(module: nn.Module, name: str) -> bool:
    """Default selection: ``nn.Linear`` layers whose qualified name contains ``"encoder"`` (BERT encoders).

    Embeddings, the pooler and the classifier head are left dense unless asked for.
    """
    return isinstance(module, nn.Linear) and "encoder" in name


def module_filter(
    module_types: Sequence[type[nn.Module]] | None = None, name_regex: str | None = None
) -> FilterFn:
    """Build a ``filter_fn(module, name)`` from module types and/or a regex searched in the module name."""
    types = tuple(module_types) if module_types else (nn.Module,)
    pattern = re.compile(name_regex) if name_regex is not None else None

    def selected(module: nn.Module, name: str) -> bool:
        return isinstance(module, types) and (pattern is None or pattern.search(name) is not None)

    return selected


def select_parameters(
    model: nn.Module, filter_fn: FilterFn = encoder_linear_filter, parameter_names: Sequence[str] = ("weight",)
) -> dict[str, nn.Parameter]:
    """Return ``{qualified_name: parameter}`` for ``parameter_names`` of the modules ``filter_fn`` accepts."""
    selected: dict[str, nn.Parameter] = {}
    for module_name, module in model.named_modules():
        if not filter_fn(module, module_name):
            continue
        for param_name in parameter_names:
            param = module._parameters.get(param_name)
            if param is not None:
                selected[f"{module_name}.{param_name}" if module_name else param_name] = param
    return selected


def num_to_prune(numel: int, sparsity: float) -> int:
    """Number of entries to zero for an absolute ``sparsity`` (``round(sparsity * numel)``, as torch does)."""
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity={sparsity!r} must be in [0, 1].")
    return int(round(sparsity * numel))


def topk_mask(scores: Tensor, n_prune: int) -> Tensor:
    """Boolean mask (``True`` = kept) that drops the ``n_prune`` lowest scores of ``scores``."""
    mask = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    if n_prune > 0:
        mask[torch.topk(scores.flatten(), n_prune, largest=False, sorted=False).indices] = False
    return mask.view_as(scores)


def local_masks(scores: Mapping[str, Tensor], sparsity: float) -> dict[str, Tensor]:
    """Per-tensor top-k: every tensor ends with ``round(sparsity * numel)`` zeros."""
    return {name: topk_mask(s, num_to_prune(s.numel(), sparsity)) for name, s in scores.items()}


def global_masks(scores: Mapping[str, Tensor], sparsity: float) -> dict[str, Tensor]:
    """Top-k across all tensors at once (seed 003's ``global_unstructured``): layers may end up unevenly sparse."""
    if not scores:
        return {}
    flat = torch.cat([s.detach().flatten().float() for s in scores.values()])
    keep = topk_mask(flat, num_to_prune(flat.numel(), sparsity))
    masks, offset = {}, 0
    for name, s in scores.items():
        masks[name] = keep[offset : offset + s.numel()].view_as(s).to(s.device)
        offset += s.numel()
    return masks


def compute_masks(scores: Mapping[str, Tensor], sparsity: float, scope: Scope = "local") -> dict[str, Tensor]:
    """Dispatch to :func:`local_masks` or :func:`global_masks`."""
    if scope == "local":
        return local_masks(scores, sparsity)
    if scope == "global":
        return global_masks(scores, sparsity)
    raise ValueError(f"scope={scope!r} is unknown; use 'local' (per layer) or 'global' (across layers).")


@torch.no_grad()
def apply_masks(params: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> None:
    """Zero the masked entries in place: ``W <- W * M`` for every name in ``masks``."""
    for name, mask in masks.items():
        param = params[name]
        param.masked_fill_(~mask.to(param.device, torch.bool), 0)


@dataclass(frozen=True)
class SparsityReport:
    """Zero counts per tensor and overall.

    Attributes:
        zeros: ``{name: number of exact zeros}``.
        sizes: ``{name: numel}``.
    """

    zeros: dict[str, int]
    sizes: dict[str, int]

    @property
    def per_tensor(self) -> dict[str, float]:
        """``{name: zero fraction}``."""
        return {name: self.zeros[name] / max(1, self.sizes[name]) for name in self.sizes}

    @property
    def global_sparsity(self) -> float:
        """Zeros over all reported entries."""
        return sum(self.zeros.values()) / max(1, sum(self.sizes.values()))

    @property
    def nonzero_fraction(self) -> float:
        """``1 - global_sparsity``: the share of weights a sparse format would have to store."""
        return 1.0 - self.global_sparsity


def sparsity_report(tensors: Mapping[str, Tensor]) -> SparsityReport:
    """Count exact zeros in every tensor of ``tensors``."""
    zeros = {name: int((t == 0).sum()) for name, t in tensors.items()}
    return SparsityReport(zeros=zeros, sizes={name: t.numel() for name, t in tensors.items()})


def effective_parameters(
    model: nn.Module, filter_fn: FilterFn | None = None, parameter_names: Sequence[str] = ("weight",)
) -> dict[str, Tensor]:
    """Weights as the forward pass sees them, including ``torch.nn.utils.prune``'s ``orig * mask``."""
    tensors: dict[str, Tensor] = {}
    for module_name, module in model.named_modules():
        if filter_fn is not None and not filter_fn(module, module_name):
            continue
        for param_name in parameter_names:
            if param_name in module._parameters or f"{param_name}_orig" in module._parameters:
                value = getattr(module, param_name)
                if isinstance(value, Tensor):
                    tensors[f"{module_name}.{param_name}" if module_name else param_name] = value.detach()
    return tensors


def model_sparsity(
    model: nn.Module, filter_fn: FilterFn | None = None, parameter_names: Sequence[str] = ("weight",)
) -> SparsityReport:
    """Sparsity of ``parameter_names`` in all modules (or those ``filter_fn`` accepts)."""
    return sparsity_report(effective_parameters(model, filter_fn, parameter_names))


def _reparametrized(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """``(module name, module, tensor name)`` for every ``torch.nn.utils.prune`` reparametrization."""
    found = []
    for module_name, module in model.named_modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                found.append((module_name, module, hook._tensor_name))
    return found


def strip_pruning(model: nn.Module) -> nn.Module:
    """Make ``torch.nn.utils.prune`` permanent in place: ``weight_orig``/``weight_mask`` become a plain ``weight``.

    The equivalent of TF-MOT's ``strip_pruning``; a no-op for models pruned by this package's masks, whose
    weights already hold the zeros. Returns ``model``.
    """
    for _, module, name in _reparametrized(model):
        torch_prune.remove(module, name)
    return model


def stripped_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """``model.state_dict()`` as it would be after :func:`strip_pruning`, without modifying ``model``."""
    state = dict(model.state_dict())
    for module_name, module, name in _reparametrized(model):
        key = f"{module_name}.{name}" if module_name else name
        state[key] = getattr(module, name).detach()
        del state[f"{key}_orig"], state[f"{key}_mask"]
    return state


@dataclass(frozen=True)
class SerializedSize:
    """Bytes of ``torch.save(state_dict)`` before and after gzip (level 9)."""

    raw_bytes: int
    gzip_bytes: int


def serialized_size(model_or_state_dict: nn.Module | Mapping[str, Tensor]) -> SerializedSize:
    """Size of the stripped state dict, raw and gzip-compressed (seed 001's ``get_gzipped_model_size``).

    A module still carrying ``torch.nn.utils.prune`` reparametrizations is measured as if stripped (the
    module is left as it is), so the figure never counts the training-only ``*_orig``/``*_mask`` tensors.
    """
    if isinstance(model_or_state_dict, nn.Module):
        state = stripped_state_dict(model_or_state_dict)
    else:
        state = dict(model_or_state_dict)
        leftovers = [k for k in state if k.endswith(("_orig", "_mask"))]
        if leftovers:
            raise ValueError(
                f"state dict still holds pruning reparametrizations ({leftovers[:3]}...); call "
                f"lit_compress.prune.strip_pruning(model) and pass the model instead."
            )
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in state.items()}, buffer)
    raw = buffer.getvalue()
    return SerializedSize(raw_bytes=len(raw), gzip_bytes=len(gzip.compress(raw, compresslevel=9, mtime=0)))


def global_l1_unstructured(parameters: Sequence[tuple[nn.Module, str]], amount: float | int) -> None:
    """Seed 003: ``prune.global_unstructured(parameters, pruning_method=prune.L1Unstructured, amount=amount)``.

    Note: torch's ``amount`` is a share of the entries *not yet pruned*, so a second call compounds
    (0.2 then 0.2 leaves 1 - 0.8**2 = 36% zeros). Use :func:`global_masks` for an absolute target.
    """
    torch_prune.global_unstructured(parameters, pruning_method=torch_prune.L1Unstructured, amount=amount)


def ln_structured(
    module: nn.Module, name: str = "weight", amount: float | int = 0.2, n: int = 2, dim: int = 0
) -> nn.Module:
    """Seed 003: zero the ``amount`` of slices along ``dim`` with the smallest L``n`` norm (whole rows/filters).

    Thin wrapper over ``torch.nn.utils.prune.ln_structured``; the tensor keeps its shape (zeros, not a smaller
    layer -- see ``lit_compress.prune.structured`` for pruning that really removes channels).
    """
    return torch_prune.ln_structured(module, name, amount=amount, n=n, dim=dim)
