"""One query through the Rust tokenizer directly: the same ids as the Hugging Face wrapper, or not used."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lit_compress.export.inputs import TextInputs
from lit_compress.export.query import QueryEncoder
from lit_compress.models.hub import EMBEDDED_MODEL, load_tokenizer
from lit_compress.models.tiny_tokenizers import TINY_CORPUS, tiny_tokenizer

TEXTS = [*TINY_CORPUS[:20], "UPPER case, Ünïcödé and   spaces\t\n", "tokens " * 80, "a"]


def _tokenizers():
    yield from ((kind, tiny_tokenizer(kind, vocab_size=300)) for kind in ("wordpiece", "bpe", "unigram"))
    yield "embedded MiniLM", load_tokenizer(EMBEDDED_MODEL)


@pytest.mark.parametrize("name, tokenizer", list(_tokenizers()), ids=lambda v: v if isinstance(v, str) else "")
def test_direct_encoding_equals_the_wrapper_with_truncation(name, tokenizer):
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]
    encoder = QueryEncoder.build(tokenizer, 16, names)
    assert encoder is not None, f"{name}: the direct path should reproduce its wrapper"
    for text in TEXTS:
        expected = tokenizer(text, truncation=True, max_length=16, return_tensors="np")
        got, tensors = encoder(text, "np"), encoder(text, "pt")
        assert set(got) == set(expected) & {"input_ids", "attention_mask", "token_type_ids"}  # as the wrapper
        for n in names:
            assert got[n].dtype == np.int64 and np.array_equal(got[n], expected[n]), (name, text, n)
            assert tensors[n].dtype == torch.long and torch.equal(tensors[n], torch.from_numpy(expected[n]))
    assert encoder("tokens " * 80)["input_ids"].shape == (1, 16)


def test_a_wrapper_it_cannot_reproduce_keeps_the_wrapper():
    tokenizer = tiny_tokenizer("wordpiece", vocab_size=300)

    class Prefixed:  # a wrapper adding its own Python-side preprocessing
        _tokenizer = tokenizer._tokenizer
        truncation_side = "right"

        def __call__(self, text, **kwargs):
            return tokenizer("note: " + text, **kwargs)

    assert QueryEncoder.build(Prefixed(), 16, ["input_ids", "attention_mask"]) is None
    assert QueryEncoder.build(object(), 16, ["input_ids"]) is None  # no Rust backend


def test_text_inputs_use_it_for_one_string_only():
    tokenizer = tiny_tokenizer("wordpiece", vocab_size=300)
    inputs = TextInputs(tokenizer, max_length=12)
    one = inputs.encode(TEXTS[0], "np")
    assert isinstance(inputs._query, QueryEncoder)
    batch = inputs.encode([TEXTS[0]], "np")  # a list of one: the wrapper, padded to itself
    assert np.array_equal(one["input_ids"], batch["input_ids"])
    assert np.array_equal(one["attention_mask"], batch["attention_mask"])
