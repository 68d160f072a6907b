"""Tiny fast tokenizers of the three kinds encoder families use, built offline for tests and examples.

``tiny_tokenizer("wordpiece" | "bpe" | "unigram")`` builds, with the ``tokenizers`` library and no download, a
WordPiece (BERT style), byte-level BPE (RoBERTa style) or Unigram/SentencePiece (XLM-R style) tokenizer from a small
built-in English corpus, with that family's special tokens, pre-tokenizer and post-processor, so that the code
that handles tokenizers (vocabulary trimming, export) can be tested on every kind with tiny random models.

Only the BPE trainer of ``tokenizers`` gives the same vocabulary in every process (the WordPiece trainer numbers
its ``##`` characters in hash order, which breaks ties between merges differently; the Unigram trainer's EM differs
from run to run). So all three kinds start from a character-level BPE (Sennrich et al., 2016): WordPiece takes
every BPE piece as a word start and as a ``##`` continuation; Unigram (Kudo, 2018) takes the pieces scored by their
add-one log relative frequency in the corpus's BPE encoding (one EM step from the BPE segmentation).
"""

from __future__ import annotations

import math
import string
from collections import Counter
from collections.abc import Sequence
from typing import Literal

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
from tokenizers.models import BPE, Unigram, WordPiece
from transformers import PreTrainedTokenizerFast

Kind = Literal["wordpiece", "bpe", "unigram"]

#: Tokenizer kind of a Hugging Face ``model_type``.
TOKENIZER_KIND: dict[str, str] = {
    "bert": "wordpiece",
    "electra": "wordpiece",
    "distilbert": "wordpiece",
    "roberta": "bpe",
    "modernbert": "bpe",
    "xlm-roberta": "unigram",
    "albert": "unigram",
    "deberta-v2": "unigram",
}

#: The built-in training corpus: varied English sentences, a few hundred words.
TINY_CORPUS: tuple[str, ...] = (
    "The cat sat on the mat and watched the birds in the garden.",
    "A small dog was playing with a red ball near the river.",
    "Markets rallied on Monday after the central bank held interest rates steady.",
    "The striker scored twice as the home team won the final match of the season.",
    "Scientists announced a new vaccine that could protect children from the disease.",
    "Heavy rain flooded several roads, and the city closed two bridges overnight.",
    "She opened the window, made some coffee, and started reading the morning paper.",
    "The company reported higher profits, but its shares fell in early trading.",
    "Researchers trained a smaller neural network that runs quickly on a laptop.",
    "Voters will choose a new president in the election next spring.",
    "The museum reopened its doors with an exhibition of paintings and sculptures.",
    "He missed the last train home, so he walked through the quiet streets.",
    "Engineers tested the bridge with heavy trucks before it opened to traffic.",
    "The orchestra played a symphony while the audience listened in silence.",
    "Farmers worry that the dry summer will reduce the harvest of wheat and corn.",
    "Our teacher explained how plants turn sunlight, water and air into sugar.",
    "The software update fixes a security problem and improves battery life.",
    "Two astronauts returned to Earth after six months on the space station.",
    "The restaurant serves fresh fish, warm bread and a simple green salad.",
    "Oil prices climbed as traders worried about supply in the coming winter.",
    "The players celebrated their victory with the fans after the game.",
    "A strong earthquake shook the coast, but no injuries were reported.",
    "Students protested outside the university, asking for lower fees.",
    "The novel tells the story of a family that moves to a distant island.",
    "Doctors recommend walking every day, eating vegetables and sleeping well.",
    "The minister said the government would invest in schools and hospitals.",
    "Our neighbours are building a wooden house at the end of the street.",
    "The tennis champion lost the first set but won the next three.",
    "Computers compress files by finding patterns and storing them only once.",
    "It was a cold and windy night, and the stars were hidden by clouds.",
    "The children laughed when the clown dropped his hat into the fountain.",
    "Investors bought bonds, gold and other safe assets during the crisis.",
    "The new phone has a faster chip, a brighter screen and a better camera.",
    "Firefighters worked through the night to stop the forest fire.",
    "The coach praised the young goalkeeper for his calm and clever play.",
    "Please send me the report by Friday, together with the final numbers.",
    "Birds migrate south in autumn and return north when spring arrives.",
    "The film won three awards, including best actress and best director.",
    "Prices in shops rose again this month, driven by food and energy costs.",
    "They hiked up the mountain and reached the top just before sunset.",
)

_SPECIALS = {
    "wordpiece": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    "bpe": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    "unigram": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
}
#: Characters every WordPiece / Unigram tiny tokenizer knows, so most English text encodes without unknowns.
_ALPHABET = list(string.ascii_letters + string.digits + string.punctuation)
_MIN_VOCAB = 300
_BERT_ROLES = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
               "mask_token": "[MASK]"}
_ROBERTA_ROLES = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
                  "cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>"}
_INPUT_NAMES = {
    "wordpiece": ["input_ids", "token_type_ids", "attention_mask"],
    "bpe": ["input_ids", "attention_mask"],
    "unigram": ["input_ids", "attention_mask"],
}


