from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from lit_compress.models.tiny_tokenizers import TINY_CORPUS, TOKENIZER_KIND, tiny_tokenizer

KINDS = ["wordpiece", "bpe", "unigram"]
MODEL = {"wordpiece": "WordPiece", "bpe": "BPE", "unigram": "Unigram"}
BOUNDS = {"wordpiece": ("[CLS]", "[SEP]"), "bpe": ("<s>", "</s>"), "unigram": ("<s>", "</s>")}


@pytest.fixture(scope="module", params=KINDS)
def kind_and_tokenizer(request):
    return request.param, tiny_tokenizer(request.param)


def test_kind_model_pre_tokenizer_and_size(kind_and_tokenizer) -> None:
    kind, tok = kind_and_tokenizer
    state = json.loads(tok.backend_tokenizer.to_str())
    assert state["model"]["type"] == MODEL[kind]
    pre = {"wordpiece": "BertPreTokenizer", "bpe": "ByteLevel", "unigram": "Metaspace"}[kind]
    assert state["pre_tokenizer"]["type"] == pre
    assert 300 <= len(tok) <= 1000
    expected_names = ["input_ids", "token_type_ids", "attention_mask"] if kind == "wordpiece" else [
        "input_ids", "attention_mask"]
    assert list(tok.model_input_names) == expected_names
    assert list(tok("the cat")) == expected_names


def test_special_tokens_and_templates_of_the_family(kind_and_tokenizer) -> None:
    kind, tok = kind_and_tokenizer
    cls, sep = BOUNDS[kind]
    assert (tok.cls_token, tok.sep_token) == (cls, sep)
    assert {tok.pad_token, tok.unk_token, tok.mask_token} == (
        {"[PAD]", "[UNK]", "[MASK]"} if kind == "wordpiece" else {"<pad>", "<unk>", "<mask>"})
    assert tok.mask_token_id == (4 if kind == "wordpiece" else len(tok) - 1)  # RoBERTa and XLM-R: <mask> last
    ids = tok("the cat sat")["input_ids"]
    assert ids[0] == tok.convert_tokens_to_ids(cls) and ids[-1] == tok.convert_tokens_to_ids(sep)
    pair = tok.convert_ids_to_tokens(tok("the cat", "a dog")["input_ids"])
    assert pair.count(sep) == (2 if kind == "wordpiece" else 3) and pair[0] == cls
    if kind == "wordpiece":
        enc = tok("the cat", "a dog")
        assert enc["token_type_ids"][-1] == 1 and enc["token_type_ids"][0] == 0


def test_unseen_text_encodes_and_byte_level_never_needs_unk(kind_and_tokenizer) -> None:
    kind, tok = kind_and_tokenizer
    ids = tok("Zebras juggle quixotic xylophones: 42 €!", add_special_tokens=False)["input_ids"]
    assert ids and (tok.unk_token_id in ids) == (kind != "bpe")  # "€" is outside the ASCII alphabet
    letters = tok("zebras juggle quixotic xylophones", add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in letters  # the ASCII alphabet is always in the vocabulary


def test_save_pretrained_round_trip(kind_and_tokenizer, tmp_path) -> None:
    _, tok = kind_and_tokenizer
    tok.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    texts = list(TINY_CORPUS[:3]) + ["unseen zebras"]
    assert reloaded(texts)["input_ids"] == tok(texts)["input_ids"]
    assert reloaded.all_special_tokens == tok.all_special_tokens
    assert list(reloaded.model_input_names) == list(tok.model_input_names)


@pytest.mark.parametrize("kind", KINDS)
def test_training_is_deterministic_and_uses_the_given_texts(kind) -> None:
    assert tiny_tokenizer(kind).backend_tokenizer.to_str() == tiny_tokenizer(kind).backend_tokenizer.to_str()
    own = tiny_tokenizer(kind, vocab_size=300, texts=["giraffes giraffes giraffes eat leaves"] * 5)
    assert len(own.tokenize("giraffes")) == 1 and len(own) <= 300


def test_tokenizer_kind_of_model_types() -> None:
    assert TOKENIZER_KIND == {
        "bert": "wordpiece", "electra": "wordpiece", "distilbert": "wordpiece", "roberta": "bpe",
        "modernbert": "bpe", "xlm-roberta": "unigram", "albert": "unigram", "deberta-v2": "unigram",
    }  # fmt: skip


def test_misconfiguration_messages() -> None:
    with pytest.raises(ValueError, match="Unknown tokenizer kind 'sentencepiece'"):
        tiny_tokenizer("sentencepiece")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="vocab_size=100 is too small"):
        tiny_tokenizer("bpe", vocab_size=100)
