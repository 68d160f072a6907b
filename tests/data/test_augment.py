import random

import pytest
import torch

from lit_compress.data.augment import (
    Augmentation,
    augment_texts,
    delete_span,
    input_embeddings,
    mask_words,
    read_unlabeled,
    replace_words,
    whole_words,
    word_neighbours,
)
from lit_compress.errors import UserInputError
from tests.conftest import word_tokenizer

WORDS = "the bank raised its profit today".split()


def test_mask_words_masks_exactly_the_draws_below_the_probability() -> None:
    draws = _draws(0, len(WORDS))
    expected = ["[MASK]" if d < 0.5 else w for d, w in zip(draws, WORDS, strict=True)]
    assert mask_words(WORDS, random.Random(0), 0.5) == expected
    assert expected == ["the", "bank", "[MASK]", "[MASK]", "profit", "[MASK]"]  # draws .844 .758 .421 .259 .511 .405
    assert mask_words(WORDS, random.Random(0), 0.0) == WORDS
    assert mask_words(WORDS, random.Random(0), 1.0, "<mask>") == ["<mask>"] * len(WORDS)


def _draws(seed: int, n: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.random() for _ in range(n)]


def test_delete_span_removes_one_contiguous_span_within_bounds() -> None:
    assert delete_span(WORDS, random.Random(1), 3) == ["the", "bank", "raised", "its", "today"]  # L=1 at 4
    for seed in range(200):
        out = delete_span(WORDS, random.Random(seed), 3)
        removed = len(WORDS) - len(out)
        assert 1 <= removed <= 3
        starts = [s for s in range(len(WORDS) - removed + 1) if WORDS[:s] + WORDS[s + removed :] == out]
        assert starts, f"seed {seed}: {out} is not WORDS minus one contiguous span"
    assert delete_span(["one"], random.Random(0), 3) == ["one"]
    assert len(delete_span(["a", "b"], random.Random(0), 5)) == 1  # at least one word stays


def test_replace_words_keeps_punctuation_and_case() -> None:
    neighbours = {"bank": ["lender", "fund"], "the": ["a"]}
    assert replace_words("The bank, profit".split(), random.Random(0), 0.9, neighbours) == ["A", "fund,", "profit"]
    assert replace_words(WORDS, random.Random(0), 0.0, neighbours) == WORDS


def test_augmentation_is_validated_with_actionable_messages() -> None:
    assert Augmentation(methods=["mask"]).methods == ("mask",)  # a YAML list becomes a tuple
    with pytest.raises(UserInputError, match=r"subset of \['replace', 'mask', 'delete'\]"):
        Augmentation(methods=("swap",))
    with pytest.raises(UserInputError, match="copies must be >= 1"):
        Augmentation(copies=0)
    with pytest.raises(UserInputError, match=r"probability must be in \[0, 1\]"):
        Augmentation(probability=1.5)
    with pytest.raises(UserInputError, match="max_span"):
        Augmentation(max_span=0)


def toy_vocab():
    """cat ~ dog, car ~ bus; '##ing' (a piece) and '3d' (not alphabetic) lie next to cat but are no words."""
    tok = word_tokenizer(["cat", "dog", "car", "bus", "##ing", "3d"])
    rows = {"cat": [1.0, 0.0], "dog": [0.9, 0.1], "car": [0.0, 1.0], "bus": [0.1, 0.9], "##ing": [1.0, 0.01],
            "3d": [1.0, 0.0]}
    table = torch.ones(len(tok), 2)  # special tokens: (1, 1), near everything, never words
    for word, row in rows.items():
        table[tok.convert_tokens_to_ids(word)] = torch.tensor(row)
    return tok, table


def test_word_neighbours_are_the_nearest_whole_words_by_cosine() -> None:
    tok, table = toy_vocab()
    assert sorted(whole_words(tok)) == ["bus", "car", "cat", "dog"]
    assert word_neighbours(table, tok, 1) == {"cat": ["dog"], "dog": ["cat"], "car": ["bus"], "bus": ["car"]}
    assert word_neighbours(table, tok, 2, words={"cat"}) == {"cat": ["dog", "bus"]}  # cos .11 > 0 (car)
    assert word_neighbours(table, tok, 10, chunk=1)["car"] == ["bus", "dog", "cat"]


def test_augment_texts_is_seeded_copy_major_and_needs_neighbours_for_replace() -> None:
    texts = ["the bank raised its profit today", "a new phone", "goal"]
    aug = Augmentation(methods=("mask", "delete"), copies=2, probability=0.5, seed=3)
    out = augment_texts(texts, aug)
    assert len(out) == 6 and out == augment_texts(texts, aug)
    assert out != augment_texts(texts, Augmentation(methods=("mask", "delete"), copies=2, probability=0.5, seed=4))
    assert augment_texts(texts[:2], aug)[:2] == out[:2]  # a row depends on its position and seed only
    rng = random.Random("3:1:0")  # copy 1 of row 0
    method = rng.choice(aug.methods)
    words = texts[0].split()
    expected = mask_words(words, rng, 0.5) if method == "mask" else delete_span(words, rng, 3)
    assert out[3] == " ".join(expected)
    assert augment_texts(texts, Augmentation(methods=("mask",), probability=0.0)) == texts
    with pytest.raises(UserInputError, match="drop 'replace'"):
        augment_texts(texts, Augmentation(methods=("replace",)))


def test_input_embeddings_read_the_safetensors_table(tiny_model_dir) -> None:
    from transformers import AutoModel

    table = input_embeddings(str(tiny_model_dir))
    expected = AutoModel.from_pretrained(str(tiny_model_dir)).get_input_embeddings().weight
    assert torch.equal(table, expected.detach())
    with pytest.raises(UserInputError, match="drop 'replace' from augment.methods"):
        input_embeddings(str(tiny_model_dir / "missing"))


def test_read_unlabeled_formats_and_errors(tmp_path) -> None:
    (tmp_path / "u.txt").write_text("first text\n\n  second text \n")
    assert read_unlabeled(str(tmp_path / "u.txt")) == ["first text", "second text"]
    (tmp_path / "u.csv").write_text("body,x\nhello,1\n,2\nworld,3\n")
    assert read_unlabeled(str(tmp_path / "u.csv"), "body") == ["hello", "world"]
    (tmp_path / "u.jsonl").write_text('{"text": "a b"}\n{"text": "c"}\n')
    assert read_unlabeled(str(tmp_path / "u.jsonl")) == ["a b", "c"]
    with pytest.raises(UserInputError, match="no column 'text' .*set data.text_column"):
        read_unlabeled(str(tmp_path / "u.csv"))
    with pytest.raises(UserInputError, match="not found"):
        read_unlabeled(str(tmp_path / "nope.txt"))
    (tmp_path / "u.xml").write_text("<a/>")
    with pytest.raises(UserInputError, match="suffix '.xml'; use .txt"):
        read_unlabeled(str(tmp_path / "u.xml"))
