import lightning as L
import pytest
import torch

from lit_compress.distill import ClassifierModule, DistillationModule
from lit_compress.distill.losses import KDLoss
from lit_compress.models.tiny import tiny_bert


def batch(n: int = 6, seq: int = 9, vocab: int = 128, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, seq, dtype=torch.long)
    mask[0, 5:] = 0
    return {
        "input_ids": torch.randint(5, vocab, (n, seq), generator=g),
        "attention_mask": mask,
        "labels": torch.randint(0, 3, (n,), generator=g),
        "idx": torch.arange(n),
    }


def module(**kwargs) -> DistillationModule:
    teacher = tiny_bert(seed=1, num_layers=4)
    m = DistillationModule(teacher=teacher, student_layers=[0, 3], **kwargs)
    for sub in m.student.modules():  # no dropout, so repeated forwards are comparable
        if isinstance(sub, torch.nn.Dropout):
            sub.p = 0.0
    return m.train()


def step(m: DistillationModule, b: dict[str, torch.Tensor]) -> torch.Tensor:
    """The training loss, as training_step computes it (without a Trainer to log into)."""
    teacher_logits, teacher_out = m.teacher_logits(b)
    return m.compute_loss(b, m.student_forward(b), teacher_logits, teacher_out)["loss"]


def test_training_step_matches_formula_and_teacher_gets_no_gradient() -> None:
    m = module(alpha=0.25, temperature=3.0, cache_teacher_logits=False)
    b = batch()
    loss = step(m, b)
    s = m.student(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    with torch.no_grad():
        t = m.teacher(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    expected = 0.25 * torch.nn.functional.cross_entropy(s, b["labels"]) + 0.75 * KDLoss(3.0)(s, t)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in m.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.student.parameters())
    assert not m.teacher.training and m.student.training


def test_logit_cache_gives_the_same_loss() -> None:
    cached, plain = module(cache_teacher_logits=True), module(cache_teacher_logits=False)
    plain.student.load_state_dict(cached.student.state_dict())
    b = batch()
    first = step(cached, b)
    again = step(cached, b)
    assert cached.cache.hits == 1 and cached.cache.misses == 1
    assert again.item() == pytest.approx(first.item(), rel=1e-6)
    assert again.item() == pytest.approx(step(plain, b).item(), rel=1e-6)


def test_cache_detects_changed_inputs() -> None:
    m = module()
    b = batch()
    step(m, b)
    step(m, dict(b, input_ids=b["input_ids"].flip(1)))
    assert m.cache.hits == 0 and m.cache.misses == 2


def test_hidden_state_terms_are_logged_and_projected() -> None:
    teacher = tiny_bert(seed=1, num_layers=4)
    student = tiny_bert(seed=2, num_layers=2, hidden_size=16, num_heads=2, intermediate_size=32)
    m = DistillationModule(teacher=teacher, student=student, hidden_weight=1.0, cosine_weight=0.5)
    assert m.cache is None and set(m.projections) == {"0", "1"}
    assert m.layer_map == {0: 1, 1: 3}
    m.train()
    loss = step(m, batch())
    loss.backward()
    assert m.projections["0"].weight.grad is not None


def test_layer_map_out_of_range_is_rejected() -> None:
    with pytest.raises(ValueError, match="layer_map"):
        DistillationModule(teacher=tiny_bert(num_layers=2), student_layers=[0], hidden_weight=1.0, layer_map={0: 7})


def test_fit_improves_student_and_logs_terms(tmp_path) -> None:
    torch.manual_seed(0)
    teacher = tiny_bert(seed=1, num_layers=2)
    m = DistillationModule(teacher=teacher, student=tiny_bert(seed=5, num_layers=1), alpha=0.0, lr=5e-3,
                           warmup_ratio=0.0)
    data = [batch(seed=i) for i in range(4)]
    before = sum(step(m, b).item() for b in data)
    trainer = L.Trainer(max_steps=30, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    trainer.fit(m, train_dataloaders=torch.utils.data.DataLoader(data, batch_size=None, shuffle=True))
    after = sum(step(m, b).item() for b in data)
    assert after < before * 0.5
    assert {"train/loss", "train/kd", "train/ce"} <= set(trainer.callback_metrics)


def test_teacher_from_classifier_checkpoint(tmp_path, tiny_model_dir) -> None:
    clf = ClassifierModule(str(tiny_model_dir), lr=1e-2)
    trainer = L.Trainer(max_steps=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", default_root_dir=tmp_path)
    data = [batch(vocab=20, seed=i) for i in range(2)]
    trainer.fit(clf, train_dataloaders=torch.utils.data.DataLoader(data, batch_size=None))
    ckpt = tmp_path / "clf.ckpt"
    trainer.save_checkpoint(ckpt)
    m = DistillationModule(teacher=str(ckpt), student_layers=[1])
    for name, tensor in clf.model.state_dict().items():
        assert torch.equal(m.teacher.state_dict()[name], tensor), name
    assert m.labels == ["money", "sport", "tech"]
