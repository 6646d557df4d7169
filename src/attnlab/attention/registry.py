"""The one registry of attention mechanisms: `register` a class by name, `build` it by name.

Models only ever name a mechanism; they never import one. A new mechanism is one new file that
decorates its class with `@register("name")`.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from attnlab.errors import ConfigError, did_you_mean, unknown

if TYPE_CHECKING:
    from attnlab.attention.base import Attention, Capabilities

_REGISTRY: dict[str, type[Attention]] = {}


def register(name: str):
    """Class decorator: make an `Attention` subclass buildable as `build(name, ...)`.

    Args:
        name: the name `build` and configs use; registering another class under a taken
            name is an error.
    """

    def decorate(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"attention mechanism '{name}' is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def get(name: str) -> type[Attention]:
    """The class registered under `name`; an unknown name suggests the nearest one."""
    if name not in _REGISTRY:
        raise unknown("attention mechanism", name, _REGISTRY)
    return _REGISTRY[name]


def options(name: str) -> dict[str, object]:
    """The keyword options of mechanism `name` with their defaults."""
    sig = inspect.signature(get(name).__init__)
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def build(name: str, **opts) -> Attention:
    """Instantiate mechanism `name` with its options; unknown options are a `ConfigError`.

    Args:
        name: a registered mechanism (`available()` lists them).
        **opts: its options (docs/mechanisms.md lists each mechanism's).
    """
    cls = get(name)
    valid = options(name)
    for key in opts:
        if key not in valid:
            hint = did_you_mean(key, valid)
            allowed = ", ".join(valid) or "none"
            raise ConfigError(
                f"attention '{name}' has no option '{key}'{hint}; its options: {allowed}"
            )
    return cls(**opts)


def available() -> dict[str, Capabilities]:
    """Every registered mechanism name with its declared capabilities, sorted by name."""
    return {name: _REGISTRY[name].capabilities for name in sorted(_REGISTRY)}
