import csv
from pathlib import Path

import pytest

from lit_compress.data import TextClassificationDataModule, load_bbc_news, stratified_split
from lit_compress.data.embedded import article_text


def test_stratified_split_is_seeded_and_keeps_proportions() -> None:
    labels = [0] * 50 + [1] * 30 + [2] * 20
    a = stratified_split(labels, (0.7, 0.1, 0.2), seed=3)
    assert a == stratified_split(labels, (0.7, 0.1, 0.2), seed=3)
    assert a != stratified_split(labels, (0.7, 0.1, 0.2), seed=4)
    assert sorted(i for part in a for i in part) == list(range(100))
    assert [sum(labels[i] == 0 for i in part) for part in a] == [35, 5, 10]
    with pytest.raises(ValueError, match="sum to 1"):
        stratified_split(labels, (0.5, 0.2))


def test_article_text_modes() -> None:
    raw = "Title here\n\nLead paragraph.\n\nBody one.\n"
    assert article_text(raw, "title") == "Title here"
    assert article_text(raw, "title_lead") == "Title here Lead paragraph."
    assert article_text(raw, "full") == "Title here Lead paragraph. Body one."


def test_embedded_bbc_news_order_and_splits() -> None:
    corpus = load_bbc_news()
    assert corpus.label_names == ["business", "entertainment", "politics", "sports", "tech"]
    assert len(corpus.texts) == 2225
    assert [corpus.labels.count(i) for i in range(5)] == [510, 386, 417, 511, 401]
    dm = TextClassificationDataModule(batch_size=4)
    sizes = {k: len(v) for k, v in dm.raw().items()}
    assert sizes == {"train": 1558, "validation": 223, "test": 444}
    assert dm.raw()["test"]["text"] == TextClassificationDataModule(batch_size=4).raw()["test"]["text"]


def test_local_csv_files_tokenize_and_pad(csv_files, tiny_model_dir) -> None:
    dm = TextClassificationDataModule(dataset="local", data_files=csv_files, tokenizer=str(tiny_model_dir),
                                      batch_size=8, max_length=16)
    assert dm.label_names == ["money", "sport", "tech"]
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) >= {"input_ids", "attention_mask", "labels", "idx"}
    lengths = batch["attention_mask"].sum(1)
    assert batch["input_ids"].shape[1] == int(lengths.max())  # padded to the longest in the batch
    assert batch["labels"].max() < 3


def test_missing_splits_are_derived(csv_files, tiny_model_dir) -> None:
    dm = TextClassificationDataModule(dataset="local", data_files={"train": csv_files["train"]},
                                      tokenizer=str(tiny_model_dir), split_fractions=(0.6, 0.2, 0.2))
    assert {k: len(v) for k, v in dm.raw().items()} == {"train": 36, "validation": 12, "test": 12}


def test_unlabeled_text_is_accepted(tmp_path, tiny_model_dir) -> None:
    path = tmp_path / "u.csv"
    path.write_text("text\nhello goal\nnew chip today\n")
    dm = TextClassificationDataModule(dataset="local", data_files={"train": str(path), "validation": str(path),
                                      "test": str(path)}, label_column=None, tokenizer=str(tiny_model_dir))
    assert dm.label_names is None
    assert "labels" not in next(iter(dm.train_dataloader()))


def _write(path: Path, rows: list[list[str]], header: list[str]) -> str:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


@pytest.mark.parametrize(
    ("header", "rows", "match"),
    [
        (["sentence", "label"], [["goal", "sport"]], "has no text column 'text' \\(columns: sentence, label\\)"),
        (["text", "label"], [["goal", "sport"], ["   ", "sport"]], "empty text"),
        (["text", "label"], [["goal", "7"]], "outside"),
    ],
)
def test_bad_data_gets_a_clear_error(tmp_path, header, rows, match) -> None:
    f = _write(tmp_path / "bad.csv", rows, header)
    files = {"train": f, "validation": f, "test": f}
    dm = TextClassificationDataModule(dataset="local", data_files=files)
    if match == "outside":
        dm.source.label_names = ["money", "sport"]
    with pytest.raises(ValueError, match=match):
        dm.raw()


def test_empty_split_is_rejected(tmp_path) -> None:
    good = _write(tmp_path / "g.csv", [["goal", "a"], ["chip", "b"]], ["text", "label"])
    empty = _write(tmp_path / "e.csv", [], ["text", "label"])
    dm = TextClassificationDataModule(dataset="local", data_files={"train": good, "validation": good, "test": empty})
    with pytest.raises(ValueError, match="empty"):
        dm.raw()


def test_missing_file_and_bad_args() -> None:
    with pytest.raises(FileNotFoundError, match="data file /nope.csv \\(data_files.train\\) not found"):
        TextClassificationDataModule(dataset="local", data_files={"train": "/nope.csv"}).raw()
    with pytest.raises(ValueError, match="data_files"):
        TextClassificationDataModule(dataset="local")
    with pytest.raises(ValueError, match="max_length"):
        TextClassificationDataModule(max_length=2)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_check_source_reads_only_the_header_and_names_the_column(tmp_path, suffix) -> None:
    import pandas as pd

    from lit_compress.data.sources import DataSource, check_source
    from lit_compress.errors import UserInputError

    path = tmp_path / f"data{suffix}"
    frame = pd.DataFrame({"text": ["goal match", "new chip"], "topic": ["sport", "tech"]})
    if suffix == ".parquet":
        frame.to_parquet(path)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
    check_source(DataSource(name="local", data_files={"train": str(path)}, label_column="topic"))
    expected = r"has no label column 'label' \(columns: text, topic\); set data.label_column"
    with pytest.raises(UserInputError, match=expected):
        check_source(DataSource(name="local", data_files={"train": str(path)}))


def test_check_source_refuses_unreadable_files(tmp_path) -> None:
    from lit_compress.data.sources import DataSource, check_source
    from lit_compress.errors import UserInputError

    binary = tmp_path / "bin.csv"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(UserInputError, match=r"cannot read .*bin.csv \(data_files.train\) as CSV: .*; check the file"):
        check_source(DataSource(name="local", data_files={"train": str(binary)}))
    with pytest.raises(UserInputError, match="is a directory"):
        check_source(DataSource(name="local", data_files={"train": str(tmp_path)}))
