"""Shared fixtures: a tiny word-level BERT tokenizer, a tiny classifier directory and its exported artifacts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import BertTokenizerFast

from lit_compress.export import export_model
from lit_compress.models.io import save_model_dir
from lit_compress.models.tiny import tiny_bert

WORDS = (
    "the a of to and in is it for on with as this was news sport business tech politics film music game "
    "win lose market bank vote election team goal player stock price phone chip star show minister"
).split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ALL_FORMATS = ["torch-fp32", "onnx-fp32", "ort-dynamic-int8", "ort-static-int8", "ort-int4", "torch-dynamic-int8"]


def make_texts(n: int, offset: int = 0) -> list[str]:
    """Deterministic sentences of 2 to 14 words (so batches need padding)."""
    return [" ".join(WORDS[(7 * i + 3 * j) % len(WORDS)] for j in range(2 + (i * 5) % 13)) for i in
            range(offset, offset + n)]  # fmt: skip


def confident_tiny_bert(seed: int = 0) -> torch.nn.Module:
    """tiny_bert with every parameter jittered (no zero biases, no all-ones LayerNorm scales, which ONNX
    optimizers fold or merge) and a scaled-up head centred on random inputs, so predictions differ
    between texts."""
    model = tiny_bert(seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=gen))
        model.classifier.weight.mul_(30.0)
        ids = torch.randint(len(SPECIAL), len(SPECIAL) + len(WORDS), (64, 10), generator=gen)
        model.classifier.bias.sub_(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.mean(0))
    return model


@pytest.fixture(scope="session")
def tokenizer() -> BertTokenizerFast:
    from tests.conftest import word_tokenizer

    tok = word_tokenizer(WORDS)
    assert len(tok) == len(SPECIAL) + len(set(WORDS)), "every test word is in the vocabulary"
    return tok


@pytest.fixture(scope="session")
def texts() -> list[str]:
    return make_texts(48)


def trained_tiny_bert(tokenizer: BertTokenizerFast, texts: list[str], steps: int = 60) -> torch.nn.Module:
    """tiny_bert fitted to a word-determined label (first word's index mod 3), so its decisions have margins
    that int8 noise should not flip (a random model's near-ties would make agreement tests meaningless)."""
    model = confident_tiny_bert().train()
    labels = torch.tensor([WORDS.index(t.split()[0]) % 3 for t in texts])
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(
            model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits, labels
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: BertTokenizerFast, texts: list[str]) -> Path:
    return save_model_dir(trained_tiny_bert(tokenizer, texts), tmp_path_factory.mktemp("model") / "tiny", tokenizer)


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory, model_dir: Path, texts: list[str]) -> Path:
    """Every artifact kind exported once for the whole session; returns the export directory."""
    out = tmp_path_factory.mktemp("export")
    export_model(str(model_dir), str(out), formats=ALL_FORMATS, calibration_examples=texts[:16],
                 parity_examples=texts[16:32], run_config={"run": "test"}, source_checkpoint="last.ckpt")  # fmt: skip
    return out


@pytest.fixture(scope="session")
def make_model():
    """Factory for the confident tiny classifier (fresh instance per call)."""
    return confident_tiny_bert


@pytest.fixture
def batch(tokenizer: BertTokenizerFast, texts: list[str]) -> dict[str, torch.Tensor]:
    """A padded batch of 5 real texts of different lengths."""
    enc = tokenizer(texts[:5], padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
