from __future__ import annotations

import json
import string
from collections import Counter

import pytest
import torch
from tokenizers.pre_tokenizers import ByteLevel
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertTokenizer,
    RobertaConfig,
    RobertaForSequenceClassification,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
)

from lit_compress.models.io import load_model_dir, save_model_dir
from lit_compress.models.tiny import tiny_bert, tiny_bert_config
from lit_compress.models.tiny_tokenizers import TINY_CORPUS, tiny_tokenizer
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


def test_rejects_other_models_and_slow_tokenizers() -> None:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    word_level = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]")))
    with pytest.raises(ValueError, match="Only WordPiece, BPE and Unigram tokenizers can be trimmed; got WordLevel"):
        trim_tokenizer(word_level, torch.tensor([0]))
    with pytest.raises(ValueError, match="fast"):
        trim_tokenizer(object(), torch.tensor([0]))


# ---- every tokenizer kind: WordPiece (BERT), byte-level BPE (RoBERTa), Unigram (XLM-R) ----

KINDS = ["wordpiece", "bpe", "unigram"]
FAMILIES = {
    "wordpiece": (BertConfig, BertForSequenceClassification),
    "bpe": (RobertaConfig, RobertaForSequenceClassification),
    "unigram": (XLMRobertaConfig, XLMRobertaForSequenceClassification),
}
TRAIN = list(TINY_CORPUS[:24])
CORPUS_WORDS = sorted({w.strip(".,:!") for t in TINY_CORPUS for w in t.split()})
CANDIDATES = list(TINY_CORPUS) + CORPUS_WORDS + [f"{a} {b}." for a, b in zip(CORPUS_WORDS, reversed(CORPUS_WORDS))]
OOV = "Zebras juggle quixotic xylophones near the river."


def _family_model(kind: str, tok, seed: int = 0):
    config_cls, model_cls = FAMILIES[kind]
    torch.manual_seed(seed)
    config = config_cls(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=130, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2},
    )  # fmt: skip
    return model_cls(config).eval()


def _in_vocabulary(tok, kept_ids) -> list[str]:
    kept = set(kept_ids) - {tok.unk_token_id}
    return [t for t in CANDIDATES if set(tok(t, add_special_tokens=False)["input_ids"]) <= kept]


@pytest.fixture(scope="module")
def tokenizers_by_kind():
    return {kind: tiny_tokenizer(kind) for kind in KINDS}


@pytest.mark.parametrize("min_frequency", [1, 2])
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_reproduces_pieces_and_logits_on_in_vocabulary_text(tokenizers_by_kind, kind, min_frequency):
    tok = tokenizers_by_kind[kind]
    model, old_model = _family_model(kind, tok), _family_model(kind, tok)
    new, report = trim_vocabulary(model, tok, TRAIN, min_frequency=min_frequency)
    assert report.new_vocab_size == len(new) < len(tok) and model.config.vocab_size == len(new)
    texts = _in_vocabulary(tok, report.kept_ids)
    assert len(texts) >= 40 and any(t.split()[0] not in " ".join(TRAIN) for t in texts)
    assert [new.tokenize(t) for t in texts] == [tok.tokenize(t) for t in texts]
    old_logits, old_enc = _logits(old_model, tok, texts)
    new_logits, new_enc = _logits(model, new, texts)
    torch.testing.assert_close(new_logits, old_logits, rtol=0, atol=1e-6)
    assert torch.equal(new_enc["input_ids"], remap_input_ids(old_enc["input_ids"], report, new.unk_token_id))
    assert new.batch_decode(new_enc["input_ids"]) == tok.batch_decode(old_enc["input_ids"])


def test_min_frequency_two_keeps_fewer_tokens_for_every_kind(tokenizers_by_kind) -> None:
    for kind, tok in tokenizers_by_kind.items():
        sizes = [trim_vocabulary(_family_model(kind, tok), tok, TRAIN, min_frequency=f)[1].new_vocab_size
                 for f in (1, 2)]
        assert sizes[1] < sizes[0], kind


@pytest.mark.parametrize("kind", KINDS)
def test_out_of_vocabulary_text_still_tokenizes_into_kept_pieces(tokenizers_by_kind, kind) -> None:
    tok = tokenizers_by_kind[kind]
    new, report = trim_vocabulary(_family_model(kind, tok), tok, TRAIN, min_frequency=2)
    ids = new(OOV, add_special_tokens=False)["input_ids"]
    assert ids and max(ids) < report.new_vocab_size
    if kind == "bpe":  # all 256 byte tokens are kept: lossless, never unknown
        assert new.unk_token_id not in ids and new.decode(ids) == OOV
        assert len(set(report.kept_ids) & set(range(len(tok)))) >= 256 + 5


@pytest.mark.parametrize("kind", KINDS)
def test_special_tokens_templates_and_padding_get_the_new_ids(kind) -> None:
    tok = tiny_tokenizer(kind)
    keep = kept_token_ids(tok, corpus_token_counts(tok, TRAIN), min_frequency=2)
    tok.backend_tokenizer.enable_padding(pad_id=tok.pad_token_id, pad_token=tok.pad_token)  # a call would reset it
    new = trim_tokenizer(tok, keep)
    kept = keep.tolist()
    assert (new.mask_token_id < tok.mask_token_id) == (kind != "wordpiece")  # RoBERTa/XLM-R put <mask> last
    assert new.backend_tokenizer.padding["pad_id"] == new.pad_token_id
    for name in ("cls_token_id", "sep_token_id", "pad_token_id", "unk_token_id", "mask_token_id"):
        assert getattr(new, name) == kept.index(getattr(tok, name)), name
    first, second = _in_vocabulary(tok, kept)[:2]
    spelled = [f"{tok.cls_token}{space}{t}{space}{tok.sep_token}" for space in (" ", "") for t in CANDIDATES]
    written = next(t for t in spelled if set(tok(t, add_special_tokens=False)["input_ids"]) <= set(kept))
    ids = new(written, add_special_tokens=False)["input_ids"]
    assert ids[0] == new.cls_token_id and ids[-1] == new.sep_token_id and new.decode(ids) == tok.decode(
        tok(written, add_special_tokens=False)["input_ids"])
    pair, old_pair = new(first, second)["input_ids"], tok(first, second)["input_ids"]
    assert pair == [kept.index(i) for i in old_pair] and pair[0] == new.cls_token_id


