"""Errors a user can cause, each carrying one line that says what is wrong and how to mend it.

The CLI prints the message of any `AttnlabError` on one line and exits with status 2; anything
else is a bug in attnlab and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class AttnlabError(Exception):
    """Base class of every error caused by user input (config, file, flag, prompt, checkpoint)."""


class ConfigError(AttnlabError, ValueError):
    """A configuration value or option that cannot hold."""


class CapabilityError(AttnlabError):
    """A request outside what an attention mechanism declares it can do."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest of `choices`, or '' when nothing is close."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown(kind: str, name: str, choices: Iterable[str]) -> ConfigError:
    """The one error for a name that is not in a fixed set: names the set and the nearest entry."""
    choices = sorted(choices)
    return ConfigError(
        f"unknown {kind} '{name}'{did_you_mean(name, choices)}; choose from: {', '.join(choices)}"
    )
