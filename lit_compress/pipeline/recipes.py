"""Stage recipes: the ``lit-compress fit --config`` sections (``seed_everything``, ``data``, ``model``, ``trainer``)
of each training stage, merged from the main job's YAML and parsed / instantiated by LightningCLI itself.

How defaults are shared: the YAML's ``defaults`` section is deep-merged under each stage's section, and the
stage's own keys win. Mappings merge key by key; lists and scalars are replaced. A section whose ``class_path``
differs from the one in ``defaults`` starts afresh (the defaults' ``init_args`` were written for another class),
so the teacher's ``ClassifierModule`` takes none of the ``DistillationModule`` defaults. A dotted key given on
the command line (``--prune.trainer.max_epochs 2`` arrives as ``{"trainer": {"max_epochs": "2"}}``, or as
``{"trainer.max_epochs": 2}`` from Python) is expanded first, and numbers given as text are read as numbers.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L

from lit_compress.errors import UserInputError

#: Keys of a section that are the fit recipe; every other key is a knob of the pipeline's stage.
RECIPE_KEYS = ("seed_everything", "data", "model", "trainer", "optimizer", "lr_scheduler")


def expand_dotted(section: Mapping[str, Any]) -> dict[str, Any]:
    """``{"trainer.max_epochs": 2}`` -> ``{"trainer": {"max_epochs": 2}}`` (nested mappings too)."""
    out: dict[str, Any] = {}
    for key, value in section.items():
        value = expand_dotted(value) if isinstance(value, Mapping) else _scalar(copy.deepcopy(value))
        head, *rest = str(key).split(".")
        if rest:
            value = expand_dotted({".".join(rest): value})
        out[head] = deep_merge(out[head], value) if isinstance(out.get(head), dict) and isinstance(value, dict) \
            else value  # fmt: skip
    return out


def _scalar(value: Any) -> Any:
    """A command-line value arrives as text (``--prune.trainer.max_epochs 2`` gives ``"2"``): read numbers,
    booleans, ``null`` and ``[...]`` / ``{...}`` as YAML does; anything else is kept as given."""
    import yaml

    if not isinstance(value, str):
        return value
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    if parsed is None or isinstance(parsed, (bool, int, float)):
        return parsed
    return parsed if value.lstrip().startswith(("[", "{")) and isinstance(parsed, (list, dict)) else value


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` deep-merged over ``base`` (see the module docstring for the rule); neither is modified."""
    if "class_path" in override and "class_path" in base and override["class_path"] != base["class_path"]:
        return copy.deepcopy(dict(override))
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def import_class(path: str) -> type:
    """The class a recipe's ``class_path`` names."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def takes_argument(entry: Mapping[str, Any], name: str) -> bool:
    """Whether the class of a ``class_path`` entry takes the ``name`` argument (a text datamodule's ``tokenizer``)."""
    import inspect

    return name in inspect.signature(import_class(entry["class_path"])).parameters


def recipe_callbacks(recipe: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Copies of the recipe's Trainer callback entries, as a list (a single entry becomes a one-item list)."""
    callbacks = (recipe.get("trainer") or {}).get("callbacks") or []
    return [dict(c) for c in (callbacks if isinstance(callbacks, list) else [callbacks])]


def with_callbacks(recipe: Mapping[str, Any], callbacks: list[dict[str, Any]], **trainer_keys: Any) -> dict[str, Any]:
    """A copy of ``recipe`` whose Trainer has ``callbacks`` (and ``trainer_keys``)."""
    trainer = dict(recipe.get("trainer") or {})
    return {**recipe, "trainer": {**trainer, **trainer_keys, "callbacks": callbacks}}


def split_section(section: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A stage section -> (its fit recipe, its pipeline knobs)."""
    recipe = {k: section[k] for k in RECIPE_KEYS if k in section}
    return recipe, {k: v for k, v in section.items() if k not in RECIPE_KEYS}


def _cli_kwargs() -> dict[str, Any]:
    """What ``lit_compress.cli.trainer_cli`` gives LightningCLI, less the config-saving callback."""
    return {"model_class": L.LightningModule, "datamodule_class": L.LightningDataModule,
            "subclass_mode_model": True, "subclass_mode_data": True, "save_config_callback": None,
            "seed_everything_default": 0, "parser_kwargs": {"exit_on_error": False}}  # fmt: skip


def _cli(cls: type, recipe: Mapping[str, Any]) -> Any:
    """``cls(args=recipe, run=False)``, without Lightning's warning that the process's own command line (the
    pipeline's) is not what the recipe parses."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended to run from within")
        return cls(**_cli_kwargs(), args=copy.deepcopy(dict(recipe)), run=False)  # it edits what it parses


def _check_cli() -> type:
    from lit_compress.cli import LitCompressCLI

    class RecipeCheck(LitCompressCLI):
        """Parse and validate a recipe; seed and instantiate nothing."""

        def _set_seed(self) -> None:
            pass

        def instantiate_classes(self) -> None:
            pass

    return RecipeCheck


def parse_recipe(recipe: Mapping[str, Any], where: str) -> Any:
    """Validate ``recipe`` with the parser of ``lit-compress fit``; return the parsed namespace.

    Raises:
        UserInputError: One line naming the bad option as ``<where>.<key>`` and the closest valid one.
    """
    import argparse

    try:
        return _cli(_check_cli(), recipe).config
    except argparse.ArgumentError as err:
        raise UserInputError(_recipe_error_line(str(err), where)) from err


def _recipe_error_line(message: str, where: str) -> str:
    """jsonargparse's error on a recipe, with its keys as the pipeline's options: the stage in front, and
    ``init_args.`` in front of a class's own parameters (``distill.model.init_args.student_layers``)."""
    import re

    from lit_compress.cli import TRAINER_ROOT_OPTIONS
    from lit_compress.utils.parse_errors import describe_parse_error, option_names

    lines, section = [], ""
    for line in message.splitlines():
        text = line.lstrip()
        if line == text:  # the top level of the error tree: a recipe key
            found = re.match(r'Parser key "([^"]+)"', line)
            section = found.group(1) if found else section
            line = line.replace('Parser key "', f'Parser key "{where}.', 1).replace("Group '", f"Group '{where}.", 1)
        elif text.startswith(('Parser key "', "Option '")):  # a parameter of the class named by class_path
            line = line.replace('Parser key "', 'Parser key "init_args.', 1).replace("Option '", "Option 'init_args.", 1)
        lines.append(line)
    extra = [f"{where}.{o}" for o in TRAINER_ROOT_OPTIONS] + option_names(L.Trainer, prefix=f"{where}.trainer.")
    for class_path in re.findall(r"Problem with given class_path '([^']+)'", message):
        module, _, name = class_path.rpartition(".")
        try:
            component = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError):
            continue
        extra += option_names(component, prefix=f"{where}.{section}.init_args.")
    return describe_parse_error("\n".join(lines), extra=extra,
                                help_hint="lit-compress pipeline --help lists the options")


def instantiate(recipe: Mapping[str, Any]) -> Any:
    """``LitCompressCLI(run=False)`` on ``recipe``: seeds ``seed_everything``, then builds data, model, trainer.

    The same classes as ``lit-compress fit --config recipe.yaml`` (the label link from the datamodule to
    ``model.init_args.labels`` included), in the same order, so a stage and its recipe train the same model.
    """
    from lit_compress.cli import LitCompressCLI

    return _cli(LitCompressCLI, recipe)


def instantiate_datamodule(data: Mapping[str, Any]) -> L.LightningDataModule:
    """The ``data`` section alone (``class_path`` / ``init_args``), built by Lightning's parser."""
    from lightning.pytorch.cli import LightningArgumentParser

    parser = LightningArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(L.LightningDataModule, "data", required=True)
    return parser.instantiate(parser.parse_object({"data": copy.deepcopy(dict(data))})).data


def write_recipe(path: Path, recipe: Mapping[str, Any], stage: str) -> Path:
    """Write ``recipe`` as a ``lit-compress fit`` config, with the command that runs it in its header."""
    import yaml

    from lit_compress.utils.io import write_text_atomic

    header = (f"# The resolved `{stage}` stage of the main job (lit-compress pipeline), as a fit recipe.\n"
              f"# Run: lit-compress fit --config {path}\n")  # fmt: skip
    write_text_atomic(path, header + yaml.safe_dump(plain_data(recipe), sort_keys=False))
    return path


def plain_data(value: Any) -> Any:
    """``value`` as YAML-safe data: mappings as dicts, tuples as lists, paths as strings."""
    if isinstance(value, Mapping):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    return str(value) if isinstance(value, Path) else value
