"""Training and distillation on image batches (``pixel_values``, ``labels``, ``idx``): CNNs and ViT."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from lit_compress.distill import ClassifierModule, DistillationModule
from lit_compress.distill.base import model_inputs, primary_input
from lit_compress.distill.cache import input_checksum
from lit_compress.distill.losses import logits_checksum
from lit_compress.models.tiny import tiny_cnn, tiny_vit

SIZE = 16


class _Images(Dataset):
    def __init__(self, n: int = 8) -> None:
        self.x = torch.randn(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
        self.y = torch.arange(n) % 3

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.x[i], "labels": self.y[i], "idx": torch.tensor(i)}


def _loader() -> DataLoader:
    return DataLoader(_Images(), batch_size=4, shuffle=False)


def _trainer(steps: int) -> pl.Trainer:
    return pl.Trainer(max_steps=steps, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                      enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0)  # fmt: skip


def test_image_batches_feed_pixel_values_only() -> None:
    batch = next(iter(_loader()))
    assert set(model_inputs(batch)) == {"pixel_values"}
    assert primary_input(batch) is batch["pixel_values"]


def test_pixel_checksum_is_position_weighted_bits_and_text_is_unchanged() -> None:
    x = torch.randn(3, 1, 4, 4)
    bits = x.view(torch.int32).flatten(1).long()
    expected = (bits * torch.arange(1, 17)).sum(1)
    assert torch.equal(input_checksum(x), expected)
    nudged = x.clone()
    nudged[1, 0, 2, 3] = torch.nextafter(nudged[1, 0, 2, 3], torch.tensor(float("inf")))  # one ulp
    changed = input_checksum(nudged) != input_checksum(x)
    assert changed.tolist() == [False, True, False]
    ids, mask = torch.randint(0, 50, (2, 7)), torch.ones(2, 7, dtype=torch.long)
    assert torch.equal(input_checksum(ids, mask), logits_checksum(ids, mask))


def test_distilling_a_cnn_on_images_caches_teacher_logits_by_example() -> None:
    teacher, student = tiny_cnn("resnet18", seed=0), tiny_cnn("mobilenet_v2", seed=1).train()
    module = DistillationModule(teacher=teacher, student=student, labels=["a", "b", "c"], lr=1e-3)
    _trainer(4).fit(module, _loader())  # 2 epochs of 2 batches: the second epoch hits the cache
    assert (module.cache.misses, module.cache.hits) == (2, 2)
    data = _Images()
    with torch.no_grad():
        expected = teacher.eval()(pixel_values=data.x).logits
    torch.testing.assert_close(module.cache.logits, expected, rtol=0, atol=1e-6)
    assert torch.equal(module.cache.checksums, input_checksum(data.x))
    assert torch.isfinite(torch.tensor(float(module.trainer.callback_metrics["train/loss"])))


def test_a_cnn_trained_with_cross_entropy_on_images_learns_and_validates() -> None:
    model = tiny_cnn("resnet18")
    module = ClassifierModule(model, labels=["a", "b", "c"], lr=1e-2, warmup_ratio=0.0)
    batch = next(iter(_loader()))
    before = float(torch.nn.functional.cross_entropy(model.eval()(pixel_values=batch["pixel_values"]).logits,
                                                     batch["labels"]))  # fmt: skip
    trainer = _trainer(12)
    trainer.fit(module, _loader())
    after = float(torch.nn.functional.cross_entropy(model.eval()(pixel_values=batch["pixel_values"]).logits,
                                                    batch["labels"]))  # fmt: skip
    assert after < before
    metrics = trainer.validate(module, _loader(), verbose=False)[0]
    assert 0.0 <= metrics["val/acc"] <= 1.0


def test_a_vit_student_from_teacher_layers_distils_with_hidden_states() -> None:
    teacher = tiny_vit(num_layers=4, image_size=SIZE)
    module = DistillationModule(teacher=teacher, student_layers=[1, 3], labels=["a", "b", "c"], hidden_weight=1.0,
                                cosine_weight=1.0, lr=1e-3)  # fmt: skip
    assert type(module.student).__name__ == "ViTForImageClassification"
    assert module.student.config.num_hidden_layers == 2 and module.layer_map == {0: 1, 1: 3}
    assert module.cache is None  # feature terms need the teacher's hidden states every step
    _trainer(2).fit(module, _loader())
    metrics = module.trainer.callback_metrics
    assert float(metrics["train/hidden_mse"]) > 0 and float(metrics["train/cosine"]) >= 0


def test_structured_pruning_cuts_vit_heads_and_mlp_while_training_and_the_model_reloads(tmp_path) -> None:
    from lit_compress.models.architecture import current_architecture
    from lit_compress.models.io import ARCH_FILE, load_model_dir, save_model_dir
    from lit_compress.prune import StructuredPruning

    module = ClassifierModule(tiny_vit(image_size=SIZE).train(), labels=["a", "b", "c"], lr=1e-3)
    trainer = _trainer(3)
    trainer.callbacks.append(StructuredPruning(head_pruning_ratio=0.5, ffn_pruning_ratio=0.5))
    trainer.fit(module, _loader())
    spec = current_architecture(module.model)
    assert spec.num_heads == (2, 2) and spec.intermediate_sizes == (32, 32) and spec.vocab_size is None
    out = save_model_dir(module.model, tmp_path / "vit")
    assert (out / ARCH_FILE).exists()
    reloaded, x = load_model_dir(out), _Images().x[:2]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values=x).logits, module.model.eval()(pixel_values=x).logits,
                                   rtol=0, atol=0)  # fmt: skip
