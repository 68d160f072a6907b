"""The resumable training loader: DataLoader(shuffle=True)'s order, and an exact continuation mid-epoch."""

from __future__ import annotations

import io

import torch
from torch.utils.data import DataLoader

from lit_compress.data.resumable import ResumableLoader
from lit_compress.utils.resume import ExactResume, _set_random_state

DATA = list(range(23))


def _batches(loader, epochs: int) -> list[list[int]]:
    return [batch.tolist() for _ in range(epochs) for batch in loader]


def test_same_order_as_a_shuffling_dataloader() -> None:
    torch.manual_seed(5)
    expected = _batches(DataLoader(DATA, batch_size=4, shuffle=True), 3)
    torch.manual_seed(5)
    assert _batches(ResumableLoader(DATA, batch_size=4), 3) == expected


def test_a_saved_position_continues_the_epoch_and_the_next_epochs_as_before() -> None:
    torch.manual_seed(7)
    loader = ResumableLoader(DATA, batch_size=4)
    reference = _batches(loader, 2)
    torch.manual_seed(7)
    first = ResumableLoader(DATA, batch_size=4)
    it = iter(first)
    seen = [next(it).tolist() for _ in range(3)]
    state = {"loader": first.state_dict(), "random": ExactResume().state_dict()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # what a Lightning checkpoint round trip gives
    torch.manual_seed(999)  # a new process: other random state
    second = ResumableLoader(DATA, batch_size=4)
    second.load_state_dict(saved["loader"])
    it = iter(second)  # building the iterator draws a base seed: the random state is restored after it,
    _set_random_state(saved["random"])  # as ExactResume does at on_train_start
    rest = [batch.tolist() for batch in it] + _batches(second, 1)  # the rest of epoch 1, then epoch 2
    assert saved["loader"]["handed_out"] == 12
    assert seen + rest == reference


def test_an_injected_sampler_wins_and_has_no_state() -> None:
    sampler = torch.utils.data.SequentialSampler(DATA)
    loader = ResumableLoader(DATA, batch_size=5, sampler=sampler)
    assert loader.sampler is sampler and loader.state_dict() == {}
    assert _batches(loader, 1)[0] == [0, 1, 2, 3, 4]
