"""Optional dependencies: checked at use, with an actionable message, never at import time."""

from __future__ import annotations

import importlib.util


def require(module: str, extra: str) -> None:
    """Raise a helpful ``ImportError`` if ``module`` is not importable.

    Args:
        module: Importable module name, e.g. ``"optuna"``.
        extra: The ``lit-compress`` extra that installs it, e.g. ``"tune"``.
    """
    if importlib.util.find_spec(module) is None:
        raise ImportError(
            f"`{module}` is required for this feature but is not installed. "
            f"Install it with `pip install 'lit-compress[{extra}]'` (or `pip install {module}`)."
        )
