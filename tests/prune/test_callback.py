from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from transformers import BertForSequenceClassification

from lit_compress.models.tiny import tiny_bert_config
from lit_compress.prune import ConstantSparsity, GradualPruning, PolynomialDecay, local_masks, select_parameters
from lit_compress.prune.scoring import movement_update

ROOT = Path(__file__).resolve().parents[2]


def dropout_free_bert(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    model = BertForSequenceClassification(tiny_bert_config())
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0  # deterministic training, so runs can be compared bit for bit
    return model


class TinyClassifier(pl.LightningModule):
    """A tiny BERT trained with cross-entropy on random tokens (the test-suite BoringModel)."""

    def __init__(self, optimizer: str = "adam", lr: float = 1e-2, data_by_step: bool = False) -> None:
        super().__init__()
        self.model = dropout_free_bert()
        self.optimizer, self.lr, self.data_by_step = optimizer, lr, data_by_step

    def training_step(self, batch, batch_idx):
        if self.data_by_step:
            # Lightning restarts a plain DataLoader's iterator on resume; picking the batch by optimizer step
            # keeps the data sequence identical, so the comparison tests the callback, not the loader.
            batch = list(token_loader())[self.trainer.global_step % 4]
        input_ids, labels = batch
        return F.cross_entropy(self.model(input_ids=input_ids).logits, labels)

    def configure_optimizers(self):
        if self.optimizer == "sgd":
            return torch.optim.SGD(self.parameters(), lr=self.lr)
        return torch.optim.Adam(self.parameters(), lr=self.lr)


class StudentTeacher(pl.LightningModule):
    """Shaped like a DistillationModule: ``compression_target`` is the student."""

    def __init__(self) -> None:
        super().__init__()
        self.student, self.teacher = dropout_free_bert(0), dropout_free_bert(1)

    @property
    def compression_target(self) -> nn.Module:
        return self.student

    def training_step(self, batch, batch_idx):
        input_ids, labels = batch
        with torch.no_grad():
            soft = self.teacher(input_ids=input_ids).logits.softmax(-1)
        return F.cross_entropy(self.student(input_ids=input_ids).logits, soft)

    def configure_optimizers(self):
        return torch.optim.Adam(self.student.parameters(), lr=1e-2)


class RecordingLogger(Logger):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[int, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics, step=None) -> None:
        self.records.append((step, dict(metrics)))

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


def token_loader(n: int = 16, batch_size: int = 4) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randint(0, 128, (n, 8), generator=g), torch.randint(0, 3, (n,), generator=g))
    return DataLoader(data, batch_size=batch_size, shuffle=False)


def make_trainer(**kwargs) -> pl.Trainer:
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False)
    return pl.Trainer(**{**defaults, **kwargs})


def sparsity_of(tensor: torch.Tensor) -> float:
    return float((tensor == 0).float().mean())


def test_schedule_is_followed_per_step_logged_and_reached() -> None:
    module, logger = TinyClassifier(), RecordingLogger()
    schedule = PolynomialDecay(0.5, 0.8, begin_step=0, end_step=6, frequency=2)
    callback = GradualPruning(schedule, permanent_at_fit_end=False)
    make_trainer(max_steps=6, logger=logger, callbacks=[callback]).fit(module, token_loader())
    updates = [(step, m) for step, m in logger.records if "sparsity/global" in m]
    assert [step for step, _ in updates] == [0, 2, 4, 6]  # step 6 = after the last optimizer step
    for step, metrics in updates:
        expected = 0.8 + (0.5 - 0.8) * (1 - step / 6) ** 3
        assert metrics["sparsity/target"] == pytest.approx(expected)
        # every 32x32 / 32x64 layer is pruned locally to round(s * n) zeros
        for name, value in metrics.items():
            if name.startswith("sparsity/bert."):
                n = 32 * 32 if "attention" in name else 32 * 64
                assert value == round(expected * n) / n
    params = select_parameters(module.model)
    assert len(params) == 12 and all(sparsity_of(p) == pytest.approx(0.8, abs=1e-3) for p in params.values())
    untouched = {n: p for n, p in module.model.named_parameters() if n not in params and p.ndim == 2}
    assert {"bert.pooler.dense.weight", "classifier.weight", "bert.embeddings.word_embeddings.weight"} <= set(untouched)
    assert all(sparsity_of(p) <= 1 / 128 for p in untouched.values())  # only the padding row of the embeddings


