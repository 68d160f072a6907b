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


# -- more training text: augmentation and unlabeled text --------------------------------------------------------
def test_augmented_training_rows_follow_the_originals_without_labels(csv_files, tiny_model_dir) -> None:
    from lit_compress.data import IGNORE_LABEL, Augmentation, augment_texts
    from lit_compress.distill.losses import IGNORE_INDEX

    aug = Augmentation(methods=("replace", "mask", "delete"), copies=2, probability=0.5)
    kwargs = {"dataset": "local", "data_files": csv_files, "tokenizer": str(tiny_model_dir), "batch_size": 8}
    dm = TextClassificationDataModule(**kwargs, augment=aug)
    originals = list(dm.raw()["train"]["text"])
    assert len(originals) == 60 and dm.num_examples("train") == 180 == len(dm.texts("train"))
    assert dm.texts("train")[:60] == originals and dm.texts("train")[60:] != originals * 2
    assert dm.labels("train")[:60] == list(dm.raw()["train"]["label"])
    assert dm.labels("train")[60:] == [IGNORE_LABEL] * 120 and IGNORE_LABEL == IGNORE_INDEX
    masked = augment_texts(originals, Augmentation(methods=("mask",), copies=2, probability=0.5), mask_token="[MASK]")
    assert any(a == b for a, b in zip(dm.texts("train")[60:], masked, strict=True))  # rows that drew 'mask'
    train = dm.dataset("train")[:]
    assert train["idx"].tolist() == list(range(180)) and (train["labels"][60:] == -100).all()
    assert len(dm.train_dataloader().dataset) == dm.num_examples("train")  # the stage's step count matches
    assert dm.num_examples("validation") == 15 and -100 not in dm.labels("validation") + dm.labels("test")
    again = TextClassificationDataModule(**kwargs, augment={"methods": ["replace", "mask", "delete"], "copies": 2,
                                                            "probability": 0.5})
    assert again.texts("train") == dm.texts("train")  # seeded: a resumed run reads the same rows


def test_replace_introduces_vocabulary_words(csv_files, tiny_model_dir) -> None:
    aug = {"methods": ["replace"], "probability": 1.0, "neighbours": 2}
    dm = TextClassificationDataModule(dataset="local", data_files=csv_files, tokenizer=str(tiny_model_dir),
                                      augment=aug)
    vocab = set(dm.tokenizer.get_vocab())
    for before, after in zip(dm.texts("train")[:60], dm.texts("train")[60:], strict=True):
        old, new = before.split(), after.split()
        assert len(old) == len(new) and all(w in vocab for w in new)
        assert sum(a != b for a, b in zip(old, new, strict=True)) == len(old)  # p = 1: every word swapped


def test_replace_without_embeddings_names_the_fix(csv_files, tmp_path) -> None:
    from tests.conftest import make_tokenizer

    make_tokenizer(tmp_path / "tok_only")  # a tokenizer directory without weights or config
    (tmp_path / "tok_only" / "config.json").write_text("{}")
    dm = TextClassificationDataModule(dataset="local", data_files=csv_files, tokenizer=str(tmp_path / "tok_only"),
                                      augment={"methods": ["replace"]})
    with pytest.raises(ValueError, match="drop 'replace' from augment.methods"):
        dm.texts("train")


def test_unlabeled_file_rows_are_appended_to_train(csv_files, tiny_model_dir, tmp_path) -> None:
    path = tmp_path / "more.txt"
    path.write_text("goal today\n\nnew chip\nbank profit\n")
    dm = TextClassificationDataModule(dataset="local", data_files=csv_files, tokenizer=str(tiny_model_dir),
                                      unlabeled=str(path), augment={"methods": ["mask"]})
    assert dm.num_examples("train") == 60 + 60 + 3
    assert dm.texts("train")[-3:] == ["goal today", "new chip", "bank profit"]
    assert dm.labels("train")[60:] == [-100] * 63
    limited = TextClassificationDataModule(dataset="local", data_files=csv_files, tokenizer=str(tiny_model_dir),
                                           unlabeled=str(path), unlabeled_limit=2)
    assert limited.num_examples("train") == 62 and set(limited.texts("train")[60:]) < set(dm.texts("train")[-3:])
    with pytest.raises(ValueError, match="unlabeled file .*nope.txt not found"):  # at construction, before any work
        TextClassificationDataModule(dataset="local", data_files=csv_files, unlabeled=str(tmp_path / "nope.txt"))


