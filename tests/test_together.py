"""Distillation + pruning + QAT in ONE run (Lightning's removed QAT callback never could: #11047), resumable."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_compress.distill import DistillationModule
from lit_compress.models.tiny import tiny_bert
from lit_compress.prune import GradualPruning, PolynomialDecay, encoder_linear_filter, model_sparsity
from lit_compress.quant import FakeQuantizedLinear, QuantizationAwareTraining, fake_quantized_modules


def batches(n: int = 3) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        {"input_ids": torch.randint(5, 128, (4, 9), generator=g), "attention_mask": torch.ones(4, 9, dtype=torch.long),
         "labels": torch.randint(0, 3, (4,), generator=g), "idx": torch.arange(4) + 4 * i}
        for i in range(n)
    ]


def module() -> DistillationModule:
    m = DistillationModule(teacher=tiny_bert(seed=1, num_layers=2), student_layers=[0, 1], lr=1e-3, warmup_ratio=0.0)
    for sub in m.modules():
        if isinstance(sub, torch.nn.Dropout):
            sub.p = 0.0
    return m


def callbacks() -> list[L.Callback]:
    return [
        QuantizationAwareTraining(start_step=1),
        GradualPruning(PolynomialDecay(0.0, 0.5, begin_step=0, end_step=6, frequency=1)),
    ]


def fit(m: DistillationModule, epochs: int, root, extra=(), ckpt=None) -> L.Trainer:
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=root, callbacks=[*callbacks(), *extra],
                        num_sanity_val_steps=0, deterministic=True)
    trainer.fit(m, train_dataloaders=torch.utils.data.DataLoader(batches(), batch_size=None), ckpt_path=ckpt)
    return trainer


def test_distill_prune_and_qat_in_one_run(tmp_path) -> None:
    torch.manual_seed(0)
    m = module()
    fit(m, 2, tmp_path)
    quantized = dict(fake_quantized_modules(m.student))
    assert len(quantized) == 12  # 6 Linears per encoder layer, 2 layers
    assert not any(isinstance(x, FakeQuantizedLinear) for x in m.teacher.modules())
    assert abs(model_sparsity(m.student, encoder_linear_filter).global_sparsity - 0.5) < 1e-3
    assert model_sparsity(m.teacher, encoder_linear_filter).global_sparsity == 0.0


class StopAfterFirstEpoch(L.Callback):
    """Interrupt a 2-epoch run after its first epoch (same LR schedule as the uninterrupted run)."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.should_stop = True


def test_resume_mid_run_matches_uninterrupted(tmp_path) -> None:
    torch.manual_seed(0)
    straight = module()
    fit(straight, 2, tmp_path / "a")
    torch.manual_seed(0)
    first = module()
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    fit(first, 2, tmp_path / "b", extra=[saver, StopAfterFirstEpoch()])
    assert first.trainer.global_step == 3
    torch.manual_seed(1)  # a different init: everything must come from the checkpoint
    resumed = module()
    fit(resumed, 2, tmp_path / "b", ckpt=str(tmp_path / "ckpt" / "last.ckpt"))
    a, b = straight.student.state_dict(), resumed.student.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name
