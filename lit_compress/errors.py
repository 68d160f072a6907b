"""The one exception type for bad user input (options, data files, model names, checkpoints).

Raise :class:`UserInputError` where the problem is detected, with one sentence that names the offending
option, file or model and says how to fix it. ``lit-compress`` prints it as one ``error:`` line and exits
with code 2 (no traceback); library callers can catch it as a ``ValueError``.
"""

from __future__ import annotations


class UserInputError(ValueError):
    """Input the user can fix: a bad option value, an unreadable file, a model that cannot be resolved."""


class InputNotFoundError(UserInputError, FileNotFoundError):
    """A file or directory named by the user does not exist (also a ``FileNotFoundError``)."""