def test_global_scope_reaches_exact_global_count_and_random_is_seeded() -> None:
    masks = []
    for _ in range(2):
        module = TinyClassifier()
        callback = GradualPruning(0.6, criterion="random", scope="global", seed=7, permanent_at_fit_end=False)
        make_trainer(max_steps=2, callbacks=[callback]).fit(module, token_loader())
        masks.append(callback.masks)
        total = sum(m.numel() for m in callback.masks.values())
        assert sum(int((~m).sum()) for m in callback.masks.values()) == round(0.6 * total)
    assert all(torch.equal(masks[0][k], masks[1][k]) for k in masks[0])


def test_movement_scores_and_masks_match_a_hand_replay() -> None:
    module = TinyClassifier(optimizer="sgd", lr=0.1)
    replay = dropout_free_bert()
    callback = GradualPruning(ConstantSparsity(0.5, begin_step=3), criterion="movement", permanent_at_fit_end=False)
    make_trainer(max_steps=3, callbacks=[callback]).fit(module, token_loader())
    # replay: S <- S - W * dL/dW before each of the 3 SGD steps, then keep the top half of S per layer
    params = select_parameters(replay)
    scores = {n: torch.zeros_like(p) for n, p in params.items()}
    optimizer = torch.optim.SGD(replay.parameters(), lr=0.1)
    for step, (input_ids, labels) in enumerate(token_loader()):
        if step == 3:
            break
        optimizer.zero_grad()
        F.cross_entropy(replay(input_ids=input_ids).logits, labels).backward()
        for n, p in params.items():
            movement_update(scores[n], p, p.grad)
        optimizer.step()
    state = callback.state_dict()  # names are relative to the LightningModule, which holds the BERT as .model
    for n in params:
        torch.testing.assert_close(state["scores"][f"model.{n}"], scores[n], rtol=1e-5, atol=1e-7)
    expected = local_masks(scores, 0.5)
    agree = sum(int((expected[n] == callback.masks[f"model.{n}"]).sum()) for n in params)
    assert agree >= sum(m.numel() for m in expected.values()) - 2  # only float ties at the threshold may differ


def test_masks_stay_applied_after_optimizer_steps_and_accumulation_updates_once() -> None:
    module, logger = TinyClassifier(), RecordingLogger()
    callback = GradualPruning(0.7, permanent_at_fit_end=True)
    trainer = make_trainer(max_steps=3, accumulate_grad_batches=2, logger=logger, callbacks=[callback])
    trainer.fit(module, token_loader())
    steps = [s for s, m in logger.records if "sparsity/global" in m]
    assert steps == [0, 1, 2, 3]  # six batches, one update per optimizer step
    params = select_parameters(module.model)
    assert all(sparsity_of(p) == pytest.approx(0.7, abs=1e-3) for p in params.values())
    assert callback.masks == {} and callback._hooks == []  # permanent: masks released, hooks removed


def test_only_the_student_of_a_distillation_module_is_pruned() -> None:
    module = StudentTeacher()
    teacher_before = {k: v.clone() for k, v in module.teacher.state_dict().items()}
    callback = GradualPruning(0.5)
    make_trainer(max_steps=2, callbacks=[callback]).fit(module, token_loader())
    assert all(sparsity_of(p) == pytest.approx(0.5, abs=1e-3) for p in select_parameters(module.student).values())
    assert all(torch.equal(v, module.teacher.state_dict()[k]) for k, v in teacher_before.items())


