"""Data: the embedded BBC News default, Hugging Face datasets, local files."""

from lit_compress.data.datamodule import TextClassificationDataModule
from lit_compress.data.embedded import EMBEDDED_DATA, load_bbc_news
from lit_compress.data.sources import DataSource, load_source
from lit_compress.data.splits import stratified_split

__all__ = [
    "EMBEDDED_DATA",
    "DataSource",
    "TextClassificationDataModule",
    "load_bbc_news",
    "load_source",
    "stratified_split",
]
