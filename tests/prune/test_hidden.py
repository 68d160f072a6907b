from __future__ import annotations

from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from lit_compress.models.architecture import ArchitectureSpec, current_architecture, read_architecture
from lit_compress.models.io import load_model_dir, save_model_dir
from lit_compress.models.layout import LayoutError, encoder_layers, layout_of
from lit_compress.models.tiny import TINY_FAMILIES, tiny_bert, tiny_model, tiny_vit
from lit_compress.prune.hidden import hidden_importance, hidden_width, kept_hidden_width, prune_hidden
from lit_compress.prune.structured_callback import StructuredPruning

HIDDEN_FAMILIES = [f for f in TINY_FAMILIES if f != "deberta-v2"] + ["vit"]


def _model(family: str) -> nn.Module:
    return (tiny_vit() if family == "vit" else tiny_model(family)).eval()


@pytest.mark.parametrize(("original", "ratio", "round_to", "kept"),
                         [(384, 1 / 3, 32, 256), (384, 0.0, 32, 384), (384, 0.99, 32, 32), (768, 0.5, 64, 384),
                          (32, 0.5, 8, 16)])  # fmt: skip
def test_kept_hidden_width_rounds_to_multiples(original: int, ratio: float, round_to: int, kept: int) -> None:
    assert kept_hidden_width(original, ratio, round_to) == kept


def test_kept_hidden_width_refuses_removing_everything() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        kept_hidden_width(384, 1.0)


def test_hidden_importance_is_the_layer_normalized_energy() -> None:
    """Two states of 2 tokens x 3 channels, the second token masked out: hand-computed score."""
    states = (torch.tensor([[[1.0, 2.0, 0.0], [9.0, 9.0, 9.0]]]), torch.tensor([[[0.0, 1.0, 1.0], [5.0, 5.0, 5.0]]]))

    class Fixed(nn.Module):
        def forward(self, input_ids, attention_mask, output_hidden_states):  # noqa: ANN001, ANN202
            return SimpleNamespace(hidden_states=states)

    batch = {"input_ids": torch.zeros(1, 2, dtype=torch.long), "attention_mask": torch.tensor([[1, 0]])}
    got = hidden_importance(Fixed(), [batch])
    first = torch.tensor([1.0, 4.0, 0.0]) / (5.0 / 3)  # energies of token 0 over their mean
    second = torch.tensor([0.0, 1.0, 1.0]) / (2.0 / 3)
    torch.testing.assert_close(got, first + second)


