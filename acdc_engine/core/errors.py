"""The engine's one error type: every problem a user can cause surfaces as an `AcdcError`."""

from __future__ import annotations


class AcdcError(ValueError):
    """A problem with the user's input (config, model, data, circuit file), with a message that names it."""
