"""A shuffling training loader that resumes in the middle of an epoch exactly where a checkpoint left it.

Lightning saves and restores the state of a loader that has ``state_dict`` / ``load_state_dict`` (its
``_Stateful`` protocol) with the fit loop's progress. :class:`ResumableLoader` keeps the two things a restart
needs: the seed of the current epoch's permutation and how many examples of it were already handed out (a sized
loader is not prefetched, so that is what the training loop consumed). Each epoch draws its seed from the global
torch generator exactly as ``DataLoader(shuffle=True)`` does, so the order is the same as a plain shuffling
loader's, and together with the random state restored from the checkpoint
(:class:`~lit_compress.utils.resume.ExactResume`) a resumed run sees the same batches in the same
order as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler


class ResumableRandomSampler(RandomSampler):
    """``RandomSampler`` without replacement whose epoch seed and position can be saved and restored.

    A ``RandomSampler`` subclass, so tools that ask whether a loader shuffles (Lightning, when it swaps in a
    ``DistributedSampler`` under DDP) see that it does.
    """

    def __init__(self, data_source: Sized) -> None:
        super().__init__(data_source)  # type: ignore[arg-type]
        self.epoch_seed: int | None = None
        self.handed_out = 0
        self._resume: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.data_source)

    def __iter__(self) -> Iterator[int]:
        n = len(self.data_source)
        seed, skip = self._resume if self._resume is not None else (None, 0)
        self._resume = None
        if seed is None or skip >= n:  # a new epoch: draw as RandomSampler does, from the global generator
            seed, skip = int(torch.empty((), dtype=torch.int64).random_().item()), 0
        self.epoch_seed, self.handed_out = seed, skip
        generator = torch.Generator()
        generator.manual_seed(seed)
        for index in torch.randperm(n, generator=generator).tolist()[skip:]:
            self.handed_out += 1
            yield index

    def state_dict(self) -> dict[str, int | None]:
        return {"epoch_seed": self.epoch_seed, "handed_out": self.handed_out}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next ``__iter__`` continue the saved epoch after the examples already handed out."""
        if state.get("epoch_seed") is not None:
            self._resume = (int(state["epoch_seed"]), int(state["handed_out"]))


class ResumableLoader(DataLoader):
    """A shuffling ``DataLoader`` (over :class:`ResumableRandomSampler`) with Lightning's loader-state protocol.

    It always shuffles (``shuffle`` is accepted and ignored). A ``sampler`` passed in wins (Lightning re-creates the loader with a ``DistributedSampler`` under DDP, whose
    position is not saved: there a mid-epoch resume restarts the epoch's order).
    """

    def __init__(self, dataset: Any, sampler: Any = None, shuffle: bool | None = None, **kwargs: Any) -> None:
        super().__init__(dataset, sampler=sampler if sampler is not None else ResumableRandomSampler(dataset),
                         **kwargs)  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        save = getattr(self.sampler, "state_dict", None)
        return save() if callable(save) else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load = getattr(self.sampler, "load_state_dict", None)
        if state and callable(load):
            load(state)


class SplitLoaders:
    """The four loaders of a classification datamodule, from its ``_loader(split, batch_size, shuffle)``: the
    training split shuffled (a :class:`ResumableLoader`), validation and test in order at ``eval_batch_size``,
    and prediction over the test split. Mixed into the text and the image datamodules."""

    batch_size: int
    eval_batch_size: int

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)
