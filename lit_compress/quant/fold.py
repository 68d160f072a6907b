"""Fold eval-mode BatchNorm into the convolution that feeds it, as the ONNX exporter does before ORT quantizes.

``BN(conv(x)) = conv'(x)`` with, per output channel ``c``, ``k_c = gamma_c / sqrt(var_c + eps)``,
``W'_c = k_c W_c`` and ``b'_c = k_c (b_c - mu_c) + beta_c`` (Jacob et al., 2018, sec. 3.2; Krishnamoorthi,
2018, sec. 2.5). The dynamo exporter's optimizer writes this folded ``Conv`` into the fp32 graph, so ONNX
Runtime's dynamic quantizer puts ``W'`` on its per-tensor grid, not ``W``: a per-tensor fake quantizer of the
unfolded model is off by the per-channel factors ``k_c``. (Per-channel symmetric grids commute with a positive
or negative per-channel factor, per-tensor grids do not.)

:func:`fold_batchnorm` does the same in the model (the BN becomes a per-channel bias, a
:class:`FoldedBatchNorm2d` with the same state-dict keys), so a fake quantizer sees ``W'``. Which BatchNorm
follows which conv is read from one forward pass (a BN whose input *is* a conv's output tensor, and that conv's
output feeds nothing else), not from module names.
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


class FoldedBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d folded into the conv before it: ``y = x + beta`` (per channel), in training too.

    It keeps BatchNorm2d's parameters and buffers, set so that a plain BatchNorm2d loading this state in eval
    mode computes the same up to float rounding (``mu = 0``, ``var = 1 - eps``, ``gamma = 1`` and frozen), so a
    folded model saves and reloads with its original structure (``save_pretrained`` / ``load_state_dict``).
    Its forward is an ``Add``, which the exporter folds into the conv's bias.
    """

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bias.reshape(1, -1, 1, 1)


@torch.no_grad()
def fold_batchnorm(model: nn.Module, example_inputs: Mapping[str, Tensor], inplace: bool = False) -> nn.Module:
    """Fold every eval-mode BatchNorm2d that follows a Conv2d into it (the BN becomes :class:`FoldedBatchNorm2d`).

    ``W <- k W`` in place (the same Parameter object), and the BN's ``beta <- k (b - mu) + beta`` (the conv's
    bias, if any, moves there and becomes 0): exact up to float rounding in eval mode (the module docstring's
    formula), and the state-dict keys stay those of the model. A BN without running statistics is left alone,
    and so is a conv whose output feeds more than one module. Folding twice changes nothing.

    Args:
        model: The model (not modified unless ``inplace``).
        example_inputs: A batch the forward accepts, to find the conv -> BN pairs.
        inplace: Fold into ``model`` itself.
    """
    out = model if inplace else copy.deepcopy(model)
    for conv_name, bn_name in conv_bn_pairs(out, example_inputs):
        conv, bn = out.get_submodule(conv_name), out.get_submodule(bn_name)
        if type(bn) is not nn.BatchNorm2d or bn.running_mean is None or bn.running_var is None or not bn.affine:
            continue  # already folded, or no running statistics / affine parameters to fold
        k = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(k)
        conv.weight.mul_(k.reshape(-1, *[1] * (conv.weight.dim() - 1)).to(conv.weight.dtype))
        if conv.bias is not None:
            conv.bias.zero_()
        folded = FoldedBatchNorm2d(bn.num_features, bn.eps, bn.momentum, device=bn.weight.device,
                                   dtype=bn.weight.dtype)  # fmt: skip
        folded.bias.copy_(k * (bias - bn.running_mean.double()) + bn.bias.double())
        folded.running_var.fill_(1.0 - bn.eps)
        folded.num_batches_tracked.copy_(bn.num_batches_tracked)
        folded.weight.requires_grad_(False)
        out.set_submodule(bn_name, folded.train(bn.training))
    return out