def tiny_tokenizer(kind: Kind, vocab_size: int = 600, texts: Sequence[str] | None = None) -> PreTrainedTokenizerFast:
    """Build a tiny fast tokenizer of ``kind`` offline (the same one in every process for a given corpus).

    Args:
        kind: ``"wordpiece"`` (BERT: lower-casing BertNormalizer, BertPreTokenizer, ``[CLS] $A [SEP]``),
            ``"bpe"`` (RoBERTa: byte-level, ``<s> $A </s>`` via RobertaProcessing, every one of the 256 byte tokens
            so any text encodes without ``<unk>``) or ``"unigram"`` (XLM-R: NFKC, Metaspace ``▁``,
            ``<s> $A </s> </s> $B </s>`` template).
        vocab_size: Target vocabulary size, special tokens included (at most; a small corpus may give fewer).
        texts: Training corpus; the built-in :data:`TINY_CORPUS` by default.

    Raises:
        ValueError: If ``kind`` is unknown or ``vocab_size`` too small for it.
    """
    if kind not in _SPECIALS:
        raise ValueError(f"Unknown tokenizer kind {kind!r}; expected one of {sorted(_SPECIALS)}.")
    if vocab_size < _MIN_VOCAB:
        raise ValueError(f"vocab_size={vocab_size} is too small; use at least {_MIN_VOCAB} (256 bytes + specials).")
    backend = {"wordpiece": _wordpiece, "bpe": _byte_level_bpe, "unigram": _unigram}[kind](vocab_size, texts)
    roles = _BERT_ROLES if kind == "wordpiece" else _ROBERTA_ROLES
    return PreTrainedTokenizerFast(tokenizer_object=backend, model_input_names=_INPUT_NAMES[kind],
                                   model_max_length=512, **roles)


def _bpe_pieces(
    normalizer: normalizers.Normalizer, pre_tokenizer: pre_tokenizers.PreTokenizer, size: int,
    texts: Sequence[str] | None,
) -> tuple[list[str], Counter[str]]:
    """Pieces (in id order) of a character-level BPE trained on the corpus, and how often its encoding uses each."""

    corpus = list(TINY_CORPUS if texts is None else texts)
    bpe = Tokenizer(BPE())
    bpe.normalizer, bpe.pre_tokenizer = normalizer, pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=size, initial_alphabet=_ALPHABET, show_progress=False)
    bpe.train_from_iterator(corpus, trainer)
    pieces = sorted(bpe.get_vocab(), key=bpe.token_to_id)
    return pieces, Counter(t for encoding in bpe.encode_batch(corpus) for t in encoding.tokens)


def _wordpiece(vocab_size: int, texts: Sequence[str] | None) -> Tokenizer:
    """BERT-style WordPiece: every BPE piece, as a word start and as a ``##`` continuation."""

    specials = _SPECIALS["wordpiece"]
    pieces, _ = _bpe_pieces(normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer(),
                            (vocab_size - len(specials)) // 2, texts)
    vocab = [*specials, *pieces, *(f"##{p}" for p in pieces)]
    tok = Tokenizer(WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.add_special_tokens(specials)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab.index("[CLS]")), ("[SEP]", vocab.index("[SEP]"))],
    )
    return tok


def _byte_level_bpe(vocab_size: int, texts: Sequence[str] | None) -> Tokenizer:
    """RoBERTa-style byte-level BPE (the BPE trainer is reproducible across processes), ``<mask>`` last."""

    tok = Tokenizer(BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, special_tokens=_SPECIALS["bpe"][:-1],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(TINY_CORPUS if texts is None else texts), trainer=trainer)
    tok.add_special_tokens(["<mask>"])  # last, as in RoBERTa (here an added token outside the BPE vocabulary)
    tok.post_processor = processors.RobertaProcessing(
        ("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")), add_prefix_space=False
    )
    return tok


def _unigram(vocab_size: int, texts: Sequence[str] | None) -> Tokenizer:
    """XLM-R-style Unigram: BPE pieces scored by add-one log relative frequency in their corpus encoding; ``<mask>``
    last."""

    specials = _SPECIALS["unigram"]
    metaspace = {"replacement": "▁", "prepend_scheme": "always"}
    pieces, counts = _bpe_pieces(normalizers.NFKC(), pre_tokenizers.Metaspace(**metaspace),
                                 vocab_size - len(specials), texts)
    total = sum(counts.values()) + len(pieces)
    vocab = [(t, 0.0) for t in specials[:-1]] + [(p, math.log((counts[p] + 1) / total)) for p in pieces]
    vocab.append(("<mask>", 0.0))  # last, as in XLM-R
    tok = Tokenizer(Unigram(vocab, unk_id=specials.index("<unk>"), byte_fallback=False))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(**metaspace)
    tok.decoder = decoders.Metaspace(**metaspace)
    tok.add_special_tokens(specials)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", specials.index("<s>")), ("</s>", specials.index("</s>"))],
    )
    return tok
