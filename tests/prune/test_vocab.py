from __future__ import annotations

import string

import pytest
import torch
from transformers import AutoTokenizer, BertForMaskedLM, BertTokenizer

from lit_compress.models.io import load_model_dir, save_model_dir
from lit_compress.models.tiny import tiny_bert, tiny_bert_config
from lit_compress.prune.vocab import (
    corpus_token_counts,
    kept_token_ids,
    remap_input_ids,
    trim_tokenizer,
    trim_vocabulary,
)

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "cat", "dog", "sat", "on", "mat", "play", "##ing", "##ed", "run", "##s", "bird", "sang"]
CORPUS = ["The cat sat on the mat.", "A dog is playing!", "the dogs run, the cat played"]


@pytest.fixture
def tokenizer(tmp_path):
    tokens = SPECIALS + WORDS + list(string.ascii_lowercase) + [f"##{c}" for c in string.ascii_lowercase] + list(".,!")
    path = tmp_path / "tok"
    BertTokenizer(vocab={t: i for i, t in enumerate(tokens)}).save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


def _logits(model, tokenizer, texts):
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits, enc


def test_trimmed_model_and_tokenizer_reproduce_logits_on_in_vocabulary_text(tokenizer) -> None:
    model = tiny_bert()
    old_model = tiny_bert()
    new_tokenizer, report = trim_vocabulary(model, tokenizer, CORPUS)
    in_vocab = ["the mat sat on a cat", "dogs playing!", "the cat, the dog."]
    old_logits, old_enc = _logits(old_model, tokenizer, in_vocab)
    new_logits, new_enc = _logits(model, new_tokenizer, in_vocab)
    torch.testing.assert_close(new_logits, old_logits, rtol=0, atol=0)
    assert torch.equal(new_enc["input_ids"], remap_input_ids(old_enc["input_ids"], report, new_tokenizer.unk_token_id))
    assert torch.equal(new_enc["token_type_ids"], old_enc["token_type_ids"])


def test_report_counts_and_sliced_rows_match_the_corpus(tokenizer) -> None:
    model = tiny_bert()
    old_rows = model.bert.embeddings.word_embeddings.weight.detach().clone()
    used = set(corpus_token_counts(tokenizer, CORPUS))
    used_tokens = {tokenizer.convert_ids_to_tokens(i) for i in used}
    assert used_tokens >= {"the", "cat", "play", "##ing", "##ed", "##s", "a", "!"}
    _, report = trim_vocabulary(model, tokenizer, CORPUS)
    expected = sorted(used | set(tokenizer.all_special_ids))
    assert list(report.kept_ids) == expected
    assert report.summary() == {
        "old_vocab_size": 128, "new_vocab_size": len(expected),
        "old_embedding_params": 128 * 32, "new_embedding_params": len(expected) * 32,
    }  # fmt: skip
    assert model.config.vocab_size == len(expected) and model.config.pad_token_id == 0
    torch.testing.assert_close(model.bert.embeddings.word_embeddings.weight, old_rows[torch.tensor(expected)])


def test_trimmed_tokenizer_keeps_special_tokens_order_and_reloads(tokenizer, tmp_path) -> None:
    keep = kept_token_ids(tokenizer, corpus_token_counts(tokenizer, CORPUS))
    new = trim_tokenizer(tokenizer, keep)
    vocab = new.get_vocab()
    assert [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])] == tokenizer.convert_ids_to_tokens(keep.tolist())
    assert new.cls_token_id == vocab["[CLS]"] == 2 and new.unk_token_id == 1
    new.save_pretrained(tmp_path / "new")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "new")
    pair = reloaded("the cat", "sat on the mat")
    assert pair["input_ids"] == new("the cat", "sat on the mat")["input_ids"]
    assert pair["input_ids"][0] == vocab["[CLS]"] and pair["token_type_ids"][-1] == 1


def test_out_of_vocabulary_words_use_only_kept_pieces(tokenizer) -> None:
    new, report = trim_vocabulary(tiny_bert(), tokenizer, CORPUS)
    kept = set(new.get_vocab())
    old_ids = tokenizer("the bird sang", return_tensors="pt")["input_ids"]  # "bird", "sang" were not in the corpus
    assert "bird" not in kept and "sang" not in kept
    pieces = new.convert_ids_to_tokens(new("the bird sang")["input_ids"])
    assert set(pieces) <= kept and pieces[1] == "the"
    remapped = remap_input_ids(old_ids, report, new.unk_token_id)[0].tolist()
    assert remapped[2:4] == [new.unk_token_id] * 2  # per-piece [UNK] through the old tokenizer


def test_min_frequency_and_extra_tokens(tokenizer) -> None:
    counts = corpus_token_counts(tokenizer, CORPUS)
    assert counts[tokenizer.convert_tokens_to_ids("the")] == 4
    keep = kept_token_ids(tokenizer, counts, min_frequency=2, extra_tokens=["bird"])
    tokens = set(tokenizer.convert_ids_to_tokens(keep.tolist()))
    assert {"the", "cat", "bird", *SPECIALS} <= tokens and "mat" not in tokens
    with pytest.raises(ValueError, match="not in the tokenizer's vocabulary"):
        kept_token_ids(tokenizer, counts, extra_tokens=["zebra"])
    with pytest.raises(ValueError, match="min_frequency must be >= 1"):
        kept_token_ids(tokenizer, counts, min_frequency=0)


def test_tied_output_embeddings_stay_tied_and_sliced(tokenizer) -> None:
    torch.manual_seed(0)
    model = BertForMaskedLM(tiny_bert_config()).eval()
    old = BertForMaskedLM(tiny_bert_config()).eval()
    old.load_state_dict(model.state_dict())
    new_tokenizer, report = trim_vocabulary(model, tokenizer, CORPUS)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert model.cls.predictions.bias is model.cls.predictions.decoder.bias
    assert model.cls.predictions.bias.shape == (report.new_vocab_size,)
    text = ["the cat sat on the mat"]
    with torch.no_grad():
        new_logits = model(**new_tokenizer(text, return_tensors="pt")).logits
        old_logits = old(**tokenizer(text, return_tensors="pt")).logits
    torch.testing.assert_close(new_logits, old_logits[..., torch.tensor(report.kept_ids)], rtol=0, atol=1e-6)


def test_trimmed_model_saves_and_loads_with_its_tokenizer(tokenizer, tmp_path) -> None:
    model = tiny_bert()
    new_tokenizer, _ = trim_vocabulary(model, tokenizer, CORPUS)
    save_model_dir(model, tmp_path / "m", tokenizer=new_tokenizer)
    loaded = load_model_dir(tmp_path / "m")
    reloaded_tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    a, _ = _logits(model, new_tokenizer, CORPUS)
    b, _ = _logits(loaded, reloaded_tok, CORPUS)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_rejects_non_wordpiece_and_slow_tokenizers() -> None:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    word_level = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]")))
    with pytest.raises(ValueError, match="Only WordPiece"):
        trim_tokenizer(word_level, torch.tensor([0]))
    with pytest.raises(ValueError, match="fast"):
        trim_tokenizer(object(), torch.tensor([0]))
