"""QuantizationAwareTraining inside a Trainer: setup, schedule, freezing, logging, resume, composition."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from qat_testing import TinyClassifier, loader, no_dropout, trainer
from torch import nn

from lit_compress.models.tiny import tiny_bert
from lit_compress.quant import (
    ActivationQuantConfig,
    FakeQuantizedLinear,
    QuantizationAwareTraining,
    fake_quantized_modules,
)

STATIC = ActivationQuantConfig(scheme="static", observer="moving_average", averaging_constant=0.3)


class Recorder(L.Callback):
    """Records, per step, the switches (after QAT set them) and one layer's observed range."""

    def __init__(self) -> None:
        self.enabled: list[bool] = []
        self.observing: list[bool] = []
        self.ranges: list[tuple[float, float]] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        layer = pl_module.model.bert.encoder.layer[0].attention.self.query
        self.enabled.append(bool(layer.fake_quant_enabled))
        self.observing.append(bool(layer.observer_enabled))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        obs = pl_module.model.bert.encoder.layer[0].attention.self.query.input_observer
        self.ranges.append((obs.min_val.item(), obs.max_val.item()))


def test_setup_swaps_encoder_linears_idempotently() -> None:
    module, callback = TinyClassifier(), QuantizationAwareTraining()
    t = trainer(1, [callback])
    callback.setup(t, module, "fit")
    layers = [m for _, m in fake_quantized_modules(module.model)]
    callback.setup(t, module, "fit")
    assert [m for _, m in fake_quantized_modules(module.model)] == layers and len(layers) == 12
    t.fit(module, loader(n=4))  # Trainer calls setup() again: still the same modules
    assert [m for _, m in fake_quantized_modules(module.model)] == layers
    assert type(module.model.classifier) is nn.Linear


def test_warm_up_then_fake_quant_and_observers_freeze() -> None:
    module, recorder = TinyClassifier(), Recorder()
    callback = QuantizationAwareTraining(activation=STATIC, start_step=2, freeze_observers_step=4)
    trainer(6, [callback, recorder]).fit(module, loader(n=24))
    assert recorder.enabled == [False, False, True, True, True, True]
    assert recorder.observing == [True, True, True, True, False, False]
    changes = [a != b for a, b in zip(recorder.ranges, recorder.ranges[1:])]
    assert changes == [True, True, True, False, False]  # ranges move while observing, then stay frozen


def test_logs_quantization_state(tmp_path: Path) -> None:
    callback = QuantizationAwareTraining(activation=STATIC, start_step=1, freeze_observers_step=2, log_per_module=True)
    logger = CSVLogger(tmp_path, name="qat")
    trainer(3, [callback], logger=logger, log_every_n_steps=1).fit(TinyClassifier(), loader(n=12))
    rows = list(csv.DictReader((Path(logger.log_dir) / "metrics.csv").read_text().splitlines()))
    rows = [r for r in rows if r.get("quant/enabled")]
    assert [float(r["quant/enabled"]) for r in rows] == [0.0, 1.0, 1.0]
    assert [float(r["quant/observers_enabled"]) for r in rows] == [1.0, 1.0, 0.0]
    assert all(float(r["quant/input_scale_mean"]) > 0 and float(r["quant/weight_scale_mean"]) > 0 for r in rows)
    assert float(rows[-1]["quant/input_scale/bert.encoder.layer.0.attention.self.query"]) > 0


def test_resume_mid_qat_equals_uninterrupted(tmp_path: Path) -> None:
    def callbacks() -> list[L.Callback]:
        return [QuantizationAwareTraining(activation=STATIC, start_step=2, freeze_observers_step=6)]

    full = TinyClassifier(seed=0)
    every4 = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=4, save_top_k=-1)
    trainer(8, [*callbacks(), every4], enable_checkpointing=True).fit(full, loader())  # 4 batches per epoch
    ckpt = next(tmp_path.glob("*step=4*.ckpt"))

    resumed = TinyClassifier(seed=1)  # different init: everything must come from the checkpoint
    trainer(8, callbacks()).fit(resumed, loader(), ckpt_path=ckpt)
    expected, actual = full.state_dict(), resumed.state_dict()
    assert expected.keys() == actual.keys()
    assert any(k.endswith("input_observer.min_val") for k in actual)
    for key, value in expected.items():
        assert torch.equal(value, actual[key]), key


def test_distillation_pruning_and_qat_in_one_run() -> None:
    from lit_compress.distill import DistillationModule
    from lit_compress.prune.callback import GradualPruning

    teacher, student = tiny_bert(seed=0), no_dropout(tiny_bert(seed=1, num_layers=1)).train()
    module = DistillationModule(teacher=teacher, student=student, labels=["a", "b", "c"], alpha=0.5, lr=1e-3)
    qat = QuantizationAwareTraining(start_step=1)
    pruning = GradualPruning(0.5, permanent_at_fit_end=True, log_per_layer=False)
    trainer(4, [qat, pruning]).fit(module, loader(n=16))

    assert not list(fake_quantized_modules(module.teacher))  # the teacher is left alone
    layers = dict(fake_quantized_modules(module.student))
    assert len(layers) == 6 and all(bool(m.fake_quant_enabled) for m in layers.values())
    for name, layer in layers.items():
        assert isinstance(layer, FakeQuantizedLinear)
        sparsity = (layer.weight == 0).float().mean().item()
        assert sparsity == pytest.approx(0.5, abs=0.02), name
        # pruned zeros stay exact zeros on the int8 grid
        assert (layer.quantized_weight()[layer.weight == 0] == 0).all()


def test_ddp_static_observer_ranges_cover_every_ranks_batches(tmp_path) -> None:
    """Under DDP the static ranges are all-reduced (min of mins, max of maxes), not rank 0's broadcast."""
    from tests.conftest import run_two_ranks

    ranks = run_two_ranks(Path(__file__).with_name("ddp_qat_run.py"), tmp_path)
    assert ranks[0]["world_size"] == 2 and ranks[0]["ranges"] == ranks[1]["ranges"]
    differs = 0
    for name, (lo, hi) in ranks[0]["ranges"].items():
        union = ranks[0]["seen"][name] + ranks[1]["seen"][name]
        assert lo == pytest.approx(min(v[0] for v in union), abs=1e-6)
        assert hi == pytest.approx(max(v[1] for v in union), abs=1e-6)
        rank0_only = (min(v[0] for v in ranks[0]["seen"][name]), max(v[1] for v in ranks[0]["seen"][name]))
        differs += rank0_only != pytest.approx((lo, hi), abs=1e-6)
    assert differs > 0, "rank 1's batches widened some range (the test data differ between ranks)"
