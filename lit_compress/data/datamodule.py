"""``TextClassificationDataModule``: any text-classification source, tokenized once, padded per batch."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import lightning as L
import torch
from datasets import Dataset, DatasetDict, concatenate_datasets
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from lit_compress.data.augment import (
    Augmentation,
    augment_texts,
    bbc_train_paragraphs,
    input_embeddings,
    read_unlabeled,
    text_words,
    word_neighbours,
)
from lit_compress.data.embedded import EMBEDDED_DATA, TextMode
from lit_compress.data.resumable import ResumableLoader, SplitLoaders
from lit_compress.data.sources import DataSource, load_source, validate_splits
from lit_compress.errors import UserInputError
from lit_compress.models.hub import EMBEDDED_MODEL, load_tokenizer

#: Label of the training rows that have none (augmented copies, unlabeled text): ignored by the CE term.
IGNORE_LABEL = -100


class TextClassificationDataModule(SplitLoaders, L.LightningDataModule):
    """Tokenized text classification with dynamic padding.

    Batches are dicts with ``input_ids``, ``attention_mask`` (``token_type_ids`` when the tokenizer makes
    them), ``labels`` (when labelled) and ``idx`` (the example's row in its split, used by the teacher-logit
    cache). Label names are available before ``setup`` through :attr:`label_names`, so the CLI can pass them
    to the model (``id2label``/``label2id``).

    More training text (see ``docs/augmentation.md``): with ``augment`` and/or ``unlabeled`` the *training*
    split is the original rows, then ``augment.copies`` augmented copies of them (copy-major), then the
    unlabeled texts; the added rows have label ``-100`` (only the teacher's logits label them, through the KD
    term) and their own ``idx``. ``texts("train")``, ``labels("train")`` and ``num_examples("train")`` describe
    exactly the rows the training loader reads (added rows included); :meth:`raw` keeps the source splits.
    Validation and test are never changed. Generation is seeded, so a resumed run reads the same rows.

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
        augment: Augmented copies of the training texts (:class:`~lit_compress.data.augment.Augmentation`;
            in YAML e.g. ``{methods: [replace, mask], copies: 2}``). ``"replace"`` reads the word embeddings
            of the model at ``tokenizer``.
        unlabeled: More unlabeled training text: a local ``.txt`` (one text per line) or
            ``.csv``/``.tsv``/``.json(l)``/``.parquet`` file with ``text_column``, or ``"paragraphs"``: the later
            paragraphs (after title and lead) of the embedded BBC News training articles.
        unlabeled_limit: Keep at most this many unlabeled texts (a sample seeded by ``seed``, in file order).
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
        augment: Augmentation | None = None,
        unlabeled: str | None = None,
        unlabeled_limit: int | None = None,
    ) -> None:
        super().__init__()
        if max_length < 8:
            raise UserInputError(f"max_length={max_length} is too short for classification; use at least 8.")
        if batch_size < 1:
            raise UserInputError(f"batch_size must be >= 1, got {batch_size}.")
        if unlabeled == "paragraphs" and dataset != EMBEDDED_DATA:
            raise UserInputError(f"unlabeled: paragraphs works only with dataset {EMBEDDED_DATA}; pass a text file.")
        if unlabeled not in (None, "paragraphs") and not Path(unlabeled).is_file():
            raise UserInputError(f"unlabeled file {unlabeled} not found; pass a .txt/.csv/.json/.parquet file.")
        if unlabeled_limit is not None and unlabeled_limit < 1:
            raise UserInputError(f"unlabeled_limit must be >= 1, got {unlabeled_limit}; drop it to keep every text.")
        self.save_hyperparameters(ignore=["augment"])
        self.augment = Augmentation(**augment) if isinstance(augment, dict) else augment
        # checkpoints hold plain containers only: a resume loads them with weights_only=True
        self.hparams["augment"] = None if self.augment is None else dataclasses.asdict(self.augment)
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
        self.unlabeled, self.unlabeled_limit = unlabeled, unlabeled_limit
        self._raw: DatasetDict | None = None
        self._splits: DatasetDict | None = None
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

    def splits(self) -> DatasetDict:
        """The untokenized splits the loaders read: :meth:`raw`, with the added training rows (built once)."""
        if self._splits is None:
            raw, extra = self.raw(), self._extra_train_texts()
            self._splits = DatasetDict(dict(raw) | {"train": with_unlabelled(raw["train"], extra)}) if extra else raw
        return self._splits

    def _extra_train_texts(self) -> list[str]:
        originals = list(self.raw()["train"]["text"])
        extra: list[str] = []
        if self.augment is not None:
            neighbours = None
            if "replace" in self.augment.methods:
                table = input_embeddings(self.tokenizer_name)
                neighbours = word_neighbours(table, self.tokenizer, self.augment.neighbours, text_words(originals))
            mask = getattr(self.tokenizer, "mask_token", None) or "[MASK]"
            extra += augment_texts(originals, self.augment, neighbours, mask_token=mask)
        if self.unlabeled is not None:
            if self.unlabeled == "paragraphs":
                texts = bbc_train_paragraphs(self.source.split_fractions, self.source.seed)
            else:
                texts = read_unlabeled(self.unlabeled, self.source.text_column)
            if self.unlabeled_limit is not None and len(texts) > self.unlabeled_limit:
                keep = sorted(random.Random(self.source.seed).sample(range(len(texts)), self.unlabeled_limit))
                texts = [texts[i] for i in keep]
            extra += texts
        return extra

    def texts(self, split: str) -> list[str]:
        """Texts of a split; for ``"train"`` every row the training loader reads (added rows last)."""
        return list(self.splits()[split]["text"])

    def examples(self, split: str) -> list[str]:
        """The examples of a split as the export and benchmark take them: its raw texts."""
        return self.texts(split)

    def num_examples(self, split: str) -> int:
        """Number of examples in a split (for ``"train"``: with the added rows, as the loader reads them)."""
        return len(self.splits()[split])

    def labels(self, split: str) -> list[int] | None:
        """Integer labels of a split (``None`` if unlabeled); the added training rows have ``-100``."""
        ds = self.splits()[split]
        return list(ds["label"]) if "label" in ds.column_names else None

    # -- tokenization ---------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._tokenized is not None:
            return
        tok = self.tokenizer

        def encode(batch: dict[str, list]) -> dict[str, Any]:
            return tok(batch["text"], truncation=True, max_length=self.max_length)

        raw = self.splits()
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


def with_unlabelled(train: Dataset, texts: list[str]) -> Dataset:
    """``train`` followed by ``texts`` (label ``IGNORE_LABEL`` when ``train`` is labelled)."""
    added: dict[str, list] = {"text": texts}
    if "label" in train.column_names:
        added["label"] = [IGNORE_LABEL] * len(texts)
    return concatenate_datasets([train, Dataset.from_dict(added, features=train.features)])
