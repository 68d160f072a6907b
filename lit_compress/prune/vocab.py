"""Vocabulary trimming: keep only the word embeddings a corpus uses, and a tokenizer that matches.

In MiniLM-L6 the word embeddings are 11.7M of 22.7M parameters, yet a domain corpus uses a small fraction of
the 30,522 WordPiece tokens. Trimming slices the embedding rows to the used tokens (plus every special token)
in their original relative order and builds a fast WordPiece tokenizer over the reduced vocabulary.

Guarantee: for text whose original tokenization uses only kept tokens, the new tokenizer produces the same
pieces (greedy longest-match WordPiece: the original longest match is kept and nothing longer exists in a
subset vocabulary), so new tokenizer + trimmed model gives exactly the old logits. Words whose pieces were
dropped are re-segmented into kept pieces by the new tokenizer (or become ``[UNK]`` if impossible); to get
per-piece ``[UNK]`` instead, keep the old tokenizer and map its ids with :func:`remap_input_ids`.
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

from lit_compress.prune.architecture import word_embeddings

_CONFIG_TOKEN_IDS = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id")


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
    """Sorted ids to keep: tokens seen at least ``min_frequency`` times, every special/added token, ``extra_tokens``."""
    if min_frequency < 1:
        raise ValueError(f"min_frequency must be >= 1; got {min_frequency}.")
    keep = {i for i, n in counts.items() if n >= min_frequency}
    keep |= set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    unknown = [t for t in extra_tokens if t not in tokenizer.get_vocab()]
    if unknown:
        raise ValueError(f"extra_tokens not in the tokenizer's vocabulary: {unknown[:5]}.")
    keep |= {tokenizer.convert_tokens_to_ids(t) for t in extra_tokens}
    return torch.tensor(sorted(keep), dtype=torch.long)


def slice_embeddings(model: nn.Module, keep: torch.Tensor) -> None:
    """Keep only rows ``keep`` (sorted old ids) of the input and any output embeddings; update the config.

    Tied parameters stay tied (every module attribute holding the old tensor gets the new one). Token-id fields of
    the config (``pad_token_id`` ...) and the embedding ``padding_idx`` are remapped to new ids.
    """
    keep = keep.to(torch.long).cpu()
    new_of_old = {int(o): n for n, o in enumerate(keep)}
    emb = word_embeddings(model)
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    vocab_params = [emb.weight]
    if out is not None:
        vocab_params += [p for p in (out.weight, getattr(out, "bias", None)) if p is not None]
    for old in {id(p): p for p in vocab_params}.values():
        new = nn.Parameter(old.detach()[keep.to(old.device)], requires_grad=old.requires_grad)
        _replace_parameter(model, old, new)
    emb.num_embeddings = len(keep)
    if out is not None:
        out.out_features = len(keep)
    if emb.padding_idx is not None:
        emb.padding_idx = new_of_old.get(int(emb.padding_idx))
    model.config.vocab_size = len(keep)
    for name in _CONFIG_TOKEN_IDS:
        old_id = getattr(model.config, name, None)
        if isinstance(old_id, int):
            setattr(model.config, name, new_of_old.get(old_id))


def _replace_parameter(model: nn.Module, old: nn.Parameter, new: nn.Parameter) -> None:
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is old:
                setattr(module, name, new)


def trim_tokenizer(tokenizer: Any, keep: torch.Tensor) -> Any:
    """A fast tokenizer over the kept WordPiece tokens, same order, same normalizer/pre-tokenizer/templates.

    Raises:
        ValueError: If ``tokenizer`` is not a fast WordPiece tokenizer, or a kept id is not in its vocabulary.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError("Vocabulary trimming needs a fast (tokenizers-backed) tokenizer; load it with use_fast=True.")
    state = json.loads(backend.to_str())
    if state["model"]["type"] != "WordPiece":
        kind = state["model"]["type"]
        raise ValueError(f"Only WordPiece tokenizers can be trimmed; got {kind} (BPE merges would break).")
    token_of = {i: t for t, i in state["model"]["vocab"].items()}
    missing = [int(i) for i in keep if int(i) not in token_of]
    if missing:
        raise ValueError(f"Kept ids {missing[:5]} are added tokens outside the WordPiece vocabulary; not supported.")
    new_of_old = {int(o): n for n, o in enumerate(keep)}
    state["model"]["vocab"] = {token_of[int(o)]: n for n, o in enumerate(keep)}
    for added in state["added_tokens"]:
        added["id"] = new_of_old[added["id"]]
    _remap_processor(state.get("post_processor"), new_of_old)
    if state.get("padding"):
        state["padding"]["pad_id"] = new_of_old[state["padding"]["pad_id"]]
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(state)),
        model_input_names=list(tokenizer.model_input_names),
        model_max_length=tokenizer.model_max_length,
        padding_side=tokenizer.padding_side,
        truncation_side=tokenizer.truncation_side,
        **tokenizer.special_tokens_map,
    )


def _remap_processor(proc: dict[str, Any] | None, new_of_old: dict[int, int]) -> None:
    if not proc:
        return
    if proc["type"] == "TemplateProcessing":
        for special in proc["special_tokens"].values():
            special["ids"] = [new_of_old[i] for i in special["ids"]]
    elif proc["type"] in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            proc[key] = [proc[key][0], new_of_old[proc[key][1]]]
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
        tokenizer: Its fast WordPiece tokenizer.
        texts: The training corpus (as the model will see it, e.g. title + lead).
        min_frequency: Drop tokens seen fewer times (they become re-segmented / ``[UNK]``).
        extra_tokens: Tokens to keep regardless of the corpus.
    """
    old_vocab = word_embeddings(model).num_embeddings
    if len(tokenizer) > old_vocab:
        raise ValueError(
            f"Tokenizer has {len(tokenizer)} tokens but the model embeds only {old_vocab}; mismatched pair."
        )
    keep = kept_token_ids(tokenizer, corpus_token_counts(tokenizer, texts), min_frequency, extra_tokens)
    new_tokenizer = trim_tokenizer(tokenizer, keep)
    hidden = word_embeddings(model).embedding_dim
    slice_embeddings(model, keep)
    return new_tokenizer, VocabTrimReport(tuple(int(i) for i in keep), old_vocab, hidden)


def remap_input_ids(input_ids: torch.Tensor, report: VocabTrimReport, unk_id: int) -> torch.Tensor:
    """Map ids of the *old* tokenizer to the trimmed vocabulary; dropped tokens become ``unk_id`` (a new id)."""
    table = torch.full((report.old_vocab_size,), unk_id, dtype=torch.long)
    table[torch.tensor(report.kept_ids)] = torch.arange(report.new_vocab_size)
    return table.to(input_ids.device)[input_ids]
