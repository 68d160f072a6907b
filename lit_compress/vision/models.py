"""Small MNIST CNNs from the seeds: LeNet-5 (seed 003) and the TF pruning tutorial's CNN (seed 001)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LeNet(nn.Module):
    """LeNet-5 as in seed 003 (conv 6@5x5 -> conv 16@5x5 -> 120 -> 84 -> 10, ReLU + max-pool).

    ``conv1`` pads by 2 so that 28x28 MNIST digits give the 16x5x5 feature map the original 32x32 input
    did (LeCun et al. 1998 padded the digits the same way). 61,706 parameters.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class TutorialCNN(nn.Module):
    """The CNN of seed 001 (TF-MOT pruning tutorial): conv 12@3x3 + ReLU -> max-pool 2 -> dense 10.

    20,410 parameters, as in the tutorial's ``model.summary()``.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 12, 3)
        self.dense = nn.Linear(12 * 13 * 13, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        return self.dense(torch.flatten(x, 1))


def build_cnn(arch: str, num_classes: int = 10) -> nn.Module:
    """Build ``"lenet5"`` (:class:`LeNet`) or ``"tutorial"`` (:class:`TutorialCNN`)."""
    if arch == "lenet5":
        return LeNet(num_classes)
    if arch == "tutorial":
        return TutorialCNN(num_classes)
    raise ValueError(f"arch={arch!r} is unknown; use 'lenet5' (seed 003's LeNet) or 'tutorial' (seed 001's CNN).")


def conv_and_linear(module: nn.Module, name: str) -> bool:
    """``filter_fn`` selecting every ``Conv2d`` and ``Linear`` layer (what seeds 001 and 003 prune)."""
    return isinstance(module, (nn.Conv2d, nn.Linear))
