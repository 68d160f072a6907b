"""The search space of ``lit-compress tune``: parameters addressed by dotted keys into a LightningCLI recipe.

A space is a mapping ``name -> spec`` written in YAML (inline in the tune recipe, or in its own file)::

    alpha:        {key: model.init_args.alpha, type: float, low: 0.0, high: 1.0}
    temperature:  {key: model.init_args.temperature, type: int, low: 2, high: 20}
    lr:           {key: model.init_args.lr, type: float, low: 1.0e-5, high: 1.0e-3, log: true}
    epochs:       {key: trainer.max_epochs, type: int, low: 1, high: 3}
    layers:       {key: model.init_args.student_layers, type: categorical, choices: [[0, 5], [0, 2, 4]]}
    sparsity:     {key: trainer.callbacks.GradualPruning.init_args.schedule, type: float, low: 0.3, high: 0.9}

``name`` is the Optuna parameter name (shown in tables and plots); ``key`` is where the sampled value goes in
the recipe. A key segment that meets a list (``trainer.callbacks``) selects an element by index (``0``) or by
the class name at the end of its ``class_path`` (``GradualPruning``). Missing dictionary keys are created, so
a key may set an argument the recipe leaves at its default.

Categorical choices that Optuna cannot store (lists, mappings) are stored under their JSON text and mapped
back to the value when a trial config is built.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import optuna

ParamType = Literal["float", "int", "categorical"]
_FIELDS = {"key", "type", "low", "high", "log", "step", "choices"}
_PRIMITIVES = (type(None), bool, int, float, str)


@dataclass
class ParamSpec:
    """One searched hyper-parameter.

    Attributes:
        name: Optuna parameter name.
        key: Dotted path of the value in the recipe, e.g. ``model.init_args.alpha``.
        type: ``float``, ``int`` or ``categorical``.
        low: Lower bound (inclusive) of a numeric parameter.
        high: Upper bound (inclusive) of a numeric parameter.
        log: Sample on a log scale (``low`` must be > 0; no ``step``).
        step: Discretisation step of a numeric parameter (``int`` default 1).
        choices: Values of a categorical parameter.
    """

    name: str
    key: str
    type: ParamType
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None
    _labels: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        where = f"search space parameter {self.name!r}"
        if not self.key or not isinstance(self.key, str):
            raise ValueError(f"{where} needs `key`: the dotted path in the recipe, e.g. model.init_args.alpha.")
        if self.type == "categorical":
            self._check_categorical(where)
        elif self.type in ("float", "int"):
            self._check_numeric(where)
        else:
            raise ValueError(f"{where} has type {self.type!r}; use one of 'float', 'int', 'categorical'.")

    def _check_categorical(self, where: str) -> None:
        if not self.choices or not isinstance(self.choices, list):
            raise ValueError(f"{where} is categorical: give `choices: [...]` (a non-empty list).")
        if any(v is not None for v in (self.low, self.high, self.step)) or self.log:
            raise ValueError(f"{where} is categorical: `low`/`high`/`step`/`log` apply to float and int only.")
        labels = [c if isinstance(c, _PRIMITIVES) else json.dumps(c) for c in self.choices]
        if len(set(map(json.dumps, labels))) != len(labels):
            raise ValueError(f"{where} has duplicate choices {self.choices}.")
        self._labels = {str(lab): c for lab, c in zip(labels, self.choices) if not isinstance(c, _PRIMITIVES)}

    def _check_numeric(self, where: str) -> None:
        if self.low is None or self.high is None:
            raise ValueError(f"{where} is {self.type}: give both `low` and `high`.")
        if self.choices is not None:
            raise ValueError(f"{where} is {self.type}: `choices` applies to categorical parameters only.")
        if not self.low < self.high:
            raise ValueError(f"{where}: low={self.low} must be smaller than high={self.high}.")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError(f"{where}: a log-scale parameter needs low > 0 and no step (got low={self.low}).")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"{where}: step={self.step} must be > 0.")
        if self.type == "int" and not all(float(v).is_integer() for v in (self.low, self.high, self.step or 1)):
            raise ValueError(f"{where} is int: low, high and step must be whole numbers.")

    @classmethod
    def from_dict(cls, name: str, spec: Mapping[str, Any]) -> ParamSpec:
        """Build from the YAML mapping of one parameter (unknown fields are an error)."""
        if not isinstance(spec, Mapping):
            raise ValueError(f"search space parameter {name!r} must be a mapping with key/type/...; got {spec!r}.")
        unknown = set(spec) - _FIELDS
        if unknown:
            raise ValueError(f"search space parameter {name!r} has unknown fields {sorted(unknown)}; "
                             f"allowed: {sorted(_FIELDS)}.")  # fmt: skip
        if "key" not in spec:
            raise ValueError(f"search space parameter {name!r} needs `key`: the dotted path in the recipe, "
                             f"e.g. model.init_args.alpha.")  # fmt: skip
        if "type" not in spec:
            raise ValueError(f"search space parameter {name!r} needs `type`: float, int or categorical.")
        return cls(name=name, **dict(spec))

    @property
    def example(self) -> Any:
        """A valid value (``low`` or the first choice), used to check the key against the recipe."""
        return self.choices[0] if self.type == "categorical" else self.value(self.low)  # type: ignore[index]

    def suggest(self, trial: optuna.Trial) -> Any:
        """Sample this parameter in ``trial``; returns the value as it goes into the recipe."""
        if self.type == "categorical":
            labels = [json.dumps(c) if not isinstance(c, _PRIMITIVES) else c for c in self.choices or []]
            return self.value(trial.suggest_categorical(self.name, labels))
        low, high = float(self.low), float(self.high)  # type: ignore[arg-type]
        if self.type == "int":
            return trial.suggest_int(self.name, int(low), int(high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, low, high, step=self.step, log=self.log)

    def value(self, stored: Any) -> Any:
        """The recipe value of a value stored by Optuna (JSON text of a non-primitive choice -> the choice)."""
        if self.type == "categorical" and isinstance(stored, str) and stored in self._labels:
            return copy.deepcopy(self._labels[stored])
        if self.type == "int":
            return int(stored)
        if self.type == "float":
            return float(stored)
        return stored


def parse_space(space: str | os.PathLike[str] | Mapping[str, Any]) -> list[ParamSpec]:
    """Parse a search space from a mapping or a YAML file holding one (optionally under a ``space:`` key).

    Raises:
        ValueError: The space is empty, malformed, or two parameters write the same key.
    """
    if isinstance(space, (str, os.PathLike)):
        import yaml

        path = Path(space)
        if not path.is_file():
            raise FileNotFoundError(f"Search space file {path} does not exist (paths are relative to the cwd).")
        loaded = yaml.safe_load(path.read_text()) or {}
        space = loaded.get("space", loaded) if isinstance(loaded, Mapping) else loaded
    if not isinstance(space, Mapping) or not space:
        raise ValueError("The search space must be a non-empty mapping `name: {key: ..., type: ..., ...}`.")
    specs = [ParamSpec.from_dict(str(name), spec) for name, spec in space.items()]
    keys = [s.key for s in specs]
    duplicated = sorted({k for k in keys if keys.count(k) > 1})
    if duplicated:
        raise ValueError(f"Several search space parameters set the same key(s) {duplicated}; keep one each.")
    return specs


# --------------------------------------------------------------------------------------- dotted keys
def set_path(config: MutableMapping[str, Any], key: str, value: Any) -> None:
    """Set ``config[key]`` for a dotted ``key`` (see the module docstring for list selectors).

    Raises:
        KeyError: A list selector matches no element (or several), or a segment meets a scalar.
    """
    *parents, last = key.split(".")
    node: Any = config
    for segment in parents:
        node = _child(node, segment, key, create=True)
    if isinstance(node, list):
        node[_list_index(node, last, key)] = value
    elif isinstance(node, MutableMapping):
        node[last] = value
    else:
        raise KeyError(f"Cannot set {key!r}: {'.'.join(parents)!r} is {node!r}, not a mapping or list.")


def get_path(config: Mapping[str, Any], key: str) -> Any:
    """``config[key]`` for a dotted ``key``; raises ``KeyError`` when absent."""
    node: Any = config
    for segment in key.split("."):
        node = _child(node, segment, key, create=False)
    return node


def _child(node: Any, segment: str, key: str, create: bool) -> Any:
    if isinstance(node, list):
        return node[_list_index(node, segment, key)]
    if not isinstance(node, MutableMapping):
        raise KeyError(
            f"Cannot follow {key!r} at {segment!r}: the recipe holds {node!r} there. Write the enclosing entry "
            f"as a mapping (e.g. `model: {{class_path: ..., init_args: {{...}}}}`)."
        )
    if segment not in node:
        if not create:
            raise KeyError(f"{key!r}: no {segment!r} in the recipe (found {sorted(node)}).")
        node[segment] = {}
    return node[segment]


def _list_index(items: list[Any], segment: str, key: str) -> int:
    if segment.lstrip("-").isdigit():
        index = int(segment)
        if not -len(items) <= index < len(items):
            raise KeyError(f"{key!r}: index {index} is out of range for a list of {len(items)} entries.")
        return index
    names = [str(item.get("class_path", "")) if isinstance(item, Mapping) else "" for item in items]
    hits = [i for i, cp in enumerate(names) if cp == segment or cp.rsplit(".", 1)[-1] == segment]
    if len(hits) != 1:
        found = [n.rsplit(".", 1)[-1] for n in names if n]
        what = "no" if not hits else "several"
        raise KeyError(f"{key!r}: {what} list entries have class {segment!r} (found {found}); select by index.")
    return hits[0]


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated recursively by ``override`` (mappings merge; lists and scalars replace).

    A key of ``override`` containing dots is a dotted path (:func:`set_path`), so both
    ``{trainer: {max_steps: 5}}`` and ``{"trainer.max_steps": 5}`` work.
    """
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if "." in key:
            set_path(merged, key, copy.deepcopy(value))
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def apply_params(config: Mapping[str, Any], specs: list[ParamSpec], params: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` with each parameter's value (as stored by Optuna) written at its key."""
    out = copy.deepcopy(dict(config))
    for spec in specs:
        if spec.name in params:
            set_path(out, spec.key, spec.value(params[spec.name]))
    return out


def check_keys(config: Mapping[str, Any], specs: list[ParamSpec]) -> None:
    """Fail before any training if a key cannot be written into ``config`` (bad selector, scalar on the path)."""
    for spec in specs:
        try:
            set_path(copy.deepcopy(dict(config)), spec.key, spec.example)
        except KeyError as err:
            raise ValueError(f"search space parameter {spec.name!r}: {err.args[0]}") from err
