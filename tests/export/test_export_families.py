"""Every supported encoder family, structurally pruned, exports to ONNX that matches PyTorch and to ORT int8 that
runs int8 kernels, from its model directory with a real tokenizer of its kind."""

from __future__ import annotations

import json

import pytest
import torch

from lit_compress.export import export_model
from lit_compress.export.predictor import Predictor
from lit_compress.models.io import load_model_dir, save_model_dir
from lit_compress.models.tiny import TINY_FAMILIES, tiny_model
from lit_compress.models.tiny_tokenizers import TOKENIZER_KIND, tiny_tokenizer
from lit_compress.prune.structured import prune_heads_and_ffn

TEXTS = [
    "the market rose sharply today after the news from the bank",
    "a new film opens this week in london and critics love it",
    "the team won the final match with a late goal",
    "voters went to the polls as the election campaign ended",
    "the phone maker showed a faster chip at the show",
] * 6


def pruned_family_dir(family: str, path) -> tuple:
    """A tiny pruned classifier of ``family`` with its kind of tokenizer, saved with ``save_model_dir``."""
    tok = tiny_tokenizer(TOKENIZER_KIND[family])
    ids = {k: getattr(tok, k) for k in ("pad_token_id", "bos_token_id", "eos_token_id", "cls_token_id",
                                         "sep_token_id") if getattr(tok, k, None) is not None}  # fmt: skip
    model = tiny_model(family, vocab_size=len(tok), **ids)
    with torch.no_grad():  # a head that separates the texts, so argmax agreement means something
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=torch.Generator().manual_seed(1)))
    prune_heads_and_ffn(model, head_pruning_ratio=0.5, ffn_pruning_ratio=0.5)
    return save_model_dir(model, path, tokenizer=tok), model, tok


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_pruned_family_exports_fp32_with_parity_and_int8_with_int8_kernels(family: str, tmp_path) -> None:
    model_dir, model, tok = pruned_family_dir(family, tmp_path / "model")
    out = tmp_path / "export"
    export_model(str(model_dir), str(out), formats=["onnx-fp32", "ort-dynamic-int8"],
                       parity_examples=TEXTS, max_length=32)  # fmt: skip
    fp32 = json.loads((out / "onnx-fp32" / "manifest.json").read_text())
    assert fp32["parity"]["max_abs_diff"] <= 1e-4
    int8 = json.loads((out / "ort-dynamic-int8" / "manifest.json").read_text())
    assert int8["kernels"]["runs_int8"] and int8["kernels"]["warning"] is None
    predictor = Predictor.from_path(out / "onnx-fp32", max_length=32)
    enc = tok(TEXTS[:5], padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        expected = load_model_dir(model_dir)(**enc).logits
    torch.testing.assert_close(torch.as_tensor(predictor.logits(TEXTS[:5])), expected, rtol=0, atol=1e-4)
