"""Vocabulary trimming: keep only the word embeddings a corpus uses, and a tokenizer that matches.

In MiniLM-L6 the word embeddings are 11.7M of 22.7M parameters, yet a domain corpus uses a small fraction of
the 30,522 WordPiece tokens. Trimming slices the embedding rows to the used tokens (plus every special token and
the few tokens the tokenizer needs to produce them again) in their original relative order and rebuilds the fast
tokenizer over the reduced vocabulary, as TextPruner does (Yang et al., "TextPruner: A Model Pruning Toolkit for
Pre-Trained Language Models", ACL 2022 demo), for the three tokenizer models of encoder families: WordPiece
(BERT, ELECTRA, DistilBERT), BPE (Sennrich et al., 2016; byte-level in RoBERTa, ModernBERT) and Unigram (Kudo,
2018; SentencePiece in XLM-R, ALBERT, DeBERTa-v2).

Guarantee: call *in-vocabulary* a text whose original tokenization uses only kept tokens other than the unknown
token. On such text the trimmed tokenizer produces the same pieces, mapped to the new ids, with the same special
tokens around them, so trimmed tokenizer + trimmed model give exactly the old logits. Per kind:

* WordPiece (greedy longest match first): every original match is kept and nothing longer exists in a subset.
* BPE: :func:`close_token_ids` keeps every merge producing a kept token, see the proof there.
* Unigram (Viterbi over piece log-probabilities): see the proof in :func:`close_token_ids`.

Other text is re-segmented into kept pieces (byte-level BPE keeps all 256 byte tokens, so it never needs the
unknown token); to get per-piece ``[UNK]`` instead, keep the old tokenizer and map its ids with
:func:`remap_input_ids`.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lit_compress.models.surgery import input_embeddings, slice_embeddings

_KINDS = ("WordPiece", "BPE", "Unigram")


@dataclass(frozen=True)
class VocabTrimReport:
    """What trimming kept. ``kept_ids[i]`` is the old id of new token ``i``."""

    kept_ids: tuple[int, ...]
    old_vocab_size: int
    hidden_size: int

    @property
    def new_vocab_size(self) -> int:
        return len(self.kept_ids)

    @property
    def old_embedding_params(self) -> int:
        return self.old_vocab_size * self.hidden_size

    @property
    def new_embedding_params(self) -> int:
        return self.new_vocab_size * self.hidden_size

    def summary(self) -> dict[str, int]:
        """Counts for logs and run manifests (no id list)."""
        return {
            "old_vocab_size": self.old_vocab_size,
            "new_vocab_size": self.new_vocab_size,
            "old_embedding_params": self.old_embedding_params,
            "new_embedding_params": self.new_embedding_params,
        }


def corpus_token_counts(tokenizer: Any, texts: Iterable[str], batch_size: int = 512) -> Counter[int]:
    """Count how often every token id occurs when ``tokenizer`` encodes ``texts`` (no special tokens, no truncation)."""
    counts: Counter[int] = Counter()
    stream = iter(texts)
    while batch := list(itertools.islice(stream, batch_size)):
        for ids in tokenizer(batch, add_special_tokens=False, truncation=False, padding=False)["input_ids"]:
            counts.update(ids)
    return counts


def kept_token_ids(
    tokenizer: Any, counts: Counter[int], min_frequency: int = 1, extra_tokens: Sequence[str] = ()
) -> torch.Tensor:
    """Sorted ids to keep: tokens seen at least ``min_frequency`` times, every special/added token, ``extra_tokens``.

    The set is closed under what the tokenizer needs to produce these tokens again (:func:`close_token_ids`).
    """
    if min_frequency < 1:
        raise ValueError(f"min_frequency must be >= 1; got {min_frequency}.")
    keep = {i for i, n in counts.items() if n >= min_frequency}
    keep |= set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    unknown = [t for t in extra_tokens if t not in tokenizer.get_vocab()]
    if unknown:
        raise ValueError(f"extra_tokens not in the tokenizer's vocabulary: {unknown[:5]}.")
    keep |= {tokenizer.convert_tokens_to_ids(t) for t in extra_tokens}
    return close_token_ids(tokenizer, torch.tensor(sorted(keep), dtype=torch.long))


def close_token_ids(tokenizer: Any, keep: torch.Tensor) -> torch.Tensor:
    """``keep`` plus the tokens the tokenizer needs to produce the kept ones as before (sorted ids).

    * WordPiece: nothing is added.
    * BPE: the merge closure (for every merge ``a b -> ab`` with ``ab`` kept, ``a`` and ``b`` are kept, repeatedly),
      and for byte-level BPE the 256 byte-alphabet tokens. The trimmed tokenizer keeps exactly the merges whose
      parts and result are kept, in their original ranks. *Proof* that an in-vocabulary word is segmented as before:
      every intermediate piece of its original merge sequence is merged on into a final piece, so it lies in the
      merge tree of a kept token and, by the closure, it and the merge producing it are kept. Induction on the
      steps: the states agree; the original applies the lowest-ranked applicable merge, which is kept, and every
      applicable kept merge is an original one of no lower rank, so the trimmed tokenizer applies the same merge
      (at the same, leftmost, position); when the original stops, no original merge, hence no kept one, applies.
    * Unigram: the unknown piece, the piece of minimum score (HF scores an unknown character ``min_score - 10``;
      keeping the minimum keeps that penalty) and, with byte fallback, the ``<0xXX>`` pieces. Scores are kept.
      *Proof* that Viterbi picks the same path ``S*``: every path of the trimmed lattice maps to an original path
      of at least its score (put back the single-character piece that a new unknown node replaced: its score is at
      least ``min_score > min_score - 10``). ``S*`` uses only kept pieces, so each prefix of it keeps its score,
      which was the best at its end position; every other candidate there scores no more than before, and new
      unknown candidates strictly less. Candidates at a position are visited in the same (start-position) order
      and replace the best only when strictly better, so ties break as before and the backtrace yields ``S*``.

    Raises:
        ValueError: If ``tokenizer`` is not a fast tokenizer.
    """
    state = _backend_state(tokenizer)
    model, ids = state["model"], {int(i) for i in keep}
    if model["type"] == "BPE":
        ids |= _bpe_closure(model, ids, _is_byte_level(state.get("pre_tokenizer")))
    elif model["type"] == "Unigram":
        pieces = model["vocab"]
        ids.add(min(range(len(pieces)), key=lambda i: pieces[i][1]))
        ids |= {model["unk_id"]} if model.get("unk_id") is not None else set()
        if model.get("byte_fallback"):
            ids |= {i for i, (p, _) in enumerate(pieces) if len(p) == 6 and p.startswith("<0x") and p.endswith(">")}
    return torch.tensor(sorted(ids), dtype=torch.long)


def _bpe_closure(model: dict[str, Any], ids: set[int], byte_level: bool) -> set[int]:
    vocab = model["vocab"]
    token_of = {i: t for t, i in vocab.items()}
    kept = {token_of[i] for i in ids if i in token_of}
    if byte_level:
        from tokenizers.pre_tokenizers import ByteLevel

        kept |= set(ByteLevel.alphabet()) & vocab.keys()
    producers: dict[str, list[tuple[str, str]]] = {}
    for a, b in _merge_pairs(model):
        producers.setdefault(_merge_result(model, a, b), []).append((a, b))
    stack = list(kept)
    while stack:
        for part in itertools.chain.from_iterable(producers.get(stack.pop(), ())):
            if part not in kept and part in vocab:
                kept.add(part)
                stack.append(part)
    return ids | {vocab[t] for t in kept}


def _merge_pairs(model: dict[str, Any]) -> list[tuple[str, str]]:
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]


def _merge_result(model: dict[str, Any], a: str, b: str) -> str:
    prefix = model.get("continuing_subword_prefix") or ""
    return a + (b[len(prefix):] if prefix and b.startswith(prefix) else b)


def _is_byte_level(pre: dict[str, Any] | None) -> bool:
    if not pre:
        return False
    return pre["type"] == "ByteLevel" or any(_is_byte_level(p) for p in pre.get("pretokenizers", ()))


def _backend_state(tokenizer: Any) -> dict[str, Any]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError("Vocabulary trimming needs a fast (tokenizers-backed) tokenizer; load it with use_fast=True.")
    return json.loads(backend.to_str())


def trim_tokenizer(tokenizer: Any, keep: torch.Tensor) -> Any:
    """A fast tokenizer over the kept tokens (new id = position in ``keep``), same normalizer, pre-tokenizer, decoder.

    BPE keeps the merges whose two parts and result are kept; Unigram keeps the kept pieces with their scores.
    Added/special tokens, post-processor templates (Bert/Roberta/Template/Sequence) and padding get the new ids.
    Pass ids closed by :func:`close_token_ids` (as :func:`kept_token_ids` returns them) for the guarantee above.

    Raises:
        ValueError: If ``tokenizer`` is not a fast WordPiece/BPE/Unigram tokenizer, a kept id is neither in its
            model vocabulary nor an added token listed after all kept model tokens, or a post-processor or padding
            token was dropped.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    state = _backend_state(tokenizer)
    model = state["model"]
    if model["type"] not in _KINDS:
        raise ValueError(f"Only WordPiece, BPE and Unigram tokenizers can be trimmed; got {model['type']}.")
    kept = [int(i) for i in keep]
    new_of_old = {o: n for n, o in enumerate(kept)}
    in_model = _model_ids(model)
    n_model = sum(i in in_model for i in kept)
    added = {a["id"] for a in state["added_tokens"]}
    if any(i not in in_model for i in kept[:n_model]) or any(i not in added for i in kept[n_model:]):
        raise ValueError("Kept ids must be model-vocabulary ids followed by added tokens outside it (sorted ids).")
    _trim_model(model, kept[:n_model])
    state["added_tokens"] = [dict(a, id=new_of_old[a["id"]]) for a in state["added_tokens"] if a["id"] in new_of_old]
    _remap_processor(state.get("post_processor"), new_of_old)
    if state.get("padding"):
        state["padding"]["pad_id"] = _new_id(new_of_old, state["padding"]["pad_id"], "padding")
    backend = Tokenizer.from_str(json.dumps(state))
    for a in state["added_tokens"]:
        if backend.token_to_id(a["content"]) != a["id"]:
            raise ValueError(f"Added token {a['content']!r} would not keep its new id {a['id']}; reorder keep.")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        model_input_names=list(tokenizer.model_input_names),
        model_max_length=tokenizer.model_max_length,
        padding_side=tokenizer.padding_side,
        truncation_side=tokenizer.truncation_side,
        clean_up_tokenization_spaces=getattr(tokenizer, "clean_up_tokenization_spaces", False),
        **tokenizer.special_tokens_map,
    )