def test_resumed_run_gives_the_same_masks_scores_and_weights(tmp_path: Path) -> None:
    def callback() -> GradualPruning:
        schedule = PolynomialDecay(0.2, 0.7, begin_step=2, end_step=10, frequency=2)
        return GradualPruning(schedule, criterion="movement", scope="global", permanent_at_fit_end=False)

    straight, cb_straight = TinyClassifier(data_by_step=True), callback()
    make_trainer(max_steps=12, callbacks=[cb_straight]).fit(straight, token_loader())

    first, cb_first = TinyClassifier(data_by_step=True), callback()
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_train_steps=3)
    make_trainer(max_steps=9, callbacks=[cb_first, ckpt], enable_checkpointing=True).fit(first, token_loader())
    path = tmp_path / "epoch=1-step=6.ckpt"  # mid-epoch and mid-schedule (update steps 2, 4, ..., 10)
    checkpoint = torch.load(path, weights_only=True)
    saved = checkpoint["callbacks"][cb_first.state_key]
    assert saved["last_step"] == 6 and len(saved["masks"]) == 12 and len(saved["scores"]) == 12
    # the checkpoint already holds step 6's pruning: 0.7 + (0.2 - 0.7) * (1 - 4 / 8) ** 3 = 0.6375 of the
    # weights masked, and zero in the saved weights (movement may also regrow weights, which restart at 0)
    total = sum(m.numel() for m in saved["masks"].values())
    assert sum(int((~m).sum()) for m in saved["masks"].values()) == round(0.6375 * total)
    assert all((checkpoint["state_dict"][n][~m] == 0).all() for n, m in saved["masks"].items())

    resumed, cb_resumed = TinyClassifier(data_by_step=True), callback()
    make_trainer(max_steps=12, callbacks=[cb_resumed]).fit(resumed, token_loader(), ckpt_path=path)
    assert set(cb_resumed.masks) == set(cb_straight.masks)
    for name, mask in cb_straight.masks.items():
        assert torch.equal(cb_resumed.masks[name], mask), name
        assert torch.equal(cb_resumed.state_dict()["scores"][name], cb_straight.state_dict()["scores"][name])
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    moved = [n for n, m in cb_straight.masks.items() if not torch.equal(m, saved["masks"][n])]
    assert moved  # the masks did change after the checkpoint, so the comparison is not trivial


def test_name_regex_alone_selects_weight_layers_only() -> None:
    callback = GradualPruning(0.5, name_regex=r"layer\.0\.")
    callback.setup(None, TinyClassifier(), "fit")  # type: ignore[arg-type]
    names = callback.state_dict()["names"]
    assert len(names) == 6 and not any("LayerNorm" in n for n in names)  # q, k, v, attn out, intermediate, out


def test_misconfiguration_errors() -> None:
    with pytest.raises(ValueError, match="either filter_fn or module_types"):
        GradualPruning(0.5, filter_fn=lambda m, n: True, module_types=[nn.Linear])
    with pytest.raises(ValueError, match="scope='layer' is unknown"):
        GradualPruning(0.5, scope="layer")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="criterion='snip' is unknown"):
        GradualPruning(0.5, criterion="snip")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="selected no parameters in Sequential.*module_types"):
        GradualPruning(0.5).setup(None, nn.Sequential(nn.Linear(2, 2)), "fit")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"schedule\(0\) returned 1.5"):
        make_trainer(max_steps=1, callbacks=[GradualPruning(lambda step: 1.5)]).fit(TinyClassifier(), token_loader())
    other = GradualPruning(0.5, name_regex="layer\\.0\\.")
    other.load_state_dict({"names": ["a.weight"], "masks": {"a.weight": torch.ones(2, dtype=torch.bool)},
                           "scores": {}, "last_step": 3})
    with pytest.raises(ValueError, match="Resume with the same module selection"):
        other.setup(None, TinyClassifier(), "fit")  # type: ignore[arg-type]


def test_ddp_two_cpu_processes_hold_identical_masks(tmp_path: Path) -> None:
    script = Path(__file__).with_name("ddp_pruning_run.py")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    assert ranks[0]["batches"] != ranks[1]["batches"]  # each rank saw different data
    masks0, masks1 = ranks[0]["masks"], ranks[1]["masks"]
    assert len(masks0) == 12 and set(masks0) == set(masks1)
    total = sum(m.numel() for m in masks0.values())
    assert sum(int((~m).sum()) for m in masks0.values()) == round(0.6 * total)
    assert all(torch.equal(masks0[k], masks1[k]) for k in masks0)
    assert all(torch.equal(ranks[0]["scores"][k], ranks[1]["scores"][k]) for k in masks0)


def test_sharded_strategies_are_refused_with_the_reason() -> None:
    from types import SimpleNamespace

    from lightning.pytorch.strategies import FSDPStrategy

    trainer = SimpleNamespace(world_size=2, strategy=FSDPStrategy())
    with pytest.raises(RuntimeError, match="under FSDPStrategy they are flattened and sharded across ranks"):
        GradualPruning(0.5).setup(trainer, torch.nn.Linear(2, 2), "fit")
