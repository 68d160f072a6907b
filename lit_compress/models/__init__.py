"""Models: teachers and students from hub names, local directories or the embedded default."""

from lit_compress.models.hub import EMBEDDED_MODEL, load_classifier, load_tokenizer, resolve_model_path
from lit_compress.models.io import load_model_dir, save_model_dir
from lit_compress.models.layout import EncoderLayout, LayoutError, encoder_layers, layout_of, register_layout
from lit_compress.models.student import student_from_teacher
from lit_compress.models.tiny import TINY_FAMILIES, tiny_bert, tiny_bert_config, tiny_config, tiny_model
from lit_compress.models.tiny_tokenizers import TINY_CORPUS, TOKENIZER_KIND, tiny_tokenizer

__all__ = [
    "EMBEDDED_MODEL",
    "EncoderLayout",
    "LayoutError",
    "encoder_layers",
    "layout_of",
    "register_layout",
    "load_classifier",
    "load_model_dir",
    "load_tokenizer",
    "resolve_model_path",
    "save_model_dir",
    "student_from_teacher",
    "TINY_CORPUS",
    "TINY_FAMILIES",
    "TOKENIZER_KIND",
    "tiny_bert",
    "tiny_bert_config",
    "tiny_config",
    "tiny_model",
    "tiny_tokenizer",
]
