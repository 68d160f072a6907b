"""``TextClassificationDataModule``: any text-classification source, tokenized once, padded per batch."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from datasets import DatasetDict
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from lit_compress.data.embedded import EMBEDDED_DATA, TextMode
from lit_compress.data.resumable import ResumableLoader, SplitLoaders
from lit_compress.data.sources import DataSource, load_source, validate_splits
from lit_compress.errors import UserInputError
from lit_compress.models.hub import EMBEDDED_MODEL, load_tokenizer


class TextClassificationDataModule(SplitLoaders, L.LightningDataModule):
    """Tokenized text classification with dynamic padding.

    Batches are dicts with ``input_ids``, ``attention_mask`` (``token_type_ids`` when the tokenizer makes
    them), ``labels`` (when labelled) and ``idx`` (the example's row in its split, used by the teacher-logit
    cache). Label names are available before ``setup`` through :attr:`label_names`, so the CLI can pass them
    to the model (``id2label``/``label2id``).

    Args:
        dataset: ``"embedded:bbc_news"``, a Hugging Face dataset name, or ``"local"`` (with ``data_files``).
        dataset_config: Hub configuration name, e.g. ``"plus"`` for ``clinc_oos``.
        data_files: Local CSV/JSON/Parquet files per split.
        text_column: Text column name.
        label_column: Label column name; ``None`` for unlabeled text (distillation on unlabeled data).
        text_mode: Embedded corpus input: ``"title"``, ``"title_lead"`` or ``"full"``.
        tokenizer: Tokenizer name or directory (default: the embedded MiniLM tokenizer).
        max_length: Truncation length in tokens.
        batch_size: Training batch size.
        eval_batch_size: Validation/test batch size (default: ``batch_size``).
        num_workers: DataLoader workers.
        split_fractions: Train/validation/test fractions for splits the source lacks.
        seed: Seed of the stratified split.
    """

    def __init__(
        self,
        dataset: str = EMBEDDED_DATA,
        dataset_config: str | None = None,
        data_files: dict[str, str] | None = None,
        text_column: str = "text",
        label_column: str | None = "label",
        text_mode: TextMode = "title_lead",
        tokenizer: str = EMBEDDED_MODEL,
        max_length: int = 128,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
        seed: int = 42,
    ) -> None:
        super().__init__()
        if max_length < 8:
            raise UserInputError(f"max_length={max_length} is too short for classification; use at least 8.")
        if batch_size < 1:
            raise UserInputError(f"batch_size must be >= 1, got {batch_size}.")
        self.save_hyperparameters()
        self.source = DataSource(
            name=dataset,
            config_name=dataset_config,
            data_files=data_files,
            text_column=text_column,
            label_column=label_column,
            text_mode=text_mode,
            split_fractions=tuple(split_fractions),  # type: ignore[arg-type]
            seed=seed,
        )
        self.tokenizer_name = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self._raw: DatasetDict | None = None
        self._label_names: list[str] | None = None
        self._tokenized: DatasetDict | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None

    # -- raw data -------------------------------------------------------------------------------------------
    def raw(self) -> DatasetDict:
        """The validated, untokenized splits (loaded once)."""
        if self._raw is None:
            raw, names = load_source(self.source)
            validate_splits(raw, names)
            self._raw, self._label_names = raw, names
        return self._raw

    @property
    def label_names(self) -> list[str] | None:
        """Ordered label names (``None`` for unlabeled data)."""
        self.raw()
        return self._label_names

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer (loaded once)."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_name)
        return self._tokenizer

    def texts(self, split: str) -> list[str]:
        """Raw texts of a split."""
        return list(self.raw()[split]["text"])

    def examples(self, split: str) -> list[str]:
        """The examples of a split as the export and benchmark take them: its raw texts."""
        return self.texts(split)

    def num_examples(self, split: str) -> int:
        """Number of examples in a split."""
        return len(self.raw()[split])

    def labels(self, split: str) -> list[int] | None:
        """Integer labels of a split (``None`` if unlabeled)."""
        ds = self.raw()[split]
        return list(ds["label"]) if "label" in ds.column_names else None

    # -- tokenization ---------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._tokenized is not None:
            return
        tok = self.tokenizer

        def encode(batch: dict[str, list]) -> dict[str, Any]:
            return tok(batch["text"], truncation=True, max_length=self.max_length)

        raw = self.raw()
        tokenized = raw.map(encode, batched=True, remove_columns=["text"], desc="tokenize")
        tokenized = DatasetDict(
            {s: ds.add_column("idx", list(range(len(ds)))) for s, ds in tokenized.items()}
        )
        if all("label" in ds.column_names for ds in tokenized.values()):
            tokenized = tokenized.rename_column("label", "labels")
        self._tokenized = tokenized.with_format("torch")

    def dataset(self, split: str) -> Any:
        """The tokenized dataset of a split (calls :meth:`setup` if needed)."""
        self.setup()
        assert self._tokenized is not None
        if split not in self._tokenized:
            raise KeyError(f"No split {split!r}; available: {sorted(self._tokenized)}.")
        return self._tokenized[split]

    def collate(self, features: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Pad a list of tokenized examples to the longest one in the batch."""
        return DataCollatorWithPadding(self.tokenizer, return_tensors="pt")(features)

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        loader = ResumableLoader if shuffle else DataLoader  # training order survives a mid-epoch restart
        return loader(
            self.dataset(split),
            batch_size=batch_size,
            num_workers=self.num_workers,
            collate_fn=self.collate,
            persistent_workers=self.num_workers > 0,
        )
