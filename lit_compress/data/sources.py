"""Where text-classification data comes from: the embedded default, a Hugging Face dataset, local files.

Every source is normalised to a ``datasets.DatasetDict`` with splits ``train``/``validation``/``test``,
a ``text`` column and (when labelled) an integer ``label`` column, plus the ordered label names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from lit_compress.data.embedded import EMBEDDED_DATA, ROTTEN_TOMATOES, TextMode, load_bbc_news, load_rotten_tomatoes
from lit_compress.data.splits import stratified_split
from lit_compress.errors import InputNotFoundError, UserInputError

SPLITS = ("train", "validation", "test")
_LOCAL_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


@dataclass
class DataSource:
    """Which data to load and how to read it.

    Attributes:
        name: ``"embedded:bbc_news"`` (offline default), ``"embedded:rotten_tomatoes"`` (offline, sentiment), a Hugging Face dataset name (e.g. ``"clinc_oos"``),
            or ``"local"`` to read ``data_files``.
        config_name: Dataset configuration on the hub (e.g. ``"plus"`` for ``clinc_oos``).
        data_files: Local files per split, e.g. ``{"train": "train.csv", "test": "test.csv"}``
            (CSV/TSV, JSON/JSONL or Parquet, chosen by extension).
        text_column: Column holding the input text.
        label_column: Column holding labels (int or str); ``None`` for unlabeled text.
        text_mode: For the embedded corpus: ``"title"``, ``"title_lead"`` or ``"full"``.
        split_fractions: Train/validation/test fractions used for splits the source lacks.
        seed: Seed of the stratified split.
    """

    name: str = EMBEDDED_DATA
    config_name: str | None = None
    data_files: dict[str, str] | None = None
    text_column: str = "text"
    label_column: str | None = "label"
    text_mode: TextMode = "title_lead"
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    seed: int = 42
    label_names: list[str] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.name == "local" and not self.data_files:
            raise UserInputError("DataSource(name='local') needs data_files, e.g. {'train': 'train.csv'}.")


def load_source(src: DataSource) -> tuple[DatasetDict, list[str] | None]:
    """Load ``src`` into a normalised ``DatasetDict`` and its label names (``None`` when unlabeled)."""
    if src.name in (EMBEDDED_DATA, ROTTEN_TOMATOES):
        corpus = load_bbc_news(src.text_mode) if src.name == EMBEDDED_DATA else load_rotten_tomatoes()
        full = Dataset.from_dict({"text": corpus.texts, "label": corpus.labels})
        return _split(full, src), corpus.label_names
    raw = _load_local(src) if src.name == "local" else _load_hub(src)
    return _normalise(raw, src)


def _load_hub(src: DataSource) -> DatasetDict:
    from datasets import load_dataset

    try:
        loaded = load_dataset(src.name, src.config_name)
    except (OSError, ConnectionError) as err:  # DatasetNotFoundError is a FileNotFoundError
        raise UserInputError(
            f"cannot load dataset {src.name!r}: {err}; pass a dataset that is cached or reachable, "
            "dataset: local with data_files, or the embedded default embedded:bbc_news"
        ) from err
    if not isinstance(loaded, DatasetDict):
        raise UserInputError(f"Dataset {src.name!r} did not load as a DatasetDict of splits.")
    return loaded


def check_source(src: DataSource) -> None:
    """Cheap checks of local data before any work: the files exist, read as their format, have the columns.

    Each file is read only as far as its header (CSV/TSV: the first rows; Parquet: the schema), so a wrong
    path, a binary file or a missing ``label_column`` is reported in one sentence that names the file and the
    option to set. Hub datasets and the embedded corpus are not checked here (loading them is the check).

    Raises:
        UserInputError: The data cannot be used as configured (``InputNotFoundError`` for a missing file).
    """
    if src.name != "local":
        return
    assert src.data_files is not None
    unknown = set(src.data_files) - set(SPLITS)
    if unknown:
        raise UserInputError(f"data_files has unknown splits {sorted(unknown)}; use {list(SPLITS)}.")
    fmt = _local_format(src.data_files)
    for split, path in src.data_files.items():
        _require_file_columns(path, _file_columns(path, fmt, split), src)


def _local_format(data_files: dict[str, str]) -> str:
    for split, path in data_files.items():
        if not Path(path).is_file():
            what = "is a directory, not a file" if Path(path).is_dir() else "not found"
            where = "" if Path(path).is_absolute() else f" (relative to {Path.cwd()})"
            raise InputNotFoundError(f"data file {path} (data_files.{split}) {what}; check the path{where}")
    suffixes = {Path(p).suffix.lower() for p in data_files.values()}
    formats = {_LOCAL_FORMATS.get(s) for s in suffixes}
    if None in formats or len(formats) != 1:
        raise UserInputError(
            f"Local data files must all be one of {sorted(_LOCAL_FORMATS)}; got suffixes {sorted(suffixes)}."
        )
    return "tsv" if suffixes == {".tsv"} else formats.pop()  # type: ignore[return-value]


def _file_columns(path: str, fmt: str, split: str) -> list[str]:
    """The column names of one local data file, reading as little of it as its format allows."""
    import pandas as pd

    label = {"csv": "CSV", "tsv": "TSV", "json": "JSON", "parquet": "Parquet"}[fmt]
    try:
        if fmt in ("csv", "tsv"):
            frame = pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", nrows=32, encoding="utf-8")
        elif fmt == "parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        else:
            try:
                frame = pd.read_json(path, lines=True, nrows=32)
            except ValueError:  # not JSON lines: one JSON document
                frame = pd.read_json(path)
    except Exception as err:  # pandas/pyarrow raise many types (UnicodeDecodeError, ParserError, ArrowInvalid, ...)
        reason = " ".join(str(err).split()) or type(err).__name__
        raise UserInputError(
            f"cannot read {path} (data_files.{split}) as {label}: {reason}; check the file / format"
        ) from err
    return [str(c) for c in frame.columns]


def _require_file_columns(path: str, columns: list[str], src: DataSource) -> None:
    for option, column in (("text_column", src.text_column), ("label_column", src.label_column)):
        if column is not None and column not in columns:
            extra = " (or label_column: null for unlabeled text)" if option == "label_column" else ""
            raise UserInputError(
                f"{path} has no {option.split('_')[0]} column {column!r} (columns: {', '.join(columns) or 'none'}); "
                f"set data.{option} to one of them{extra}"
            )


def _load_local(src: DataSource) -> DatasetDict:
    from datasets import load_dataset
    from datasets.exceptions import DatasetGenerationError

    check_source(src)
    assert src.data_files is not None
    fmt = _local_format(src.data_files)
    kwargs = {"delimiter": "\t"} if fmt == "tsv" else {}
    try:
        return load_dataset("csv" if fmt == "tsv" else fmt, data_files=dict(src.data_files), **kwargs)
    except (DatasetGenerationError, ValueError, OSError) as err:  # e.g. no rows, or bad bytes past the header
        cause = err.__cause__ or err  # datasets wraps the reader's error in DatasetGenerationError
        reason = " ".join(str(cause).split()) or type(cause).__name__
        raise UserInputError(
            f"cannot read data_files {dict(src.data_files)}: {reason}; check the files / format (empty or damaged?)"
        ) from err


def _normalise(raw: DatasetDict, src: DataSource) -> tuple[DatasetDict, list[str] | None]:
    aliases = {"valid": "validation", "val": "validation", "dev": "validation"}
    raw = DatasetDict({aliases.get(k, k): v for k, v in raw.items()})
    if "train" not in raw:
        raise UserInputError(f"The data has no 'train' split (found {sorted(raw)}); provide one.")
    names = src.label_names or _label_names(raw["train"], src)
    features = Features({"text": Value("string")} | ({"label": Value("int64")} if src.label_column and names else {}))
    out = {}
    for split, ds in raw.items():
        if split not in SPLITS:
            continue
        _require_columns(ds, src, split)
        out[split] = ds.map(
            lambda b: _encode(b, src, names), batched=True, remove_columns=ds.column_names, features=features
        )
    normalised = DatasetDict(out)
    if "validation" not in normalised or "test" not in normalised:
        normalised = _fill_missing_splits(normalised, src)
    return normalised, names


def _label_names(train: Dataset, src: DataSource) -> list[str] | None:
    if src.label_column is None or src.label_column not in train.column_names:
        return None
    feature = train.features[src.label_column]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    values = sorted(set(train[src.label_column]))
    return [str(v) for v in values]


def _require_columns(ds: Dataset, src: DataSource, split: str) -> None:
    wanted = [src.text_column] + ([src.label_column] if src.label_column else [])
    missing = [c for c in wanted if c not in ds.column_names]
    if missing:
        raise UserInputError(
            f"Split {split!r} lacks column(s) {missing}; it has {ds.column_names}. "
            f"Set data.text_column / data.label_column (label_column: null for unlabeled text)."
        )


def _encode(batch: dict[str, list], src: DataSource, names: list[str] | None) -> dict[str, list]:
    out: dict[str, list] = {"text": ["" if t is None else str(t) for t in batch[src.text_column]]}
    if src.label_column and names is not None:
        index = {n: i for i, n in enumerate(names)}
        out["label"] = [v if isinstance(v, int) else index.get(str(v), -1) for v in batch[src.label_column]]
    return out


def _fill_missing_splits(dd: DatasetDict, src: DataSource) -> DatasetDict:
    train = dd["train"]
    labels = train["label"] if "label" in train.column_names else [0] * len(train)
    have_val, have_test = "validation" in dd, "test" in dd
    fr = src.split_fractions
    if not have_val and not have_test:
        parts = stratified_split(labels, fr, src.seed)
        return DatasetDict({s: train.select(p) for s, p in zip(SPLITS, parts, strict=True)})
    missing = "test" if have_val else "validation"
    share = fr[2] if missing == "test" else fr[1]
    keep, held = stratified_split(labels, (1.0 - share, share), src.seed)
    out = dict(dd)
    out["train"], out[missing] = train.select(keep), train.select(held)
    return DatasetDict(out)


def _split(full: Dataset, src: DataSource) -> DatasetDict:
    parts = stratified_split(full["label"], src.split_fractions, src.seed)
    return DatasetDict({s: full.select(p) for s, p in zip(SPLITS, parts, strict=True)})


def validate_splits(dd: DatasetDict, label_names: list[str] | None) -> None:
    """Raise a clear ``UserInputError`` (a ``ValueError``) for empty splits, empty texts or labels out of range."""
    for split, ds in dd.items():
        if len(ds) == 0:
            raise UserInputError(f"Split {split!r} is empty; check the data files or split_fractions.")
        empty = [i for i, t in enumerate(ds["text"]) if not t.strip()]
        if empty:
            raise UserInputError(f"Split {split!r} has {len(empty)} empty text(s), first at row {empty[0]}; drop them.")
        if label_names is not None and "label" in ds.column_names:
            bad = [(i, v) for i, v in enumerate(ds["label"]) if not 0 <= v < len(label_names)]
            if bad:
                raise UserInputError(
                    f"Split {split!r} row {bad[0][0]} has label {bad[0][1]!r} outside 0..{len(label_names) - 1} "
                    f"(or a label name missing from label_names={label_names}); fix the data or label_names."
                )