def test_paragraphs_are_those_of_the_training_articles_only() -> None:
    from lit_compress.data.augment import bbc_train_paragraphs

    dm = TextClassificationDataModule(unlabeled="paragraphs")
    corpus = load_bbc_news("full")
    train, _, test = stratified_split(corpus.labels, (0.7, 0.1, 0.2), 42)
    paragraphs = bbc_train_paragraphs((0.7, 0.1, 0.2), 42)
    assert dm.num_examples("train") == 1558 + len(paragraphs) and len(paragraphs) > 5000  # 5,988 (long paragraphs)
    assert dm.num_examples("validation") == 223 and dm.labels("train")[1558:] == [-100] * len(paragraphs)
    leads = load_bbc_news("title_lead").texts
    rests = [corpus.texts[i][len(leads[i]) :].strip() for i in range(len(leads))]  # full = title + lead + rest
    assert " ".join(paragraphs) == " ".join(rests[i] for i in train if rests[i])  # exactly the train articles'
    assert dm.texts("train")[:1558] == [leads[i] for i in train]  # the same split as the labelled rows
    assert " ".join(rests[i] for i in test if rests[i]) not in " ".join(paragraphs)
    with pytest.raises(ValueError, match="paragraphs works only with dataset embedded:bbc_news"):
        TextClassificationDataModule(dataset="local", data_files={"train": "x.csv"}, unlabeled="paragraphs")


def test_a_yaml_recipe_with_augment_parses_and_distils_two_steps(csv_files, tiny_model_dir, tmp_path) -> None:
    import math

    import torch
    import yaml

    from lit_compress.pipeline.recipes import instantiate, parse_recipe

    recipe = yaml.safe_load(f"""
seed_everything: 1
model:
  class_path: lit_compress.distill.DistillationModule
  init_args: {{teacher: {tiny_model_dir}, student_layers: [0], alpha: 0.5}}
data:
  class_path: lit_compress.data.TextClassificationDataModule
  init_args:
    dataset: local
    data_files: {{train: {csv_files['train']}, validation: {csv_files['validation']}, test: {csv_files['test']}}}
    tokenizer: {tiny_model_dir}
    batch_size: 32
    augment: {{methods: [replace, mask], copies: 2}}
trainer: {{accelerator: cpu, max_steps: 2, logger: false, enable_checkpointing: false, enable_progress_bar: false,
          enable_model_summary: false, num_sanity_val_steps: 0, limit_val_batches: 0, default_root_dir: {tmp_path}}}
""")
    parsed = parse_recipe(recipe, "distill")
    assert parsed.data.init_args.augment.methods == ("replace", "mask") and parsed.data.init_args.augment.copies == 2
    cli = instantiate(recipe)
    assert cli.datamodule.augment.copies == 2 and cli.datamodule.num_examples("train") == 180
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 2 and math.isfinite(float(cli.trainer.callback_metrics["train/loss"]))
    cli.trainer.save_checkpoint(tmp_path / "last.ckpt")
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)  # how a resumed fit reads it
    assert saved["datamodule_hyper_parameters"]["augment"]["methods"] == ("replace", "mask")
    with pytest.raises(ValueError, match="distill.data.init_args.augment"):
        parse_recipe(recipe | {"data": recipe["data"] | {"init_args": recipe["data"]["init_args"]
                                                          | {"augment": {"methods": ["swap"]}}}}, "distill")
