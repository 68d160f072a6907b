"""Text augmentation for distillation: word replacement, random masking, span deletion (pure functions).

Small students gain from more teacher-labelled text. TinyBERT (Jiao et al. 2020, "TinyBERT: Distilling BERT for
Natural Language Understanding", §3.1 data augmentation) swaps words for their nearest neighbours in a word
embedding space; random masking (as in BERT's MLM, Devlin et al. 2019) and span deletion (EDA's random deletion,
Wei & Zou 2019) are the other common edits. The augmented rows carry no label: the teacher's logits label them
through the KD term of :class:`~lit_compress.distill.losses.DistillationLoss`.

Everything here works on word lists with an explicit ``random.Random``; :func:`augment_texts` seeds one
generator per (copy, row), so a row's augmentation depends only on the seed, its position, its text and the
neighbours: a resumed run gets the same rows. :func:`read_unlabeled` and :func:`bbc_train_paragraphs` supply
unlabeled text for the same purpose.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from lit_compress.errors import UserInputError

Method = Literal["replace", "mask", "delete"]
METHODS: tuple[Method, ...] = ("replace", "mask", "delete")
#: Leading punctuation, the word, trailing punctuation (``"(market),"`` -> ``"(", "market", "),"``).
_WORD = re.compile(r"^(\W*)(.*?)(\W*)$", re.S)


@dataclass(frozen=True)
class Augmentation:
    """How the training split is augmented (``data.init_args.augment`` in a recipe).

    Each augmented copy of a text applies one of ``methods``, drawn uniformly with that row's generator.

    Attributes:
        methods: Edits to draw from: ``"replace"`` (each word, with ``probability``, becomes one of its
            ``neighbours`` nearest words by cosine of the model's input embeddings), ``"mask"`` (each word, with
            ``probability``, becomes the mask token), ``"delete"`` (one random span of 1..``max_span`` words
            is removed; at least one word stays).
        copies: Augmented copies per training example.
        probability: Per-word probability of ``replace`` / ``mask``, in ``[0, 1]``.
        max_span: Longest span ``delete`` removes.
        neighbours: How many nearest words ``replace`` chooses from.
        seed: Seed of the augmentation (independent of the split seed).
    """

    methods: tuple[Method, ...] = ("replace", "mask")
    copies: int = 1
    probability: float = 0.15
    max_span: int = 3
    neighbours: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        methods = (self.methods,) if isinstance(self.methods, str) else tuple(self.methods)
        object.__setattr__(self, "methods", methods)
        unknown = [m for m in methods if m not in METHODS]
        if not methods or unknown:
            raise UserInputError(f"augment.methods {list(methods)} must be a non-empty subset of {list(METHODS)}.")
        if self.copies < 1:
            raise UserInputError(f"augment.copies must be >= 1, got {self.copies}; drop `augment` for none.")
        if not 0.0 <= self.probability <= 1.0:
            raise UserInputError(f"augment.probability must be in [0, 1], got {self.probability}.")
        if self.max_span < 1:
            raise UserInputError(f"augment.max_span must be >= 1, got {self.max_span}.")
        if self.neighbours < 1:
            raise UserInputError(f"augment.neighbours must be >= 1, got {self.neighbours}.")


def mask_words(words: Sequence[str], rng: random.Random, probability: float, mask_token: str = "[MASK]") -> list[str]:
    """Replace each word by ``mask_token`` independently with ``probability`` (one ``rng.random()`` per word)."""
    return [mask_token if rng.random() < probability else w for w in words]


def delete_span(words: Sequence[str], rng: random.Random, max_span: int) -> list[str]:
    """Remove one contiguous span of ``L ~ U{1..min(max_span, n−1)}`` words at a uniform start.

    A text of one word is returned unchanged (at least one word always stays).
    """
    n = len(words)
    if n <= 1:
        return list(words)
    length = rng.randint(1, min(max_span, n - 1))
    start = rng.randint(0, n - length)
    return list(words[:start]) + list(words[start + length :])


def replace_words(
    words: Sequence[str], rng: random.Random, probability: float, neighbours: Mapping[str, Sequence[str]]
) -> list[str]:
    """Swap each word, with ``probability``, for a uniform choice among its nearest words.

    Words are looked up lower-cased without surrounding punctuation; the punctuation is kept and a capitalised
    word gets a capitalised replacement. Words without neighbours are kept (one ``rng.random()`` per word
    either way, so the draws do not depend on the vocabulary).
    """
    out = []
    for word in words:
        draw = rng.random()
        lead, core, trail = _WORD.match(word).groups()  # type: ignore[union-attr]
        options = neighbours.get(core.lower())
        if draw < probability and options:
            new = rng.choice(list(options))
            out.append(lead + (new.capitalize() if core[:1].isupper() else new) + trail)
        else:
            out.append(word)
    return out


def whole_words(tokenizer: Any) -> dict[str, int]:
    """The tokenizer's whole-word tokens (alphabetic, no ``##`` pieces, no special tokens) and their ids.

    Byte-level BPE / SentencePiece word starts (``Ġword``, ``▁word``) count as the word without the marker.
    """
    special = set(getattr(tokenizer, "all_special_tokens", []))
    out: dict[str, int] = {}
    for token, index in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]):
        if token in special:
            continue
        word = token[1:] if token[:1] in ("Ġ", "▁") else token
        if word.isalpha() and word not in out:
            out[word] = index
    return out


def word_neighbours(
    embeddings: Tensor, tokenizer: Any, k: int, words: set[str] | None = None, chunk: int = 2048
) -> dict[str, list[str]]:
    """The ``k`` nearest whole words of each whole word, by cosine of input word-embedding rows.

    ``cos(e_i, e_j) = e_i·e_j / (‖e_i‖ ‖e_j‖)`` over the rows of :func:`whole_words`. TinyBERT ranks GloVe
    neighbours (or BERT-MLM predictions); offline we use the model's own input embedding table, which needs no
    extra download and matches the model's vocabulary.

    Args:
        embeddings: The ``(vocab, dim)`` input embedding matrix.
        tokenizer: The matching tokenizer (its ``get_vocab()`` indexes ``embeddings``).
        k: Neighbours per word (the word itself excluded).
        words: Only these words get neighbours (default: every whole word); candidates are always all of them.
        chunk: Rows per matrix product (memory bound).
    """
    vocab = {w: i for w, i in whole_words(tokenizer).items() if i < embeddings.shape[0]}
    names = list(vocab)
    if len(names) < 2:
        return {}
    table = torch.nn.functional.normalize(embeddings[list(vocab.values())].float(), dim=-1)
    queries = [i for i, w in enumerate(names) if words is None or w in words]
    k = min(k, len(names) - 1)
    out: dict[str, list[str]] = {}
    for start in range(0, len(queries), chunk):
        rows = torch.tensor(queries[start : start + chunk])
        sims = table[rows] @ table.T
        sims[torch.arange(len(rows)), rows] = -float("inf")  # not its own neighbour
        top = sims.topk(k, dim=-1).indices.tolist()
        out.update({names[q]: [names[j] for j in nearest] for q, nearest in zip(rows.tolist(), top, strict=True)})
    return out


def augment_texts(
    texts: Sequence[str],
    aug: Augmentation,
    neighbours: Mapping[str, Sequence[str]] | None = None,
    mask_token: str = "[MASK]",
) -> list[str]:
    """``aug.copies`` augmented versions of every text, copy-major (copy 0 of each text, then copy 1, ...).

    Row ``i`` of copy ``c`` uses ``random.Random(f"{aug.seed}:{c}:{i}")``: it draws one method of
    ``aug.methods``, then applies it to the whitespace-split words.

    Raises:
        UserInputError: ``"replace"`` is asked for but ``neighbours`` is ``None``.
    """
    if "replace" in aug.methods and neighbours is None:
        raise UserInputError("augment.methods has 'replace' but no word neighbours were given; drop 'replace'.")
    out = []
    for copy in range(aug.copies):
        for i, text in enumerate(texts):
            rng = random.Random(f"{aug.seed}:{copy}:{i}")
            method = rng.choice(aug.methods)
            words = text.split()
            if method == "mask":
                words = mask_words(words, rng, aug.probability, mask_token)
            elif method == "delete":
                words = delete_span(words, rng, aug.max_span)
            else:
                words = replace_words(words, rng, aug.probability, neighbours or {})
            out.append(" ".join(words))
    return out


def text_words(texts: Sequence[str]) -> set[str]:
    """The lower-cased words of ``texts`` without surrounding punctuation (what :func:`replace_words` looks up)."""
    return {_WORD.match(w).group(2).lower() for t in texts for w in t.split()}  # type: ignore[union-attr]


def input_embeddings(model: str) -> Tensor:
    """The input word-embedding matrix of a model directory, hub name, ``.ckpt`` or the embedded default.

    Read from ``model.safetensors`` (the tensor whose name ends in ``word_embeddings.weight`` /
    ``embed_tokens.weight``) when the directory has one, else through ``transformers.AutoModel``.

    Raises:
        UserInputError: No embedding table can be loaded (one line: drop ``"replace"``).
    """
    from pathlib import Path

    from lit_compress.models.hub import resolve_model_path

    fix = "pass a model directory as data.tokenizer, or drop 'replace' from augment.methods"
    try:
        path = Path(resolve_model_path(model))
        weights = path / "model.safetensors"
        if weights.is_file():
            from safetensors import safe_open

            with safe_open(str(weights), framework="pt") as f:
                names = [n for n in f.keys() if n.endswith(("word_embeddings.weight", "embed_tokens.weight"))]
                if names:
                    return f.get_tensor(sorted(names, key=len)[0])
        from transformers import AutoModel

        return AutoModel.from_pretrained(str(path)).get_input_embeddings().weight.detach()
    except Exception as err:  # resolve/transformers raise many types; the user needs one line
        reason = " ".join(str(err).split())[:160] or type(err).__name__
        message = f"cannot read word embeddings of {model!r} for augment 'replace' ({reason}); {fix}"
        raise UserInputError(message) from err


# -- unlabeled text -------------------------------------------------------------------------------------------
def read_unlabeled(path: str, text_column: str = "text") -> list[str]:
    """Non-empty texts of a local file: ``.txt`` (one per line) or ``.csv``/``.tsv``/``.json``/``.jsonl``/``.parquet``.

    Raises:
        UserInputError: The file is missing, of another type, or lacks ``text_column``.
    """
    from pathlib import Path

    import pandas as pd

    file = Path(path)
    if not file.is_file():
        raise UserInputError(f"unlabeled file {path} not found; pass a .txt/.csv/.json/.parquet file, or paragraphs.")
    suffix = file.suffix.lower()
    if suffix == ".txt":
        texts = file.read_text(encoding="utf-8").splitlines()
    else:
        readers = {".csv": pd.read_csv, ".tsv": lambda p: pd.read_csv(p, sep="\t"), ".parquet": pd.read_parquet,
                   ".json": _read_json, ".jsonl": _read_json}
        if suffix not in readers:
            raise UserInputError(f"unlabeled file {path} has suffix {suffix!r}; use .txt, .csv, .json(l) or .parquet.")
        frame = readers[suffix](str(file))
        if text_column not in frame.columns:
            raise UserInputError(f"unlabeled file {path} has no column {text_column!r} (columns: "
                                 f"{', '.join(map(str, frame.columns))}); set data.text_column.")
        texts = ["" if v is None or v != v else str(v) for v in frame[text_column]]
    return [t.strip() for t in texts if t.strip()]


def _read_json(path: str) -> Any:
    import pandas as pd

    try:
        return pd.read_json(path, lines=True)
    except ValueError:  # one JSON document, not JSON lines
        return pd.read_json(path)


def bbc_train_paragraphs(split_fractions: Sequence[float], seed: int) -> list[str]:
    """The later paragraphs (after title and lead) of the embedded BBC News *training* articles, in order.

    The articles are read in :func:`~lit_compress.data.embedded.load_bbc_news`'s order and split with the same
    :func:`~lit_compress.data.splits.stratified_split` (labels, fractions, seed) as the datamodule, so no
    paragraph of a validation or test article is returned. One text per paragraph.
    """
    from lit_compress.data.embedded import bbc_news_dir
    from lit_compress.data.splits import stratified_split

    root = bbc_news_dir()
    files, labels = [], []
    for label, name in enumerate(sorted(p.name for p in root.iterdir() if p.is_dir())):
        for file in sorted((root / name).glob("*.txt")):
            files.append(file)
            labels.append(label)
    train = stratified_split(labels, split_fractions, seed)[0]
    out: list[str] = []
    for i in train:
        raw = files[i].read_text(encoding="latin-1").replace("\r\n", "\n")
        out.extend([p.strip() for p in raw.split("\n") if p.strip()][2:])
    return out
