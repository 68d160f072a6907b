"""Fold eval-mode BatchNorm into the convolution that feeds it, as the ONNX exporter does before ORT quantizes.

``BN(conv(x)) = conv'(x)`` with, per output channel ``c``, ``k_c = gamma_c / sqrt(var_c + eps)``,
``W'_c = k_c W_c`` and ``b'_c = k_c (b_c - mu_c) + beta_c`` (Jacob et al., 2018, sec. 3.2; Krishnamoorthi,
2018, sec. 2.5). The dynamo exporter's optimizer writes this folded ``Conv`` into the fp32 graph, so ONNX
Runtime's dynamic quantizer puts ``W'`` on its per-tensor grid, not ``W``: a per-tensor fake quantizer of the
unfolded model is off by the per-channel factors ``k_c``. (Per-channel symmetric grids commute with a positive
or negative per-channel factor, per-tensor grids do not.)

Which BatchNorm follows which conv is read from one forward pass (a BN whose input *is* a conv's output tensor,
and that conv's output feeds nothing else), not from module names.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import Tensor, nn


@torch.no_grad()
def conv_bn_pairs(model: nn.Module, example_inputs: Mapping[str, Tensor]) -> list[tuple[str, str]]:
    """``(conv_fqn, bn_fqn)`` for every ``nn.BatchNorm2d`` applied directly and only to an ``nn.Conv2d``'s output.

    Args:
        model: Called as ``model(**example_inputs)`` once, in eval mode (its mode is restored).
        example_inputs: A batch the forward accepts (e.g. ``{"pixel_values": ...}``).
    """
    outputs: dict[int, tuple[str, Tensor]] = {}  # id(conv output) -> (conv fqn, the tensor, kept alive)
    uses: dict[str, int] = {}  # conv fqn -> modules that consumed its outputs (a conv called twice counts twice)
    pairs: list[tuple[str, str]] = []
    handles = []

    def record(fqn: str):
        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            outputs[id(output)] = (fqn, output)
            uses.setdefault(fqn, 0)

        return hook

    def consume(fqn: str):
        def hook(module: nn.Module, args: tuple) -> None:
            for arg in args:
                if isinstance(arg, Tensor) and id(arg) in outputs:
                    conv = outputs[id(arg)][0]
                    uses[conv] += 1
                    if isinstance(module, nn.BatchNorm2d):
                        pairs.append((conv, fqn))

        return hook

    for fqn, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(record(fqn)))
        if not list(module.children()):  # leaves consume tensors
            handles.append(module.register_forward_pre_hook(consume(fqn)))
    was_training = model.training
    try:
        model.eval()(**example_inputs)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return [(conv, bn) for conv, bn in pairs if uses[conv] == 1]


@torch.no_grad()
def fold_batchnorm(model: nn.Module, example_inputs: Mapping[str, Tensor], inplace: bool = False) -> nn.Module:
    """Fold every eval-mode BatchNorm2d that follows a Conv2d into it (the BN becomes ``nn.Identity``).

    Exact up to float rounding in eval mode (the formula in the module docstring); the convs gain a bias. A BN
    without running statistics is left alone, and so is a conv whose output feeds more than one module.

    Args:
        model: The model (not modified unless ``inplace``).
        example_inputs: A batch the forward accepts, to find the conv -> BN pairs.
        inplace: Fold into ``model`` itself.
    """
    out = model if inplace else copy.deepcopy(model)
    for conv_name, bn_name in conv_bn_pairs(out, example_inputs):
        conv, bn = out.get_submodule(conv_name), out.get_submodule(bn_name)
        assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
        if bn.running_mean is None or bn.running_var is None:
            continue  # no running statistics: eval mode normalises with the batch's own, nothing to fold
        mean, var = bn.running_mean, bn.running_var
        gamma = bn.weight if bn.weight is not None else torch.ones(bn.num_features)
        beta = bn.bias if bn.bias is not None else torch.zeros(bn.num_features)
        k = gamma.double() / torch.sqrt(var.double() + bn.eps)
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(k)
        weight = conv.weight.double() * k.reshape(-1, *[1] * (conv.weight.dim() - 1))
        conv.weight = nn.Parameter(weight.to(conv.weight.dtype))
        conv.bias = nn.Parameter((k * (bias - mean.double()) + beta.double()).to(conv.weight.dtype))
        out.set_submodule(bn_name, nn.Identity())
    return out


def example_pixel_values(model: nn.Module, batch: int = 2) -> dict[str, Tensor]:
    """``{"pixel_values": zeros(batch, C, H, W)}`` from an image model's ``config.num_channels`` / ``image_size``.

    Raises:
        ValueError: The model has no such config (pass real ``example_inputs`` instead).
    """
    config = getattr(model, "config", None)
    channels, size = getattr(config, "num_channels", None), getattr(config, "image_size", None)
    if channels is None or size is None:
        raise ValueError(
            f"{type(model).__name__} has no config.num_channels / config.image_size to build an example image "
            "batch from; fold BatchNorm with fold_batchnorm(model, {'pixel_values': <a batch>}) instead."
        )
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    weight = next(model.parameters())
    return {"pixel_values": torch.zeros(batch, int(channels), int(height), int(width), device=weight.device)}
