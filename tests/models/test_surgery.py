from __future__ import annotations

import pytest
import torch

from lit_compress.models.io import load_model_dir, save_model_dir
from lit_compress.models.surgery import trim_positions
from lit_compress.models.tiny import TINY_FAMILIES, tiny_model

#: Families whose position table is absolute (DeBERTa-v2 attends by relative position, ModernBERT rotates).
ABSOLUTE = [f for f in TINY_FAMILIES if f not in ("deberta-v2", "modernbert")]


def _batch(length: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 100, (2, length), generator=g)
    mask = torch.ones_like(ids)
    mask[1, length - 3 :] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("family", ABSOLUTE)
def test_trim_positions_keeps_the_rows_max_length_reads_and_the_outputs(family: str, tmp_path) -> None:
    model = tiny_model(family).eval()
    table = model.base_model.embeddings.position_embeddings
    offset = 0 if table.padding_idx is None else table.padding_idx + 1  # RoBERTa numbers positions from pad + 1
    before_rows = table.weight.detach()[: 10 + offset].clone()
    batch = _batch(10)
    expected = model(**batch).logits

    assert trim_positions(model, 10) == 10 + offset
    table = model.base_model.embeddings.position_embeddings
    assert table.weight.shape[0] == table.num_embeddings == model.config.max_position_embeddings == 10 + offset
    torch.testing.assert_close(table.weight, before_rows)
    torch.testing.assert_close(model(**batch).logits, expected)  # exact for inputs of at most max_length tokens
    save_model_dir(model, tmp_path / "m")
    torch.testing.assert_close(load_model_dir(tmp_path / "m").eval()(**batch).logits, expected)
    assert trim_positions(model, 10) is None  # already that short: idempotent


@pytest.mark.parametrize("family", ["deberta-v2", "modernbert"])
def test_trim_positions_leaves_relative_and_rotary_positions_alone(family: str) -> None:
    model = tiny_model(family)
    before = {k: v.shape for k, v in model.state_dict().items()}
    assert trim_positions(model, 10) is None
    assert {k: v.shape for k, v in model.state_dict().items()} == before
