"""What a search candidate writes into a stage recipe (the one helper the trials and the later stages share)."""

from __future__ import annotations

from lit_compress.pipeline.compress import STRUCTURED_PRUNING, with_candidate
from lit_compress.tune.compression import Candidate

RECIPE = {
    "data": {"init_args": {"batch_size": 8}},
    "model": {"init_args": {"temperature": 2.0, "alpha": 0.5, "lr": 1e-4}},
    "trainer": {"callbacks": [{"class_path": STRUCTURED_PRUNING,
                               "init_args": {"head_pruning_ratio": 0.5, "importance": "taylor"}}]},
}  # fmt: skip
AUGMENT = {"methods": ["mask"], "copies": 1}


def _candidate(augment: bool) -> Candidate:
    return Candidate(layers=(0, 2), head_ratio=0.75, ffn_ratio=0.875, temperature=4.0, alpha=0.0, augment=augment,
                     hidden_ratio=0.25)


def test_a_pruning_recipe_gets_the_ratios_the_loss_and_the_augmentation():
    out = with_candidate(RECIPE, _candidate(True), AUGMENT)
    assert out["model"]["init_args"] == {"temperature": 4.0, "alpha": 0.0, "lr": 1e-4}
    (callback,) = out["trainer"]["callbacks"]
    assert callback["init_args"] == {"head_pruning_ratio": 0.75, "ffn_pruning_ratio": 0.875,
                                     "hidden_pruning_ratio": 0.25, "importance": "taylor"}
    assert out["data"]["init_args"] == {"batch_size": 8, "augment": AUGMENT}
    assert RECIPE["model"]["init_args"]["temperature"] == 2.0  # the given recipe is left as it was
    assert RECIPE["trainer"]["callbacks"][0]["init_args"]["head_pruning_ratio"] == 0.5


def test_without_augment_or_pruning_only_the_loss_changes():
    plain = with_candidate(RECIPE, _candidate(False), AUGMENT)
    assert "augment" not in plain["data"]["init_args"]
    qat = with_candidate(RECIPE, _candidate(True), AUGMENT, pruning=False)
    assert qat["model"]["init_args"]["temperature"] == 4.0 and qat["trainer"] == RECIPE["trainer"]
    assert qat["data"] == RECIPE["data"]