@pytest.mark.parametrize("family", HIDDEN_FAMILIES)
def test_prune_hidden_cuts_the_stream_everywhere_and_reloads(family: str, tmp_path) -> None:
    model = _model(family)
    layout, inputs = layout_of(model), layout_of(model).dummy_inputs(model)
    width = hidden_width(model)
    keep = torch.arange(1, width, 2)  # every odd channel
    first = encoder_layers(model)[0]
    before_rows = layout.attention_output(first).weight.detach()[keep].clone()
    before_cols = layout.ffn_slices(first)[0].linear.weight.detach()[:, keep].clone()

    remaps = prune_hidden(model, keep)
    assert hidden_width(model) == width // 2
    assert remaps and all(r.new.shape[r.dim] == width // 2 and r.old.shape[r.dim] == width for r in remaps)
    spec = current_architecture(model)
    assert spec.hidden_size == width // 2 and read_architecture(model) == spec
    torch.testing.assert_close(layout.attention_output(first).weight, before_rows)  # kept rows, in order
    torch.testing.assert_close(layout.ffn_slices(first)[0].linear.weight, before_cols)
    for module in model.modules():  # every LayerNorm of the stream is narrower, and its attribute says so
        if isinstance(module, nn.LayerNorm) and module.weight.shape[0] in (width, width // 2):
            assert tuple(module.normalized_shape) == (module.weight.shape[0],)
    logits = model(**inputs).logits
    assert logits.shape[-1] == model.config.num_labels

    save_model_dir(model, tmp_path / "m")
    again = load_model_dir(tmp_path / "m").eval()
    assert current_architecture(again) == spec
    torch.testing.assert_close(again(**inputs).logits, logits)


def test_prune_hidden_refuses_deberta_and_leaves_it_whole() -> None:
    model = _model("deberta-v2")
    width = hidden_width(model)
    with pytest.raises(LayoutError, match="DeBERTa.*hidden_pruning_ratio=0"):
        prune_hidden(model, torch.arange(width // 2))
    assert hidden_width(model) == width


def test_prune_hidden_keep_all_is_a_no_op_and_bad_indices_are_refused() -> None:
    model = _model("bert")
    width = hidden_width(model)
    assert prune_hidden(model, torch.arange(width)) == []
    with pytest.raises(ValueError, match="keep must name"):
        prune_hidden(model, torch.tensor([width]))


def test_architecture_spec_reads_version_1_records_as_the_config_width() -> None:
    v1 = {"format_version": 1, "num_heads": [2, 2], "intermediate_sizes": [8, 8], "vocab_size": 100, "head_size": 4}
    spec = ArchitectureSpec.from_dict(v1)
    assert spec.hidden_size is None
    v2 = ArchitectureSpec((2, 2), (8, 8), 100, 4, hidden_size=16)
    assert ArchitectureSpec.from_dict(v2.to_dict()) == v2
    with pytest.raises(ValueError, match="exactly the keys"):
        ArchitectureSpec.from_dict({**v2.to_dict(), "format_version": 1})


class _Texts(pl.LightningDataModule):
    """Batches as the text datamodule gives them: a ``BatchEncoding`` (a Mapping, not a dict)."""

    def train_dataloader(self) -> DataLoader:
        from torch.utils.data import default_collate
        from transformers import BatchEncoding

        g = torch.Generator().manual_seed(0)
        rows = [{"input_ids": torch.randint(0, 128, (12,), generator=g),
                 "attention_mask": torch.ones(12, dtype=torch.long), "labels": torch.tensor(i % 3)}
                for i in range(16)]  # fmt: skip
        return DataLoader(rows, batch_size=8, collate_fn=lambda b: BatchEncoding(default_collate(b)))


class _Classifier(pl.LightningModule):
    def __init__(self, uses_features: bool = False, lr: float = 1e-3) -> None:
        super().__init__()
        self.model, self.uses_features, self.lr = tiny_bert(seed=0), uses_features, lr

    @property
    def compression_target(self) -> nn.Module:
        return self.model

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        return self.model(**batch).loss

    def configure_optimizers(self):  # noqa: ANN201
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


def _trainer(callback: StructuredPruning, tmp_path) -> pl.Trainer:
    return pl.Trainer(max_steps=2, callbacks=[callback], logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip


def test_callback_narrows_the_stream_once_before_training(tmp_path) -> None:
    module, data = _Classifier(lr=0.0), _Texts()  # lr 0: the kept columns stay as they were chosen
    callback = StructuredPruning(ffn_pruning_ratio=0.5, hidden_pruning_ratio=0.5, hidden_round_to=8, hidden_batches=1)
    original = module.model.config.hidden_size
    scores = hidden_importance(module.model, [next(iter(data.train_dataloader()))])
    expected = torch.topk(scores, original // 2).indices.sort().values
    word = module.model.bert.embeddings.word_embeddings.weight.detach()[:, expected].clone()

    _trainer(callback, tmp_path).fit(module, datamodule=data)
    assert hidden_width(module.model) == original // 2
    assert current_architecture(module.model).intermediate_sizes == (module.model.config.intermediate_size // 2,) * 2
    torch.testing.assert_close(module.model.bert.embeddings.word_embeddings.weight, word)  # the top-energy channels
    callback.setup(_trainer(callback, tmp_path), module, "fit")  # idempotent: already at the target width
    assert hidden_width(module.model) == original // 2


def test_callback_refuses_hidden_pruning_with_feature_terms(tmp_path) -> None:
    callback = StructuredPruning(hidden_pruning_ratio=0.5, hidden_round_to=8)
    with pytest.raises(ValueError, match="hidden-state distillation terms"):
        _trainer(callback, tmp_path).fit(_Classifier(uses_features=True), datamodule=_Texts())


def test_a_student_of_a_narrowed_teacher_copies_its_narrow_layers() -> None:
    from lit_compress.models.student import student_from_teacher

    teacher = tiny_bert(num_layers=2).eval()
    prune_hidden(teacher, torch.arange(0, hidden_width(teacher), 2))
    student = student_from_teacher(teacher, [0, 1]).eval()  # every layer: the same function
    inputs = layout_of(teacher).dummy_inputs(teacher)
    assert hidden_width(student) == hidden_width(teacher)
    torch.testing.assert_close(student(**inputs).logits, teacher(**inputs).logits)


def test_a_scheduled_hidden_ratio_narrows_gradually_with_ffn_cuts_and_keeps_adam_state_aligned(tmp_path) -> None:
    module, data = _Classifier(), _Texts()
    original = module.model.config.hidden_size  # 32
    widths: list[int] = []

    class Watch(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: ANN001, ANN201
            widths.append(hidden_width(pl_module.model))
            optimizer = trainer.optimizers[0]
            for group in optimizer.param_groups:  # every parameter the optimizer steps has state of its shape
                for p in group["params"]:
                    state = optimizer.state.get(p, {})
                    assert all(v.shape == p.shape for k, v in state.items() if k != "step")

    ramp = lambda step: 0.5 * min(step, 4) / 4  # noqa: E731 - 32 -> 16 channels over 4 steps
    callback = StructuredPruning(hidden_pruning_ratio=ramp, ffn_pruning_ratio=ramp, hidden_round_to=4)
    trainer = pl.Trainer(max_steps=6, callbacks=[callback, Watch()], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(module, datamodule=data)
    assert widths[0] < original and widths[-1] == original // 2
    assert widths == sorted(widths, reverse=True) and len(set(widths)) >= 3  # in several steps, never regrown
    trainer.save_checkpoint(tmp_path / "last.ckpt")  # the optimizer's state matches its groups after both cuts