def _model_ids(model: dict[str, Any]) -> set[int]:
    return set(range(len(model["vocab"]))) if model["type"] == "Unigram" else set(model["vocab"].values())


def _trim_model(model: dict[str, Any], kept: list[int]) -> None:
    """Restrict the tokenizer model (JSON state) to the model ids ``kept``, renumbered 0..n-1 in that order."""
    if model["type"] == "Unigram":
        unk = model.get("unk_id")
        if unk is not None and unk not in kept:
            raise ValueError(f"The Unigram unknown piece (id {unk}) must be kept.")
        model["vocab"] = [model["vocab"][i] for i in kept]
        model["unk_id"] = None if unk is None else kept.index(unk)
        return
    token_of = {i: t for t, i in model["vocab"].items()}
    model["vocab"] = {token_of[o]: n for n, o in enumerate(kept)}
    if model["type"] == "BPE":
        vocab, merges = model["vocab"], model["merges"]
        keep_merge = [a in vocab and b in vocab and _merge_result(model, a, b) in vocab for a, b in _merge_pairs(model)]
        model["merges"] = [m for m, k in zip(merges, keep_merge) if k]


def _new_id(new_of_old: dict[int, int], old: int, where: str) -> int:
    if old not in new_of_old:
        raise ValueError(f"Token id {old} used by the tokenizer's {where} was not kept; keep every special token.")
    return new_of_old[old]


