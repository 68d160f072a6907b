"""One readable line for a jsonargparse parse error.

jsonargparse reports a bad ``--teacher.epochz 3`` as a nested tree (``Parser key "teacher"`` → the
union's subtypes → ``Option 'epochz' is not accepted`` → ``Given value: NestedArg(...)``). The functions here
walk that tree, keep the most specific problem and say it in the user's terms: the full dotted option, the
closest valid option (``difflib``), or the expected type and the value given.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

_KEY = re.compile(r'^Parser key "([^"]+)":\s*(.*)$')
_CLASS_PATH = re.compile(r"^Problem with given class_path '([^']+)':")
_OPTION = re.compile(r"^Option '([^']+)' is not accepted")
_GROUP = re.compile(r"^Group '([^']+)' does not accept (?:option|nested key) '([^']+)'")
_UNRECOGNIZED = re.compile(r"^unrecognized arguments: (.+)$", re.IGNORECASE)
_EXPECTED = re.compile(r"^Expected a (.+?)(?:\. Got value: (.*))?$")
_SUBTYPES = re.compile(r"^Subtypes: \[(.*)\]$")
_GIVEN = re.compile(r"^Given value: (.*)$")
_NOISE = ("Does not validate", "Subtypes:", "Errors:", "Given value", "Expected a <class 'NoneType'>")


@dataclass
class _Scope:
    """One ``Parser key "..."`` node of the error tree."""

    indent: int
    key: str
    subtypes: list[str] = field(default_factory=list)
    given: str | None = None
    class_path: str | None = None


@dataclass
class _Problem:
    scope: _Scope
    kind: str  # "unknown" | "type" | "other"
    name: str = ""
    expected: str = ""
    got: str | None = None


def describe_parse_error(message: str, root: Callable[..., Any] | None = None, extra: Iterable[str] = (),
                         help_hint: str = "") -> str:
    """The parse error ``message`` as one line that names the option and the fix.

    Args:
        message: ``str()`` of jsonargparse's ``ArgumentError``.
        root: The function or class whose signature defines the options (for "did you mean").
        extra: More valid dotted option names (e.g. the Trainer's, for LightningCLI).
        help_hint: Appended to unknown-option messages, e.g. ``"lit-compress pipeline --help lists the options"``.
    """
    problems = _problems(message)
    unknown = next((p for p in problems if p.kind == "unknown"), None)
    if unknown is not None:
        key = _join(unknown.scope.key, unknown.name)
        text = f"unknown option {key!r}"
        guess = suggest(key, _candidates(root, extra, problems))
        if guess:
            text += f"; did you mean {guess!r}?"
        return text + (f" ({help_hint})" if help_hint else "")
    typed = next((p for p in problems if p.kind == "type"), None)
    if typed is not None:
        scope = typed.scope
        expected = _expected(scope.subtypes) if scope.subtypes else _type_name(typed.expected)
        got = typed.got if typed.got is not None and not scope.subtypes else scope.given
        return f"{scope.key or 'value'}: expected {expected}, got {_quote(got)}"
    other = next((p for p in problems if p.kind == "other"), None)
    if other is not None:
        return f"{other.scope.key}: {other.name}" if other.scope.key else other.name
    return one_line(message)


def suggest(key: str, candidates: Iterable[str]) -> str | None:
    """The valid option closest to ``key``: same leaf name first, then a similar leaf, then the whole key."""
    pool = sorted(set(candidates) - {key})
    head, leaf = key.split(".")[0], key.rsplit(".", 1)[-1]
    family = [c for c in pool if c.split(".")[0] == head] if "." in key else pool

    def closest(options: list[str]) -> str | None:
        return max(options, key=lambda c: difflib.SequenceMatcher(None, key, c).ratio()) if options else None

    same_leaf = [c for c in family if c.rsplit(".", 1)[-1] == leaf]
    if same_leaf:
        return closest(same_leaf)
    leaves = {c.rsplit(".", 1)[-1] for c in family}
    near = set(difflib.get_close_matches(leaf, leaves, n=3, cutoff=0.75))
    if near:
        return closest([c for c in family if c.rsplit(".", 1)[-1] in near])
    matches = difflib.get_close_matches(key, pool, n=1, cutoff=0.6)
    return matches[0] if matches else None


def option_names(component: Callable[..., Any], prefix: str = "", depth: int = 4) -> list[str]:
    """Dotted option names of a function's or class's parameters, recursing into dataclass parameters."""
    target = component.__init__ if inspect.isclass(component) else component  # type: ignore[misc]
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return []
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # unresolvable forward references: names without recursion
        hints = {}
    names: list[str] = []
    for name, param in params.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        names.append(prefix + name)
        nested = _dataclass_of(hints.get(name))
        if nested is not None and depth > 0:
            names += _dataclass_names(nested, f"{prefix}{name}.", depth - 1)
    return names


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(text).split())


# -- the error tree ---------------------------------------------------------------------------------------
def _problems(message: str) -> list[_Problem]:
    root = _Scope(-1, "")
    stack = [root]
    problems: list[_Problem] = []
    for raw in message.splitlines():
        text = raw.strip()
        if not text:
            continue
        indent = len(raw) - len(raw.lstrip())
        if text.startswith("- "):
            text, indent = text[2:].strip(), indent + 2
        while len(stack) > 1 and stack[-1].indent >= indent:
            stack.pop()
        scope = stack[-1]
        if m := _KEY.match(text):
            child = _Scope(indent, _join(scope.key, m.group(1)))
            stack.append(child)
            if m.group(2):  # `Parser key "x": message` on one line
                problems.append(_leaf(child, m.group(2)))
            continue
        if m := _CLASS_PATH.match(text):
            scope.class_path = m.group(1)
        elif m := _SUBTYPES.match(text):
            scope.subtypes = _split_types(m.group(1))
        elif m := _GIVEN.match(text):
            scope.given = m.group(1)
        elif not text.startswith(_NOISE):
            problems.append(_leaf(scope, text))
    return problems


def _leaf(scope: _Scope, text: str) -> _Problem:
    if m := _OPTION.match(text):
        return _Problem(scope, "unknown", name=m.group(1))
    if m := _GROUP.match(text):
        return _Problem(scope, "unknown", name=f"{m.group(1)}.{m.group(2)}")
    if m := _UNRECOGNIZED.match(text):
        options = [t for t in m.group(1).split() if t.startswith("--")]
        if options:
            return _Problem(scope, "unknown", name=options[0][2:].split("=", 1)[0])
    if m := _EXPECTED.match(text):
        return _Problem(scope, "type", expected=m.group(1), got=m.group(2))
    return _Problem(scope, "other", name=one_line(text))


def _candidates(root: Callable[..., Any] | None, extra: Iterable[str], problems: list[_Problem]) -> list[str]:
    names = list(extra) + (option_names(root) if root is not None else [])
    for scope in {id(p.scope): p.scope for p in problems}.values():
        component = _import(scope.class_path) if scope.class_path else None
        if component is not None:
            names += option_names(component, prefix=f"{scope.key}.")
    return names


def _import(path: str) -> Any:
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def _dataclass_of(hint: Any) -> type | None:
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return next((t for t in options if inspect.isclass(t) and dataclasses.is_dataclass(t)), None)


def _dataclass_names(cls: type, prefix: str, depth: int) -> list[str]:
    hints = typing.get_type_hints(cls)
    names: list[str] = []
    for f in dataclasses.fields(cls):
        names.append(prefix + f.name)
        nested = _dataclass_of(hints.get(f.name))
        if nested is not None and depth > 0:
            names += _dataclass_names(nested, f"{prefix}{f.name}.", depth - 1)
    return names


# -- wording ----------------------------------------------------------------------------------------------
def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _split_types(text: str) -> list[str]:
    """``"dict[str, str], <class 'NoneType'>"`` -> ``["dict[str, str]", "<class 'NoneType'>"]``."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += 1 if char in "[(" else -1 if char in "])" else 0
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [p for p in parts + [current.strip()] if p]


def _type_name(text: str) -> str:
    text = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", text.strip())
    if m := re.fullmatch(r"(?:typing\.)?Literal\[(.*)\]", text):
        return "one of " + m.group(1)
    return "null" if text == "NoneType" else text


def _expected(subtypes: list[str]) -> str:
    names = [_type_name(t) for t in subtypes]
    real = [n for n in names if n != "null"]
    return " or ".join(real + (["null"] if len(real) < len(names) else []))


def _quote(value: str | None) -> str:
    if value is None:
        return "nothing"
    return value if value[:1] in "[{('\"" else repr(value)
