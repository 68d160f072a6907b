from __future__ import annotations

import json

import pytest
import torch

from lit_compress.models.io import ARCH_FILE, load_model_dir, save_model_dir
from lit_compress.models.tiny import tiny_bert
from lit_compress.models.architecture import (
    ArchitectureSpec,
    apply_architecture,
    architecture_from_state_dict,
    current_architecture,
    read_architecture,
)
from lit_compress.prune.structured import prune_heads_and_ffn
from lit_compress.models.surgery import slice_embeddings


def _inputs(vocab: int = 128) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (3, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_spec_round_trips_through_plain_json() -> None:
    spec = ArchitectureSpec(num_heads=(3, 1), intermediate_sizes=(40, 17), vocab_size=90, head_size=8, hidden_size=24)
    data = json.loads(json.dumps(spec.to_dict()))
    assert data == {
        "format_version": 2, "num_heads": [3, 1], "intermediate_sizes": [40, 17], "vocab_size": 90, "head_size": 8,
        "hidden_size": 24,
    }  # fmt: skip
    assert ArchitectureSpec.from_dict(data) == spec


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_heads": (1, 2), "intermediate_sizes": (4,), "vocab_size": 9, "head_size": 8}, "one of each per"),
        ({"num_heads": (0, 2), "intermediate_sizes": (4, 4), "vocab_size": 9, "head_size": 8}, "at least one head"),
    ],
)
def test_spec_rejects_inconsistent_shapes(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ArchitectureSpec(**kwargs)


def test_from_dict_rejects_unknown_version_and_keys() -> None:
    good = ArchitectureSpec((1,), (2,), 3, 4).to_dict()
    with pytest.raises(ValueError, match="format_version 7"):
        ArchitectureSpec.from_dict({**good, "format_version": 7})
    with pytest.raises(ValueError, match="exactly the keys"):
        ArchitectureSpec.from_dict({**good, "layers": 2})


def test_read_architecture_is_none_until_pruned() -> None:
    model = tiny_bert()
    assert read_architecture(model) is None
    prune_heads_and_ffn(model, head_pruning_ratio=0.5, ffn_pruning_ratio=0.25)
    assert read_architecture(model) == ArchitectureSpec((2, 2), (48, 48), 128, 8)


def test_save_load_round_trip_of_pruned_model_gives_identical_logits(tmp_path) -> None:
    model = tiny_bert(num_layers=3)
    prune_heads_and_ffn(model, head_pruning_ratio=0.5, ffn_pruning_ratio=0.6, scope="global")
    slice_embeddings(model, torch.arange(0, 128, 2))  # vocab 128 -> 64, config.vocab_size follows
    spec = read_architecture(model)
    assert spec is not None and spec.vocab_size == 64
    assert len(set(spec.num_heads)) > 1 or len(set(spec.intermediate_sizes)) > 1  # global: layers differ

    save_model_dir(model, tmp_path / "m")
    assert json.loads((tmp_path / "m" / ARCH_FILE).read_text()) == spec.to_dict()
    loaded = load_model_dir(tmp_path / "m")
    assert current_architecture(loaded) == current_architecture(model)
    inputs = _inputs(vocab=64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits, rtol=0, atol=0)


def test_apply_architecture_matches_state_dict_shapes_and_is_idempotent() -> None:
    pruned = tiny_bert()
    prune_heads_and_ffn(pruned, head_pruning_ratio=0.75, ffn_pruning_ratio=0.5)
    prefixed = {f"model.{k}": v for k, v in pruned.state_dict().items()}
    spec = architecture_from_state_dict(tiny_bert(), prefixed, "model.")
    assert spec == current_architecture(pruned)

    skeleton = tiny_bert(seed=5)
    apply_architecture(skeleton, spec)
    apply_architecture(skeleton, spec)
    skeleton.load_state_dict(pruned.state_dict())
    assert skeleton.bert.encoder.layer[0].attention.self.num_attention_heads == 1
    assert skeleton.bert.encoder.layer[0].attention.self.all_head_size == 8


def test_apply_architecture_refuses_growth_and_wrong_depth() -> None:
    small = tiny_bert()
    prune_heads_and_ffn(small, head_pruning_ratio=0.5)
    with pytest.raises(ValueError, match="cannot grow"):
        apply_architecture(small, ArchitectureSpec((4, 4), (64, 64), 128, 8))
    with pytest.raises(ValueError, match="3 layers"):
        apply_architecture(tiny_bert(num_layers=3), ArchitectureSpec((1, 1), (8, 8), 128, 8))
