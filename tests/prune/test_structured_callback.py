from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from lit_compress.models.io import load_model_dir, save_model_dir
from lit_compress.models.tiny import tiny_bert
from lit_compress.models.architecture import ArchitectureSpec, current_architecture
from lit_compress.prune.structured_callback import CHECKPOINT_KEY, StructuredPruning

# One batch per epoch, so every optimizer step sees the same data whatever Lightning's resume does with the
# data position; the end-of-epoch-3 checkpoint (after step 4) sits mid-schedule.
STEPS = 8


def _schedule(final: float):
    return lambda step: final * min(step, 6) / 6  # linear ramp over the first 6 optimizer steps


class TinyClassifier(pl.LightningModule):
    """A LightningModule exposing its HF model as ``compression_target``, like the spine's modules."""

    def __init__(self) -> None:
        super().__init__()
        self.model = tiny_bert(seed=0).train()
        for module in self.model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0  # deterministic, so resumed and uninterrupted runs can be compared exactly

    @property
    def compression_target(self) -> torch.nn.Module:
        return self.model

    def training_step(self, batch, batch_idx):
        ids, labels = batch
        return self.model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss

    def test_step(self, batch, batch_idx):
        self.log("test_loss", self.training_step(batch, batch_idx))

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=1e-3)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 3, 0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 128, (16, 12), generator=g)
    return DataLoader(TensorDataset(ids, (ids[:, 1] % 3)), batch_size=16, shuffle=False)


def _callback() -> StructuredPruning:
    return StructuredPruning(head_pruning_ratio=_schedule(0.5), ffn_pruning_ratio=_schedule(0.75), scope="global")


def _fit(module, max_steps: int, tmp_path, ckpt_path=None, save_every_epoch: bool = False) -> pl.Trainer:
    checkpoints = [ModelCheckpoint(tmp_path / "ckpts", "{epoch}", save_top_k=-1)] if save_every_epoch else []
    trainer = pl.Trainer(
        max_steps=max_steps, logger=False, enable_progress_bar=False, enable_checkpointing=save_every_epoch,
        enable_model_summary=False, accelerator="cpu", callbacks=[_callback(), *checkpoints], default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module, _loader(), ckpt_path=ckpt_path)
    return trainer


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[TinyClassifier, pl.Trainer]:
    """One uninterrupted run with the callback, checkpointing every epoch, shared by the tests below."""
    module = TinyClassifier()
    return module, _fit(module, STEPS, tmp_path_factory.mktemp("full"), save_every_epoch=True)


def test_gradual_pruning_reaches_targets_and_keeps_optimizer_valid(trained) -> None:
    module, trainer = trained
    spec = current_architecture(module.model)
    assert sum(spec.num_heads) == 4 and sum(spec.intermediate_sizes) == 32  # 50% of 8 heads, 25% of 128 channels
    assert all(n >= 1 for n in spec.num_heads)
    assert trainer.callback_metrics["prune/heads"] == 4.0
    live = {id(p) for p in module.parameters()}
    optimizer = trainer.optimizers[0]
    assert all(id(p) in live for group in optimizer.param_groups for p in group["params"])
    assert all(state["exp_avg"].shape == p.shape for p, state in optimizer.state.items())
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == STEPS  # the scheduler was not recreated
    ids = torch.randint(0, 128, (2, 9))
    assert module.model(input_ids=ids).logits.shape == (2, 3)


def test_resume_mid_schedule_matches_uninterrupted_run(trained, tmp_path) -> None:
    full, trainer = trained
    ckpt = trainer.checkpoint_callback.dirpath + "/epoch=3.ckpt"
    saved = torch.load(ckpt, weights_only=True)
    mid = ArchitectureSpec.from_dict(saved[CHECKPOINT_KEY])
    assert sum(mid.num_heads) > 4 and sum(mid.intermediate_sizes) > 32  # really mid-schedule

    resumed = TinyClassifier()  # unpruned skeleton: the checkpoint's shapes are applied before loading
    _fit(resumed, STEPS, tmp_path, ckpt_path=ckpt)
    assert current_architecture(resumed.model) == current_architecture(full.model)
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)

    tester = pl.Trainer(logger=False, enable_progress_bar=False, accelerator="cpu", callbacks=[_callback()])
    fresh = TinyClassifier()
    tester.test(fresh, _loader(), ckpt_path=ckpt)  # evaluation from a pruned checkpoint also rebuilds the shapes
    assert current_architecture(fresh.model) == mid


