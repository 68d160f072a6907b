"""The main job on a user's model directory of every supported encoder family, a few optimizer steps per stage:
teacher → student from teacher layers → vocabulary trimming + structured pruning → QAT (dynamic, static) →
export → int8 kernels → benchmark, then the pruned model reloaded from its directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lit_compress.bench.suite import BenchmarkSettings
from lit_compress.models.architecture import current_architecture
from lit_compress.models.io import load_model_dir, save_model_dir
from lit_compress.models.tiny import TINY_FAMILIES, tiny_model
from lit_compress.models.tiny_tokenizers import TINY_CORPUS, TOKENIZER_KIND, tiny_tokenizer
from lit_compress.pipeline import BenchmarkOptions, run_pipeline
from tests.conftest import WORDS, synthetic_rows


def family_teacher_dir(family: str, path: Path, train_texts: list[str]) -> Path:
    """A 4-layer tiny classifier of ``family`` with a tokenizer of its kind trained on the corpus, saved as a
    user would bring it (``save_pretrained`` layout)."""
    tok = tiny_tokenizer(TOKENIZER_KIND[family], vocab_size=400, texts=[*TINY_CORPUS, *train_texts])
    ids = {k: getattr(tok, k) for k in ("pad_token_id", "bos_token_id", "eos_token_id", "cls_token_id",
                                         "sep_token_id") if getattr(tok, k, None) is not None}  # fmt: skip
    model = tiny_model(family, num_layers=4, num_labels=3, vocab_size=len(tok), **ids)
    model.config.id2label = dict(enumerate(sorted(WORDS)))  # the CSV files' labels
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    return save_model_dir(model, path, tokenizer=tok)


def family_run(csv_files: dict[str, str], teacher_dir: Path) -> dict:
    trainer = {"max_epochs": 2, "max_steps": 6, "accelerator": "cpu", "enable_progress_bar": False,
               "enable_checkpointing": False, "enable_model_summary": False, "num_sanity_val_steps": 0}
    pruning = {"class_path": "lit_compress.prune.StructuredPruning",
               "init_args": {"head_pruning_ratio": 0.5, "ffn_pruning_ratio": 0.5}}
    return {
        "defaults": {
            "seed_everything": 42,
            "data": {"init_args": {"dataset": "local", "data_files": csv_files, "batch_size": 8, "max_length": 24}},
            "model": {"init_args": {"lr": 1e-3}},
            "trainer": trainer,
        },
        "teacher": {"model": {"init_args": {"model": str(teacher_dir), "lr": 1e-3}}},
        "distill": {"model": {"init_args": {"student_layers": [0, 3]}}},
        "prune": {"vocab_min_frequency": 2, "trainer": {"callbacks": [pruning]}},
        "qat": {"schemes": ["dynamic", "static"], "model": {"init_args": {"lr": 1e-4}},
                "trainer": {"max_steps": 3, "max_epochs": 1}},
        "export": {"formats": ["onnx-fp32", "ort-dynamic-int8"], "per_channel": True},
        "benchmark": BenchmarkOptions(BenchmarkSettings(runs=3, warmup=1, batch_sizes=(1,), throughput_runs=1)),
    }


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_main_job_on_a_model_directory_of_every_family(family: str, tmp_path: Path, csv_files) -> None:
    train_texts = [text for text, _ in synthetic_rows(60, 0)]
    teacher_dir = family_teacher_dir(family, tmp_path / "user_model", train_texts)
    run = tmp_path / "run"
    results = run_pipeline(run_dir=str(run), **family_run(csv_files, teacher_dir))

    blocks = 1 if family == "albert" else 2  # ALBERT: one block shared by every layer
    assert results.pruned is not None
    assert results.pruned.architecture["num_heads"] == [2] * blocks
    assert results.pruned.architecture["intermediate_sizes"] == [32] * blocks
    vocab = results.pruned.vocabulary
    assert vocab["new_vocab_size"] < vocab["old_vocab_size"]
    assert [q.scheme for q in results.quantized] == ["dynamic", "static"]
    for artifact in ("student/ort-dynamic-int8", "pruned/ort-dynamic-int8", "qat_dynamic/ort-dynamic-int8"):
        manifest = json.loads((run / "export" / artifact / "manifest.json").read_text())
        assert manifest["kernels"]["runs_int8"], f"{family} {artifact} computes in float"
    static = json.loads((results.quantized[1].artifact.parent / "manifest.json").read_text())
    assert static["kernels"]["runs_int8"]
    assert results.final is not None

    pruned = load_model_dir(results.pruned.model_dir)
    assert current_architecture(pruned).num_heads == (2,) * blocks
    assert current_architecture(pruned).vocab_size == vocab["new_vocab_size"]
    from lit_compress.models.hub import load_tokenizer

    tok = load_tokenizer(str(results.pruned.model_dir))
    enc = tok(train_texts[:4], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(pruned(**enc).logits).all()
