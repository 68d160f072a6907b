"""Resolving and loading models: local paths, ClassifierModule checkpoints (weights_only), clear errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from lit_compress.errors import InputNotFoundError, UserInputError
from lit_compress.models.hub import check_model, load_classifier, load_tokenizer, read_checkpoint, resolve_model_path


def classifier_checkpoint(path: Path, model_dir: Path, labels: list[str]) -> Path:
    """What ``trainer.save_checkpoint`` writes for a ``ClassifierModule``: ``model.``-prefixed weights, hparams."""
    model = load_classifier(str(model_dir), labels)
    with torch.no_grad():
        model.classifier.bias.fill_(0.25)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"model": str(model_dir), "labels": labels}}, path)
    return path


def test_a_classifier_checkpoint_loads_as_its_fine_tuned_model(tmp_path, tiny_model_dir) -> None:
    labels = ["money", "sport", "tech"]
    ckpt = classifier_checkpoint(tmp_path / "teacher.ckpt", tiny_model_dir, labels)
    check_model(str(ckpt))
    model = load_classifier(str(ckpt), labels)
    assert torch.all(model.classifier.bias == 0.25)
    assert list(model.config.id2label.values()) == labels
    assert load_tokenizer(str(ckpt)).tokenize("goal match") == ["goal", "match"]
    with pytest.raises(UserInputError, match="was trained for labels"):
        load_classifier(str(ckpt), ["a", "b", "c"])


class Payload:
    """Not a tensor or a plain container: ``weights_only=True`` must refuse to unpickle it."""


def test_checkpoints_are_read_with_weights_only(tmp_path) -> None:
    ckpt = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"model": "x", "payload": Payload()}}, ckpt)
    with pytest.raises(UserInputError, match="holds objects weights_only=True refuses"):
        read_checkpoint(ckpt)


@pytest.mark.parametrize(
    ("name", "error", "match"),
    [
        ("./no/such/dir", InputNotFoundError, "not found: no such file or directory"),
        ("missing.ckpt", InputNotFoundError, "not found"),
        ("a/b/c", InputNotFoundError, "not found"),
        ("embedded:gpt-99", UserInputError, "embedded default"),
    ],
)
def test_unresolvable_names_are_explained(name: str, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        resolve_model_path(name)


def test_local_files_that_are_not_models(tmp_path) -> None:
    with pytest.raises(UserInputError, match="not a model directory"):
        resolve_model_path(str(tmp_path))
    (tmp_path / "weights.bin").write_bytes(b"0")
    with pytest.raises(UserInputError, match="not a .ckpt"):
        resolve_model_path(str(tmp_path / "weights.bin"))


def test_only_the_new_head_report_is_hidden(tiny_model_dir, caplog) -> None:
    """Fine-tuning for new labels starts from a fresh head (no report); other load problems are still reported."""
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(tiny_model_dir)
    model.save_pretrained(tiny_model_dir / "bare")
    weights = tiny_model_dir / "bare" / "model.safetensors"
    from safetensors.torch import load_file, save_file

    state = {k: v for k, v in load_file(str(weights)).items() if not k.startswith("classifier.")}
    save_file(state, str(weights))
    logger = logging.getLogger("transformers.modeling_utils")
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        load_classifier(str(tiny_model_dir / "bare"), ["a", "b"])
        assert not [r for r in records if "LOAD REPORT" in r]
        state.pop("bert.pooler.dense.weight")
        save_file(state, str(weights))
        load_classifier(str(tiny_model_dir / "bare"), ["a", "b"])
        assert [r for r in records if "LOAD REPORT" in r and "bert.pooler.dense.weight" in r]
    finally:
        logger.removeHandler(handler)
