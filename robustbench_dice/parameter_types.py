"""The declared types of plugin parameters: whether a value from a config fits one, and its canonical form.

Values reach a plugin from TOML or from ``--attack-param KEY=VALUE`` (parsed as
TOML): numbers, strings, booleans, arrays (lists) and inline tables (dicts).
A parameter's annotation says which it takes: ``int``, ``float`` (a whole
number too), ``str``, ``bool``, ``X | None``, ``Literal[...]``, and
containers of those (``list[float]``, ``tuple[int, int]``, ``dict[str, float]``).
An annotation this module does not know (a class of the plugin's own, a
``Protocol``) is left to the plugin's ``__post_init__`` to judge.
"""

from __future__ import annotations

import collections.abc
import types
import typing
from collections.abc import Iterable
from typing import Any, Literal, Union

_SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.MutableSequence)
_MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)


def resolved_types(cls: type, names: Iterable[str]) -> dict[str, Any]:
    """The annotation of each field in ``names`` of ``cls`` as a type (string annotations resolved, as under
    ``from __future__ import annotations``); ``Any`` where it cannot be resolved."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # a name the plugin's module cannot resolve at run time: its fields go unchecked
        hints = {}
    return {name: hints.get(name, Any) for name in names}


def _parts(annotation: Any) -> tuple[Any, tuple[Any, ...]]:
    origin = typing.get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        return Union, typing.get_args(annotation)
    return origin if origin is not None else annotation, typing.get_args(annotation)


def _is_whole_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def fits(value: Any, annotation: Any) -> bool:
    """Whether ``value`` is one of the values ``annotation`` declares (a whole number fits ``float``; a bool
    fits only ``bool``; a list fits a sequence type, element by element)."""
    kind, args = _parts(annotation)
    if annotation is Any or annotation is object:
        return True
    if kind is Union:
        return any(fits(value, arg) for arg in args)
    if kind is Literal:
        return any(value == arg and type(value) is type(arg) for arg in args)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):  # True is an int to Python, not to a config
        return False
    if annotation is float:
        return isinstance(value, (int, float))
    if kind in _SEQUENCES:
        if not isinstance(value, (list, tuple)):
            return False
        if kind is tuple and args and args[-1] is not Ellipsis:  # tuple[int, str]: that many, each its type
            return len(value) == len(args) and all(fits(v, a) for v, a in zip(value, args, strict=True))
        return not args or all(fits(v, args[0]) for v in value)
    if kind in _MAPPINGS:
        if not isinstance(value, dict):
            return False
        key_type, value_type = args if len(args) == 2 else (Any, Any)
        return all(fits(k, key_type) and fits(v, value_type) for k, v in value.items())
    if annotation in (int, str):
        return isinstance(value, annotation)
    return True  # a class of the plugin's own (Path, an Enum), a TypeVar, ...: the plugin's own checks judge it


def canonical(value: Any, annotation: Any) -> Any:
    """``value`` with every whole number where ``annotation`` declares a float made a float, and sequences as
    lists: ``std = 1`` and ``std = 1.0`` are one run, with one store key. Values that do not fit are returned
    as they are (building the plugin rejects them)."""
    kind, args = _parts(annotation)
    if kind is Union:
        if _is_whole_number(value) and float in args and int not in args:
            return float(value)
        member = next((arg for arg in args if arg is not type(None) and fits(value, arg)), None)
        return value if member is None else canonical(value, member)
    if annotation is float and _is_whole_number(value):
        return float(value)
    if kind in _SEQUENCES and isinstance(value, (list, tuple)):
        if kind is tuple and args and args[-1] is not Ellipsis and len(args) == len(value):
            return [canonical(v, a) for v, a in zip(value, args, strict=True)]
        return [canonical(v, args[0] if args else Any) for v in value]
    if kind in _MAPPINGS and isinstance(value, dict) and len(args) == 2:
        return {k: canonical(v, args[1]) for k, v in value.items()}
    return value


def for_plugin(value: Any, annotation: Any) -> Any:
    """``value`` as the plugin's constructor gets it: a list where the annotation is a tuple becomes a tuple
    (configs have only lists)."""
    kind, args = _parts(annotation)
    if kind is Union:
        member = next((arg for arg in args if arg is not type(None) and fits(value, arg)), None)
        return value if member is None else for_plugin(value, member)
    if kind is tuple and isinstance(value, list):
        return tuple(value)
    return value