def test_bert_processing_inside_a_sequence_is_remapped(tokenizers_by_kind) -> None:
    from tokenizers import processors

    tok = tiny_tokenizer("wordpiece")
    tok.backend_tokenizer.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.BertProcessing(("[SEP]", tok.sep_token_id), ("[CLS]", tok.cls_token_id)),
    ])
    keep = torch.tensor([i for i in range(len(tok)) if i != 0])  # drop [PAD]: [CLS]/[SEP] move down by one
    new = trim_tokenizer(tok, keep)
    assert new("the cat")["input_ids"] == [i - 1 for i in tok("the cat")["input_ids"]]
    with pytest.raises(ValueError, match="post-processor was not kept"):
        trim_tokenizer(tok, torch.tensor([i for i in range(len(tok)) if i != tok.cls_token_id]))


@pytest.mark.parametrize("kind", KINDS)
def test_trimmed_tokenizer_round_trips_through_save_pretrained(tokenizers_by_kind, kind, tmp_path) -> None:
    tok = tokenizers_by_kind[kind]
    new, _ = trim_vocabulary(_family_model(kind, tok), tok, TRAIN, min_frequency=2)
    new.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    texts = [*TRAIN[:4], OOV]
    assert reloaded(texts)["input_ids"] == new(texts)["input_ids"]
    assert list(reloaded.model_input_names) == list(tok.model_input_names)


def test_byte_level_merges_are_consistent_after_trimming(tokenizers_by_kind) -> None:
    tok = tokenizers_by_kind["bpe"]
    new, _ = trim_vocabulary(_family_model("bpe", tok), tok, TRAIN, min_frequency=2)
    model = json.loads(new.backend_tokenizer.to_str())["model"]
    old_merges = [tuple(m) for m in json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]]
    merges = [tuple(m) for m in model["merges"]]
    assert all(a in model["vocab"] and b in model["vocab"] and a + b in model["vocab"] for a, b in merges)
    assert merges == [m for m in old_merges if m in set(merges)]  # original ranks, in order
    producible = {a + b for a, b in merges} | set(ByteLevel.alphabet())
    assert set(model["vocab"]) - producible <= set(new.all_special_tokens)  # every kept piece can be built


def _toy_bpe():
    from tokenizers import Tokenizer
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "a": 1, "b": 2, "c": 3, "d": 4, "ab": 5, "abc": 6, "cd": 7}
    backend = Tokenizer(BPE(vocab, [("a", "b"), ("ab", "c"), ("c", "d")], unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")


def test_bpe_merge_whose_part_was_dropped_is_not_kept_and_closure_keeps_the_parts() -> None:
    tok = _toy_bpe()
    assert tok.tokenize("abc") == ["abc"]
    unclosed = trim_tokenizer(tok, torch.tensor([0, 1, 2, 3, 6]))  # "abc" without its part "ab"
    assert json.loads(unclosed.backend_tokenizer.to_str())["model"]["merges"] == []
    assert unclosed.tokenize("abc") == ["a", "b", "c"]  # why the closure is needed
    keep = kept_token_ids(tok, Counter({6: 1}))  # corpus used only "abc"
    assert tok.convert_ids_to_tokens(keep.tolist()) == ["<unk>", "a", "b", "c", "ab", "abc"]
    closed = trim_tokenizer(tok, keep)
    assert closed.tokenize("abc") == ["abc"] and closed.tokenize("abcd") == ["abc", "<unk>"]
    assert [tuple(m) for m in json.loads(closed.backend_tokenizer.to_str())["model"]["merges"]] == [
        ("a", "b"), ("ab", "c")]  # ("c", "d") went with "cd"


def _pieces(tok, text: str) -> list[str]:
    return tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])


def _toy_unigram():
    from tokenizers import Tokenizer
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast

    pieces = [("<unk>", 0.0), ("ab", -45.0), ("cd", -45.0), ("bcd", -1.0), ("zzz", -100.0), ("x", -2.0)]
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(Unigram(pieces, unk_id=0)), unk_token="<unk>")


def test_unigram_keeps_the_minimum_score_piece_so_the_unknown_penalty_and_viterbi_path_stay() -> None:
    tok = _toy_unigram()
    assert _pieces(tok, "abcd") == ["ab", "cd"]  # -90 beats <unk>(a) + bcd = (-100 - 10) - 1
    used = Counter({1: 1, 2: 1, 3: 1})  # ab, cd, bcd
    unclosed = trim_tokenizer(tok, torch.tensor([0, 1, 2, 3]))
    assert _pieces(unclosed, "abcd") == ["<unk>", "bcd"]  # min score -45: <unk> costs -55, path -56 > -90
    keep = kept_token_ids(tok, used)
    assert tok.convert_ids_to_tokens(keep.tolist()) == ["<unk>", "ab", "cd", "bcd", "zzz"]
    new = trim_tokenizer(tok, keep)
    assert _pieces(new, "abcd") == ["ab", "cd"] and new.unk_token_id == 0
    assert _pieces(new, "abx") == ["ab", "<unk>"]  # dropped "x" becomes unknown
