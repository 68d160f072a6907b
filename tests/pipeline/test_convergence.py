"""Early stopping of the teacher: the best epoch's weights come back, the curve is recorded."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lit_compress.pipeline.convergence import EarlyStoppingOptions, RestoreBestWeights, curve_csv, improves, metric_mode


class Scripted(L.LightningModule):
    """A linear model whose validation loss is a given sequence; records its weight after each epoch."""

    def __init__(self, losses: list[float]) -> None:
        super().__init__()
        self.net = torch.nn.Linear(2, 1)
        self.losses, self.weights = losses, []

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return self.net(x).pow(2).mean() + 1.0

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.losses[self.current_epoch])
        self.log("val/acc", 1.0 - self.losses[self.current_epoch])

    def on_validation_epoch_end(self):
        self.weights.append(self.net.weight.detach().clone())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_stops_after_patience_and_restores_the_best_epoch(tmp_path) -> None:
    loader = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)
    module = Scripted([3.0, 1.0, 2.0, 1.5, 0.5, 0.1])
    options = EarlyStoppingOptions(patience=2, monitor="val/loss")
    stop = L.pytorch.callbacks.EarlyStopping(**options.callbacks()[0]["init_args"])
    best = RestoreBestWeights(**options.callbacks()[1]["init_args"])
    trainer = L.Trainer(max_epochs=6, callbacks=[stop, best], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, num_sanity_val_steps=0, default_root_dir=tmp_path)
    trainer.fit(module, loader, loader)
    assert len(module.weights) == 4, "epoch 1 was best; epochs 2 and 3 did not improve: stop after epoch 3"
    assert torch.equal(module.net.weight, module.weights[1]) and not torch.equal(module.weights[1], module.weights[3])
    assert best.summary() == {"monitor": "val/loss", "best_epoch": 1, "best": 1.0, "epochs": 4}
    trainer.validate(module, loader, verbose=False)
    assert len(best.history) == 4, "a validate() after fitting adds no epoch to the curve"
    assert curve_csv(best.history).splitlines()[:3] == ["epoch,step,val/acc,val/loss", "0,2,-2,3", "1,4,0,1"]
    state = best.state_dict()
    again = RestoreBestWeights("val/loss")
    again.load_state_dict(state)
    assert again.best_epoch == 1 and torch.equal(again.best_state["net.weight"], module.weights[1])


def test_mode_and_improvement() -> None:
    assert metric_mode("val/loss") == "min" and metric_mode("val/acc") == "max"
    assert improves(0.9, 1.0, "min") and not improves(0.95, 1.0, "min", min_delta=0.1)
    assert improves(0.5, None, "max") and not improves(float("nan"), None, "max")
    assert EarlyStoppingOptions(patience=0).callbacks() == []
    with pytest.raises(ValueError, match="must be a validation metric"):
        EarlyStoppingOptions(monitor="train/loss")