def test_pruned_model_exports_to_onnx_and_reloads(trained, tmp_path) -> None:
    import copy

    import onnxruntime as ort

    model = copy.deepcopy(trained[0].model).eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    wrapper = Logits().eval()
    ids = torch.randint(0, 128, (2, 10))
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("seq")}
    path = tmp_path / "pruned.onnx"
    torch.onnx.export(
        wrapper, (ids, torch.ones_like(ids)), str(path), dynamo=True, external_data=False,
        dynamic_shapes={"input_ids": dims, "attention_mask": dims}, input_names=["input_ids", "attention_mask"],
    )  # fmt: skip
    wrapper.eval()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    test_ids = torch.randint(0, 128, (3, 7))
    mask = torch.ones_like(test_ids)
    mask[0, 4:] = 0
    (onnx_logits,) = session.run(None, {"input_ids": test_ids.numpy(), "attention_mask": mask.numpy()})
    with torch.no_grad():
        torch_logits = wrapper(test_ids, mask)
    np.testing.assert_allclose(onnx_logits, torch_logits.numpy(), rtol=0, atol=1e-4)

    save_model_dir(model, tmp_path / "saved")
    loaded = load_model_dir(tmp_path / "saved")
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=test_ids, attention_mask=mask).logits, torch_logits, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"head_pruning_ratio": 1.2}, r"head_pruning_ratio must be in \[0, 1\]"),
        ({"importance": "l1"}, "'taylor' or 'magnitude'"),
        ({"every_n_steps": 0}, "every_n_steps must be >= 1"),
        ({"scope": "model"}, "'layer' or 'global'"),
        ({"min_heads": 0}, "cannot lose every head"),
    ],
)
def test_rejects_bad_settings(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        StructuredPruning(**kwargs)


def test_schedule_out_of_range_and_multi_process_are_refused() -> None:
    callback = StructuredPruning(head_pruning_ratio=lambda step: 2.0)
    with pytest.raises(ValueError, match=r"head_pruning_ratio must be in \[0, 1\].*got 2.0"):
        callback.prune(SimpleNamespace(optimizers=[]), TinyClassifier(), step=1)
    from lightning.pytorch.strategies import FSDPStrategy

    with pytest.raises(RuntimeError, match="under FSDPStrategy the parameters are sharded or flattened"):
        StructuredPruning().setup(SimpleNamespace(world_size=2, strategy=FSDPStrategy()), TinyClassifier(), "fit")


def test_ddp_two_cpu_processes_cut_the_same_units_and_stay_in_lockstep(tmp_path: Path) -> None:
    """Two gloo ranks on different data prune twice; after each cut the DDP wrapper is rebuilt, so gradients of
    the new parameters are still all-reduced and both ranks end bit-identical."""
    from tests.conftest import run_two_ranks

    ranks = run_two_ranks(Path(__file__).with_name("ddp_structured_run.py"), tmp_path)
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    assert ranks[0]["batches"] != ranks[1]["batches"]  # each rank saw different data
    for rank in ranks:
        assert rank["architecture"]["num_heads"] == [2, 2] and rank["architecture"]["intermediate_sizes"] == [48, 48]
        assert rank["wrapper_holds_cut_params"]
    s0, s1 = ranks[0]["state"], ranks[1]["state"]
    assert s0.keys() == s1.keys()
    assert all(torch.equal(s0[k], s1[k]) for k in s0), [k for k in s0 if not torch.equal(s0[k], s1[k])][:5]
