"""Errors raised on bad input, and helpers that make their messages useful."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ConfigError(ValueError):
    """A scenario, suite or command-line value that cannot be used as given."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset that is not on disk; the message says how to get it."""


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` naming the closest valid name to ``value``, or "" when nothing is close."""
    matches = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def check_choice(what: str, value: object, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a ConfigError listing them."""
    valid = sorted(choices)
    if value in valid:
        return str(value)
    raise ConfigError(f"unknown {what} {value!r}{did_you_mean(str(value), valid)}; valid: {', '.join(valid)}")
