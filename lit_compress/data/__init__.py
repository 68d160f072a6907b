"""Data: the embedded BBC News default, Hugging Face datasets, local files."""

from lit_compress.data.augment import Augmentation, augment_texts, word_neighbours
from lit_compress.data.datamodule import IGNORE_LABEL, TextClassificationDataModule
from lit_compress.data.embedded import EMBEDDED_DATA, load_bbc_news
from lit_compress.data.sources import DataSource, load_source
from lit_compress.data.splits import stratified_split

__all__ = [
    "IGNORE_LABEL",
    "Augmentation",
    "EMBEDDED_DATA",
    "DataSource",
    "TextClassificationDataModule",
    "augment_texts",
    "load_bbc_news",
    "load_source",
    "stratified_split",
    "word_neighbours",
]