def _remap_processor(proc: dict[str, Any] | None, new_of_old: dict[int, int]) -> None:
    if not proc:
        return
    if proc["type"] == "TemplateProcessing":
        for special in proc["special_tokens"].values():
            special["ids"] = [_new_id(new_of_old, i, "post-processor") for i in special["ids"]]
    elif proc["type"] in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            proc[key] = [proc[key][0], _new_id(new_of_old, proc[key][1], "post-processor")]
    elif proc["type"] == "Sequence":
        for sub in proc["processors"]:
            _remap_processor(sub, new_of_old)


def trim_vocabulary(
    model: nn.Module,
    tokenizer: Any,
    texts: Iterable[str],
    *,
    min_frequency: int = 1,
    extra_tokens: Sequence[str] = (),
) -> tuple[Any, VocabTrimReport]:
    """Trim ``model``'s vocabulary in place to the tokens ``texts`` use; return the matching tokenizer and a report.

    Args:
        model: A Hugging Face model with ``get_input_embeddings()``.
        tokenizer: Its fast WordPiece, BPE or Unigram tokenizer.
        texts: The training corpus (as the model will see it, e.g. title + lead).
        min_frequency: Drop tokens seen fewer times (their words are re-segmented / ``[UNK]``).
        extra_tokens: Tokens to keep regardless of the corpus.
    """
    emb = input_embeddings(model)
    old_vocab, hidden = emb.num_embeddings, emb.embedding_dim
    if len(tokenizer) > old_vocab:
        raise ValueError(
            f"Tokenizer has {len(tokenizer)} tokens but the model embeds only {old_vocab}; mismatched pair."
        )
    keep = kept_token_ids(tokenizer, corpus_token_counts(tokenizer, texts), min_frequency, extra_tokens)
    new_tokenizer = trim_tokenizer(tokenizer, keep)
    slice_embeddings(model, keep)
    return new_tokenizer, VocabTrimReport(tuple(int(i) for i in keep), old_vocab, hidden)


def remap_input_ids(input_ids: torch.Tensor, report: VocabTrimReport, unk_id: int) -> torch.Tensor:
    """Map ids of the *old* tokenizer to the trimmed vocabulary; dropped tokens become ``unk_id`` (a new id)."""
    table = torch.full((report.old_vocab_size,), unk_id, dtype=torch.long)
    table[torch.tensor(report.kept_ids)] = torch.arange(report.new_vocab_size)
    return table.to(input_ids.device)[input_ids]
