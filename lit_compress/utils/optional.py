"""Optional dependencies: checked at use, with an actionable message, never at import time."""

from __future__ import annotations

import importlib.util
import sys


def require(module: str, extra: str) -> None:
    """Raise a helpful ``ImportError`` if ``module`` is not importable.

    Args:
        module: Importable module name, e.g. ``"optuna"``.
        extra: The ``lit-compress`` extra that installs it, e.g. ``"tune"``.
    """
    if module in sys.modules:  # already imported (some packages replace their module object: no __spec__)
        return
    try:
        found = importlib.util.find_spec(module) is not None
    except ValueError:
        found = False
    if not found:
        raise ImportError(
            f"`{module}` is required for this feature but is not installed. "
            f"Install it with `pip install 'lit-compress[{extra}]'` (or `pip install {module}`)."
        )
