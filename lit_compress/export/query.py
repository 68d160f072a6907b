"""One text to a batch of one, through the Rust tokenizer directly: what a single-query predictor pays least for.

A Hugging Face fast tokenizer's ``__call__`` wraps its Rust ``tokenizers.Tokenizer`` in Python (argument
checks, truncation/padding state set on every call, a batch of one, ``BatchEncoding`` conversion). For one query
of the main job's final artifact (36 tokens, onnxruntime 1.32, 1 thread, AMX CPU; ``benchmarks/ort_levers.py``)
the whole predictor call took 0.77 ms through the wrapper against 0.68 ms through the Rust tokenizer (``encode``
alone: 77 vs 56 us; the rest is the model's run slowing down after the heavier call).

:class:`QueryEncoder` keeps a private copy of the Rust tokenizer with the same truncation (``max_length``,
the tokenizer's ``truncation_side``) and no padding, and is only used when it reproduces the wrapper exactly:
:meth:`QueryEncoder.build` compares both on probe texts (short, accented, over-long) and returns ``None`` on any
difference or for a tokenizer without a Rust backend, so callers fall back to the wrapper.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: Texts both encoders must agree on before the direct path is used (one is longer than any ``max_length``).
PROBES = ("lit compress exports this model.", "Café déjà-vu: naïve résumé, 3.14 % — ok?!", "", "x " * 600)
_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


class QueryEncoder:
    """``tokenizer(text, truncation=True, max_length=max_length)`` for one text, as ``(1, length)`` int64 arrays.

    Args:
        backend: A ``tokenizers.Tokenizer`` configured with the truncation to apply and no padding.
        names: Input names to return (``input_ids``, ``attention_mask``, ``token_type_ids``): the ones the
            wrapper returns, so a graph that takes ``token_type_ids`` gets them as before.
    """

    def __init__(self, backend: Any, names: Sequence[str]) -> None:
        self.backend, self.names = backend, tuple(names)

    @classmethod
    def build(cls, tokenizer: Any, max_length: int, names: Sequence[str]) -> QueryEncoder | None:
        """A direct encoder equal to ``tokenizer``'s single-text call on :data:`PROBES` (every input it returns,
        ``names`` among them), else ``None``."""
        rust = getattr(tokenizer, "_tokenizer", None)
        if rust is None or not hasattr(rust, "to_str") or any(n not in _FIELDS for n in names):
            return None
        try:
            returned = tokenizer(PROBES[0], truncation=True, max_length=max_length, return_tensors="np")
        except Exception:  # noqa: BLE001 - not a Hugging Face tokenizer's call
            return None
        wanted, names = set(names), [n for n in _FIELDS if n in returned]
        if not wanted <= set(names):
            return None
        from tokenizers import Tokenizer

        try:
            backend = Tokenizer.from_str(rust.to_str())
            backend.no_padding()
            backend.enable_truncation(max_length, direction=getattr(tokenizer, "truncation_side", "right"))
        except Exception:  # noqa: BLE001 - a backend that cannot be copied keeps the wrapper
            return None
        encoder = cls(backend, names)
        for text in PROBES:
            expected = tokenizer(text, truncation=True, max_length=max_length, return_tensors="np")
            got = encoder(text, "np")
            if set(got) != {n for n in _FIELDS if n in expected} or any(
                    not np.array_equal(got[n], expected[n]) for n in names):  # fmt: skip
                return None
        return encoder

    def __call__(self, text: str, return_tensors: str = "np") -> Mapping[str, Any]:
        """``{name: (1, length) int64}`` as numpy arrays (``"np"``) or torch tensors (``"pt"``)."""
        encoding = self.backend.encode(text)
        arrays = {n: np.asarray([getattr(encoding, _FIELDS[n])], dtype=np.int64) for n in self.names}
        if return_tensors == "pt":
            import torch

            return {n: torch.from_numpy(a) for n, a in arrays.items()}
        return arrays
