from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lit_compress.prune import LotteryTicket

torch.manual_seed(0)
X, Y = torch.randn(32, 8), torch.randint(0, 3, (32,))


def batch_for(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    i = step % 4 * 8
    return X[i : i + 8], Y[i : i + 8]


class MLP(pl.LightningModule):
    """Two Linear layers; the batch is chosen by optimizer step so resumed runs see the same data."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))

    def training_step(self, batch, batch_idx):
        x, y = batch_for(self.trainer.global_step)
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.05)


class RecordingTicket(LotteryTicket):
    def __init__(self, **kwargs) -> None:
        super().__init__(module_types=[nn.Linear], permanent_at_fit_end=False, **kwargs)
        self.rounds_seen: list[dict] = []

    def on_masks_update(self, trainer, pl_module, step):
        super().on_masks_update(trainer, pl_module, step)
        self.rounds_seen.append({
            "step": step,
            "weights": {n: p.detach().clone() for n, p in pl_module.named_parameters()},
            "masks": self.masks,
            "optimizer_state": len(trainer.optimizers[0].state),
        })


def loader() -> DataLoader:
    return DataLoader(TensorDataset(X, Y), batch_size=8)


def fit(module: pl.LightningModule, max_steps: int, callbacks: list, ckpt_path: Path | None = None, **kwargs) -> None:
    options = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False)
    trainer = pl.Trainer(max_steps=max_steps, callbacks=callbacks, **{**options, **kwargs})
    trainer.fit(module, loader(), ckpt_path=ckpt_path)


def test_rewinding_to_init_restores_the_saved_values_under_nested_masks() -> None:
    module = MLP()
    init = {n: p.detach().clone() for n, p in module.named_parameters()}
    ticket = RecordingTicket(round_length=3, rounds=2, prune_fraction=0.5, rewind_step=0)
    fit(module, 7, [ticket])
    assert [r["step"] for r in ticket.rounds_seen] == [3, 6]
    assert all(torch.equal(ticket.snapshot[n], init[n]) for n in init)
    total = 8 * 16 + 16 * 3
    for r, expected_sparsity in zip(ticket.rounds_seen, (0.5, 0.75)):
        masks = r["masks"]
        assert sum(int((~m).sum()) for m in masks.values()) == round(expected_sparsity * total)
        for name, value in r["weights"].items():  # survivors hold their initial values, the rest are zero
            expected = init[name] * masks[name] if name in masks else init[name]
            assert torch.equal(value, expected), name
        assert r["optimizer_state"] == 0  # Adam moments cleared, as in a fresh run
    first, second = (r["masks"] for r in ticket.rounds_seen)
    assert all(not (second[n] & ~first[n]).any() for n in first)  # pruned weights stay pruned
    trained = dict(module.named_parameters())  # one more step after the last rewind: training went on
    assert not torch.equal(trained["net.0.weight"], ticket.rounds_seen[-1]["weights"]["net.0.weight"])
    zeros = sum(int((trained[n] == 0).sum()) for n in second)
    assert zeros == round(0.75 * total)


def test_late_rewinding_restores_the_weights_of_step_k() -> None:
    reference = MLP()
    fit(reference, 2, [])  # the same model after two optimizer steps
    after_two = {n: p.detach().clone() for n, p in reference.named_parameters()}
    ticket = RecordingTicket(round_length=4, rounds=1, prune_fraction=0.2, rewind_step=2)
    fit(MLP(), 4, [ticket])
    assert all(torch.equal(ticket.snapshot[n], after_two[n]) for n in after_two)
    (last,) = ticket.rounds_seen
    assert all(torch.equal(last["weights"][n], after_two[n] * last["masks"].get(n, 1)) for n in after_two)


def test_resume_between_rounds_rewinds_to_the_same_ticket(tmp_path: Path) -> None:
    def ticket() -> RecordingTicket:
        return RecordingTicket(round_length=3, rounds=2, prune_fraction=0.5)

    straight, cb_straight = MLP(), ticket()
    fit(straight, 8, [cb_straight])
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_train_steps=4)
    fit(MLP(), 5, [ticket(), checkpoint], enable_checkpointing=True)
    resumed, cb_resumed = MLP(), ticket()
    fit(resumed, 8, [cb_resumed], ckpt_path=tmp_path / "epoch=0-step=4.ckpt")
    assert [r["step"] for r in cb_resumed.rounds_seen] == [6]
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))
    assert all(torch.equal(cb_resumed.masks[n], m) for n, m in cb_straight.masks.items())


def test_lottery_ticket_validation() -> None:
    with pytest.raises(ValueError, match="rewind_step=5 must be an integer in \\[0, round_length=5\\)"):
        LotteryTicket(round_length=5, rounds=2, rewind_step=5, module_types=[nn.Linear])
    with pytest.raises(ValueError, match="prune_fraction=1.0"):
        LotteryTicket(round_length=5, rounds=2, prune_fraction=1.0)
    ticket = LotteryTicket(round_length=5, rounds=2, module_types=[nn.Linear])
    with pytest.raises(RuntimeError, match="no weights from step 0 to rewind to"):
        ticket.rewind(MLP())
