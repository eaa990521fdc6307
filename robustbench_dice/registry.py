"""Name -> plugin class registries, filled by decorators in the plugin folders."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any, TypeVar

from .errors import ConfigError, check_choice
from .plugins import Attack, Defense, Plugin

ATTACKS: dict[str, type[Attack]] = {}
DEFENSES: dict[str, type[Defense]] = {}
_T = TypeVar("_T", bound=type[Plugin])
_loaded = False


def _register(table: dict[str, Any], kind: str, cls: _T) -> _T:
    if not cls.name:
        raise ConfigError(f"{kind} plugin {cls.__qualname__} has no name")
    existing = table.get(cls.name)
    if existing is not None and existing is not cls:
        raise ConfigError(
            f"two {kind} plugins named {cls.name!r}: {existing.__module__}.{existing.__qualname__}"
            f" and {cls.__module__}.{cls.__qualname__}"
        )
    table[cls.name] = cls
    return cls


def register_attack(cls: _T) -> _T:
    return _register(ATTACKS, "attack", cls)


def register_defense(cls: _T) -> _T:
    return _register(DEFENSES, "defense", cls)


def load_builtin_plugins() -> None:
    """Import every module of the built-in plugin folders (each registers itself)."""
    global _loaded
    if _loaded:
        return
    for package in ("robustbench_dice.attacks", "robustbench_dice.defenses"):
        pkg = importlib.import_module(package)
        for info in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{package}.{info.name}")
    _loaded = True


def _build(table: dict[str, Any], kind: str, name: str, params: dict[str, Any]) -> Any:
    load_builtin_plugins()
    cls = table[check_choice(kind, name, table)]
    valid = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    for key in params:
        if key not in valid:
            raise ConfigError(f"{kind} {name!r} has no parameter {key!r}; valid: {', '.join(valid) or '(none)'}")
    return cls(**params)


def build_attack(name: str, params: dict[str, Any] | None = None) -> Attack:
    return _build(ATTACKS, "attack", name, params or {})


def build_defense(name: str, params: dict[str, Any] | None = None) -> Defense:
    return _build(DEFENSES, "defense", name, params or {})
