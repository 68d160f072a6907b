"""Shared fixtures: a tiny BERT classifier with a word-level tokenizer, and small labelled CSV files."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

WORDS = {
    "sport": ["goal", "match", "team", "score", "league", "coach"],
    "tech": ["chip", "software", "phone", "internet", "robot", "data"],
    "money": ["bank", "profit", "market", "shares", "tax", "price"],
}


def word_tokenizer(words: list[str]):
    """A lower-casing ``BertTokenizerFast`` whose vocabulary is the special tokens, then ``words``.

    transformers 5 builds the vocabulary from ``vocab=``; a ``vocab_file=`` argument is ignored there and leaves
    only the special tokens, so every word would become ``[UNK]``.
    """
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [w for w in words if not w.startswith("[")]
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(dict.fromkeys(vocab))}, do_lower_case=True)


def make_tokenizer(directory: Path):
    """A BertTokenizerFast over the WORDS vocabulary plus filler words, saved in ``directory``."""
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "of", "in", "and", "today", "new"]
    vocab += [w for ws in WORDS.values() for w in ws]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    tok.save_pretrained(directory)
    return tok


def synthetic_rows(n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` (text, label) rows whose words reveal the label."""
    rng = random.Random(seed)
    labels = sorted(WORDS)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = rng.choices(WORDS[label], k=rng.randint(3, 8)) + rng.choices(["the", "a", "of", "today"], k=2)
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


@pytest.fixture()
def csv_files(tmp_path: Path) -> dict[str, str]:
    """train/validation/test CSV files of a 3-class synthetic task."""
    return {
        split: str(write_csv(tmp_path / f"{split}.csv", synthetic_rows(n, seed)))
        for split, n, seed in (("train", 60, 0), ("validation", 15, 1), ("test", 15, 2))
    }


@pytest.fixture()
def tiny_model_dir(tmp_path: Path) -> Path:
    """A saved tiny random BERT classifier (labels money/sport/tech) with its tokenizer."""
    from lit_compress.models.tiny import tiny_bert

    directory = tmp_path / "tiny_model"
    tok = make_tokenizer(directory)
    model = tiny_bert(num_labels=3, vocab_size=len(tok))
    model.config.id2label = {0: "money", 1: "sport", 2: "tech"}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    model.save_pretrained(directory)
    return directory


def run_two_ranks(script: Path, out: Path, timeout: int = 180) -> list[dict]:
    """Run ``script OUT`` (a 2-process CPU DDP Lightning run that saves ``OUT/rank{r}.pt``); return both files."""
    import os
    import subprocess
    import sys

    import torch

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(script), str(out)], cwd=root, env=env, capture_output=True,
                            text=True, timeout=timeout)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def fit_pruning_on_two_ranks(module, callback, data, out: Path, **record) -> None:
    """The body of a :func:`run_two_ranks` pruning script: fit ``module`` (a LightningModule whose ``model`` is
    pruned and whose ``batches`` lists what each step saw) with ``callback`` under 2-process CPU DDP (gloo) for
    6 steps of 4 shuffled examples, then save this rank's world size, batches, model state, whether the DDP
    wrapper holds the (cut) parameters, and ``record`` (name -> ``fn(model)``) as ``OUT/rank{r}.pt``."""
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader

    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_steps=6, callbacks=[callback], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(data, batch_size=4, shuffle=True))
    wrapped = {id(p) for p in trainer.strategy.model.parameters()}
    torch.save(
        {"world_size": trainer.world_size, "batches": module.batches,
         "state": {k: v.detach().clone() for k, v in module.model.state_dict().items()},
         "wrapper_holds_cut_params": wrapped == {id(p) for p in module.parameters()},
         **{name: fn(module.model) for name, fn in record.items()}},
        out / f"rank{trainer.global_rank}.pt",
    )  # fmt: skip
