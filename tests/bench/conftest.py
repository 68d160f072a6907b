"""Fixtures for benchmark tests: a tiny tokenizer, a tiny classifier directory and quickly exported artifacts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import BertTokenizerFast

from lit_compress.export import export_model
from lit_compress.models.io import save_model_dir
from lit_compress.models.tiny import tiny_bert

WORDS = "news sport business tech politics film music game win lose market bank vote team goal player".split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(scope="session")
def tokenizer() -> BertTokenizerFast:
    from tests.conftest import word_tokenizer

    tok = word_tokenizer(WORDS)
    assert len(tok) == len(SPECIAL) + len(set(WORDS)), "every test word is in the vocabulary"
    return tok


@pytest.fixture(scope="session")
def texts() -> list[str]:
    return [" ".join(WORDS[(5 * i + 3 * j) % len(WORDS)] for j in range(2 + i % 7)) for i in range(24)]


@pytest.fixture(scope="session")
def labels(texts: list[str]) -> list[int]:
    return [i % 3 for i in range(len(texts))]


@pytest.fixture(scope="session")
def val_texts() -> list[str]:
    """A second split (the final artifact is chosen on it), disjoint from ``texts``."""
    return [" ".join(WORDS[(7 * i + 2 * j + 1) % len(WORDS)] for j in range(3 + i % 5)) for i in range(12)]


@pytest.fixture(scope="session")
def val_labels(val_texts: list[str]) -> list[int]:
    return [(i + 1) % 3 for i in range(len(val_texts))]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: BertTokenizerFast) -> Path:
    model = tiny_bert(seed=1)
    with torch.no_grad():
        model.classifier.weight.mul_(50.0)
    return save_model_dir(model, tmp_path_factory.mktemp("model") / "tiny", tokenizer)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory, model_dir: Path, texts: list[str]) -> Path:
    """fp32 and int8 artifacts (legacy exporter: fast, and export itself is tested in tests/export)."""
    out = tmp_path_factory.mktemp("artifacts")
    export_model(str(model_dir), str(out), formats=["onnx-fp32", "ort-dynamic-int8", "torch-dynamic-int8"],
                 parity_examples=texts, exporter="legacy")  # fmt: skip
    return out
