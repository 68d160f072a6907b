from __future__ import annotations

import copy
import math

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from lit_compress.prune import GradualPruning, PolynomialDecay, model_sparsity, serialized_size
from lit_compress.vision import LeNet, LeNetModule, MNISTDataModule, TutorialCNN, conv_and_linear


def quiet_trainer(**kwargs) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, **kwargs)


def test_mnist_split_is_seeded_disjoint_and_offline() -> None:
    data = MNISTDataModule(seed=0)
    data.setup()
    sizes = {k: len(v) for k, v in data.splits.items()}
    assert sizes == {"train": 3500, "val": 500, "test": 1000}
    x, y = data.splits["train"].tensors
    assert x.shape == (3500, 1, 28, 28) and x.dtype == torch.float32 and 0.0 <= float(x.min()) < float(x.max()) <= 1.0
    assert set(y.tolist()) == set(range(10))
    train_rows = {tuple(r.flatten()[::7].tolist()) for r in x[:200]}
    test_rows = {tuple(r.flatten()[::7].tolist()) for r in data.splits["test"].tensors[0]}
    assert not train_rows & test_rows
    again = MNISTDataModule(seed=0)
    again.setup()
    assert torch.equal(again.splits["test"].tensors[1], data.splits["test"].tensors[1])
    other = MNISTDataModule(seed=1)
    other.setup()
    assert not torch.equal(other.splits["test"].tensors[1], data.splits["test"].tensors[1])


def test_datamodule_validation() -> None:
    with pytest.raises(ValueError, match="leave images for training"):
        MNISTDataModule(val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="limit=5 must be between 10 and 5000"):
        MNISTDataModule(limit=5)


def test_networks_match_the_seeds_parameter_counts() -> None:
    assert sum(p.numel() for p in LeNet().parameters()) == 61_706  # 156 + 2,416 + 48,120 + 10,164 + 850
    assert sum(p.numel() for p in TutorialCNN().parameters()) == 20_410  # seed 001's model.summary()
    assert LeNet()(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    with pytest.raises(ValueError, match="arch='vgg' is unknown"):
        LeNetModule(arch="vgg")  # type: ignore[arg-type]


@pytest.fixture
def one_thread():
    """Tiny CNNs train several times faster on one intra-op thread on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_seed001_recipe_on_a_small_budget(tmp_path, one_thread) -> None:
    """Dense training, then PolynomialDecay 50% -> 80% magnitude pruning: accuracy holds, gzip shrinks ~3x."""
    pl.seed_everything(0, verbose=False)
    data = MNISTDataModule(batch_size=32, limit=1000)
    baseline = LeNetModule(arch="tutorial")
    quiet_trainer(max_epochs=2).fit(baseline, datamodule=data)
    baseline_acc = quiet_trainer().test(baseline, datamodule=data, verbose=False)[0]["test/acc"]

    pruned = copy.deepcopy(baseline)
    end_step = math.ceil(len(data.splits["train"]) / 32)  # one epoch of pruning
    callback = GradualPruning(PolynomialDecay(0.5, 0.8, begin_step=0, end_step=end_step),
                              module_types=[nn.Conv2d, nn.Linear])
    quiet_trainer(max_epochs=1, callbacks=[callback]).fit(pruned, datamodule=data)
    pruned_acc = quiet_trainer().test(pruned, datamodule=data, verbose=False)[0]["test/acc"]

    report = model_sparsity(pruned.model, conv_and_linear)
    assert report.zeros == {"conv.weight": round(0.8 * 108), "dense.weight": round(0.8 * 20_280)}  # per layer
    assert baseline_acc > 0.75  # 700 training digits, 2 epochs
    assert pruned_acc > baseline_acc - 0.08
    dense_size, pruned_size = serialized_size(baseline.model), serialized_size(pruned.model)
    assert pruned_size.raw_bytes == dense_size.raw_bytes  # zeros alone do not shrink a dense file
    assert pruned_size.gzip_bytes < dense_size.gzip_bytes / 2.8  # ...but they compress (seed 001: ~3x)

    # init_from: a later run can start from the saved baseline (e.g. to fine-tune with pruning)
    path = tmp_path / "baseline.pt"
    torch.save(baseline.model.state_dict(), path)
    restored = LeNetModule(arch="tutorial", init_from=str(path))
    expected = baseline.model.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in restored.model.state_dict().items())
