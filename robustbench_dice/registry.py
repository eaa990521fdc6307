"""Name -> plugin registries.

Plugins register themselves with :func:`register_attack` / :func:`register_defense`
(classes) and :func:`register_dataset`, :func:`register_model`, :func:`register_topology`
(functions) when their module is imported. Modules are found in three places:

1. the built-in folders ``attacks/`` and ``defenses/`` (installed as
   ``robustbench_dice.attacks`` and ``robustbench_dice.defenses``);
2. the entry-point groups ``robustbench_dice.attacks``, ``.defenses``, ``.datasets``,
   ``.models`` and ``.topologies`` of installed packages;
3. user folders given with ``--plugins DIR`` (every ``*.py`` file in it).

A module that fails to import is recorded in :data:`LOAD_ERRORS` with its error
and skipped; the other plugins and the command still work.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
import math
import pkgutil
import re
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .code_digest import code_digest
from .datasets import DATASETS, PLUGIN_DATASETS, positional_arity
from .errors import ConfigError, check_choice, did_you_mean
from .models import MODELS, PLUGIN_MODELS
from .parameter_types import canonical, fits, for_plugin, resolved_types
from .plugins import AUTO, Attack, Defense, Plugin
from .topology import PLUGIN_TOPOLOGIES, TOPOLOGIES

if TYPE_CHECKING:
    from .scenario import Scenario

ATTACKS: dict[str, type[Attack]] = {}
DEFENSES: dict[str, type[Defense]] = {}
ENTRY_POINT_GROUPS = {
    "attack": "robustbench_dice.attacks",
    "defense": "robustbench_dice.defenses",
    "dataset": "robustbench_dice.datasets",
    "model": "robustbench_dice.models",
    "topology": "robustbench_dice.topologies",
}
PLUGIN_FUNCTIONS: dict[str, dict[str, Any]] = {  # kind -> name -> function
    "dataset": PLUGIN_DATASETS,
    "model": PLUGIN_MODELS,
    "topology": PLUGIN_TOPOLOGIES,
}
CATALOGUES = {"dataset": DATASETS, "model": MODELS, "topology": TOPOLOGIES}  # kind -> name -> description
PLUGIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # such a name is part of figure file names
USER_MODULE_PREFIX = "robustbench_dice_user_plugins"
BUILTIN_MODULE_PREFIX = "robustbench_dice."  # built-in plugins: their code is covered by RESULTS_VERSION
_T = TypeVar("_T", bound=type[Plugin])
_builtins_loaded = False
# (kind, name) -> (the registered object, a hash of the file defining it): taken at registration, when the code
# that will run is read, so a file edited later in a long-lived process is not mistaken for the code running
_CODE_DIGESTS: dict[tuple[str, str], tuple[Any, str]] = {}
_user_folders: list[Path] = []


@dataclass(frozen=True)
class LoadError:
    source: str  # module name, entry point or file path
    error: str  # the exception, one line

    def __str__(self) -> str:
        return f"{self.source}: {self.error}"


LOAD_ERRORS: list[LoadError] = []


class PluginNameClash(ConfigError):
    """Two plugins of one kind claim the same name; which one a scenario means would be ambiguous."""


def _source_file(cls: Any) -> str:
    try:
        return inspect.getfile(cls)
    except (TypeError, OSError):
        return f"{cls.__module__}.{cls.__qualname__}"


def _register(table: dict[str, Any], kind: str, cls: _T) -> _T:
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{kind} plugin {cls.__qualname__} in {_source_file(cls)} has no `name`")
    _check_plugin_name(kind, name, f"set by {cls.__qualname__} in {_source_file(cls)}")
    existing = table.get(name)
    if existing is not None and not _same_definition(existing, cls):
        raise PluginNameClash(
            f"two {kind} plugins are named {name!r}: {existing.__qualname__} in {_source_file(existing)}"
            f" and {cls.__qualname__} in {_source_file(cls)}"
        )
    table[name] = cls
    _note_code(kind, name, cls)
    return cls


def register_attack(cls: _T) -> _T:
    """Class decorator: make an :class:`~.plugins.Attack` available under its ``name``."""
    return _register(ATTACKS, "attack", cls)


def register_defense(cls: _T) -> _T:
    """Class decorator: make a :class:`~.plugins.Defense` available under its ``name``."""
    bound = getattr(cls, "byzantine_bound", None)
    if bound is not None:
        params = {f.name: f for f in parameters(cls)}
        if bound not in params or type_name(params[bound].type) != "int":
            raise ConfigError(
                f"defense plugin {cls.__qualname__} in {_source_file(cls)}: byzantine_bound = {bound!r} must name"
                f" one of its int parameters; int parameters: {', '.join(k for k, f in params.items() if type_name(f.type) == 'int') or '(none)'}"
            )
    return _register(DEFENSES, "defense", cls)


_Function = TypeVar("_Function", bound=Callable[..., Any])


def _check_plugin_name(kind: str, name: object, where: str | None = None) -> None:
    """``where``: the class that set the name (class plugins); else the decorator is named (function plugins)."""
    if not isinstance(name, str) or not PLUGIN_NAME.fullmatch(name):
        hint = where or f'use it as @register_{kind}("my_{kind}")'
        raise ConfigError(
            f"{kind} name {name!r} must be letters, digits, '_', '.' or '-' (it names result files, table rows and"
            f" figure labels); {hint}"
        )


def _register_function(kind: str, name: str, function: Any, arities: tuple[int, ...], signature: str) -> int:
    """Check a function plugin of ``kind`` and register it as ``name`` (with its docstring's first line as the
    description); returns how many arguments it takes. ``signature`` says what it must take."""
    catalogue = CATALOGUES[kind]  # the names taken, built-ins and plugins
    if not callable(function):
        raise ConfigError(f"@register_{kind}({name!r}) decorates a function, not {type(function)}")
    defined = _defined(function)
    where = f"{kind} plugin {getattr(defined, '__qualname__', defined)!r} in {_source_file(defined)}"
    if not (defined.__doc__ or "").strip():
        raise ConfigError(f"{where} needs a docstring: a one-line description and where it comes from")
    try:
        arguments = positional_arity(function)
    except (TypeError, ValueError):
        arguments = -1
    if arguments not in arities:
        raise ConfigError(f"{where} must take {signature}, not {arguments} argument(s)")
    existing = PLUGIN_FUNCTIONS[kind].get(name)
    if name in catalogue and not (existing is not None and _same_definition(existing, function)):
        other = f"a built-in {kind}" if existing is None else defining_file(existing)
        plural = "topologies" if kind == "topology" else f"{kind}s"
        raise PluginNameClash(f"two {plural} are named {name!r}: {other} and {where}")
    PLUGIN_FUNCTIONS[kind][name] = function
    catalogue[name] = str(defined.__doc__).strip().splitlines()[0].strip()
    _note_code(kind, name, function)
    return arguments


def _note_code(kind: str, name: str, plugin: Any) -> None:
    """Remember a hash of the code of a plugin that is not built in: its file and the user's modules that file
    uses (:mod:`.code_digest`); none when it has no file (defined interactively)."""
    defined = _defined(plugin)
    module = sys.modules.get(defined.__module__)
    if defined.__module__.startswith(BUILTIN_MODULE_PREFIX) or module is None:
        return
    try:
        digest = code_digest(module)
    except OSError:  # a file gone since it was imported: nothing to fingerprint
        return
    if digest is not None:
        _CODE_DIGESTS[(kind, name)] = (plugin, digest)


def plugin_code(scenario: Scenario) -> dict[str, str]:
    """``"kind name"`` -> a hash of the file that defines each plugin ``scenario`` names that is not built in
    (a ``--plugins`` file or an installed package's module); empty for built-in plugins only.

    Part of a run's store key, so a run with a plugin whose code changed is a new run: the file that defines
    the plugin and the user's modules it uses (:mod:`.code_digest` says which count). A change the hash cannot
    see (a module first imported when a function runs, an installed library) needs ``run --force --only``.
    """
    load_builtin_plugins()  # an entry point's plugin must count whether or not something loaded it before
    out = {}
    tables: dict[str, dict[str, Any]] = {"attack": ATTACKS, "defense": DEFENSES, **PLUGIN_FUNCTIONS}
    for kind, table in tables.items():
        name = getattr(scenario, kind)
        noted = _CODE_DIGESTS.get((kind, name))
        if noted is not None and name in table and table[name] is noted[0]:
            out[f"{kind} {name}"] = noted[1]
    return out


def _defined(function: Any) -> Any:
    """The function a plugin object was written as: through ``functools.partial`` (one member of a family, such
    as ``partial(circulant, k=2)``) to the function it binds, whose module, name and docstring it has."""
    while isinstance(function, functools.partial):
        function = function.func
    return function


def register_dataset(name: str) -> Callable[[_Function], _Function]:
    """Function decorator: make a dataset loader available as dataset ``name``.

    The loader returns a :class:`~.datasets.Dataset` (checked by :func:`~.datasets.check_dataset` at every load);
    it takes no argument, or one: the scenario's ``data_root`` (None when unset). Its docstring's first line is
    the description `robustbench-dice list datasets` shows. It must return the same data every time: runs of a
    suite load it in separate processes.
    """
    _check_plugin_name("dataset", name)  # when the decorator is made, so that the error points at it

    def register(loader: _Function) -> _Function:
        if _register_function("dataset", name, loader, (0, 1), "no argument or one (data_root)") == 1:
            DATASETS[name] += "  [data_root]"  # `list` shows it, and Scenario.unused_fields knows it reads data_root
        return loader

    return register


def register_model(name: str) -> Callable[[_Function], _Function]:
    """Function decorator: make a ``torch.nn.Module`` factory available as model ``name``.

    The factory takes ``(input_shape, num_classes)`` and returns a module mapping a batch ``(B, *input_shape)`` to
    logits ``(B, num_classes)``, with no buffers (no BatchNorm); :class:`~.models.ModuleModel` runs it for every
    node at once. Its docstring's first line is the description `robustbench-dice list models` shows.
    """
    _check_plugin_name("model", name)

    def register(factory: _Function) -> _Function:
        _register_function("model", name, factory, (2,), "(input_shape, num_classes)")
        return factory

    return register


def register_topology(name: str) -> Callable[[_Function], _Function]:
    """Function decorator: make a graph builder available as topology ``name``.

    The builder takes ``(nodes, seed)`` and returns an adjacency matrix ``(nodes, nodes)`` in receiver convention
    (``A[j, k] > 0``: node j receives node k's message), or a list of them: a time-varying topology that uses
    graph ``t % len(list)`` at round t. Each is checked, and the graph (the union over the list) must be strongly
    connected. ``seed`` comes from the scenario's seed; the same seed must give the same graphs. Its docstring's
    first line is the description `robustbench-dice list topologies` shows.
    """
    _check_plugin_name("topology", name)

    def register(builder: _Function) -> _Function:
        _register_function("topology", name, builder, (2,), "(nodes, seed)")
        return builder

    return register


def _same_definition(a: Any, b: Any) -> bool:
    """Whether two plugin objects are one definition (the same module loaded again), not a clash."""
    a, b = _defined(a), _defined(b)
    return (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def defining_file(plugin: Any) -> str:
    """The file a plugin class or function (or a ``functools.partial`` of one) was written in."""
    return _source_file(_defined(plugin))


def _defined_in(plugin: Any, path: Path) -> bool:
    """Whether ``plugin`` was defined by the already imported module file ``path`` (resolved)."""
    return _module_file(sys.modules.get(_defined(plugin).__module__)) == path


def functions_of_file(path: str | Path) -> dict[str, list[str]]:
    """Kind (``dataset``, ``model``, ``topology``) -> the names of the function plugins the already imported
    file ``path`` defines."""
    path = Path(path).resolve()
    return {
        kind: [name for name, f in table.items() if _defined_in(f, path)] for kind, table in PLUGIN_FUNCTIONS.items()
    }


def _record(source: str, exc: BaseException) -> None:
    if isinstance(exc, PluginNameClash):
        raise exc  # a name clash stops the command; a broken file only skips that file
    line = "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()[-1]
    missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
    folder = Path(source).parent
    top = (missing or "").partition(".")[0]
    if (
        top
        and source.endswith(".py")
        and any(p.is_file() for p in (folder / f"{top}.py", folder / top / "__init__.py"))
    ):
        # plugin files are imported by path, so a module beside one is not importable by name on its own
        line += f" (it is beside the plugin file: put its folder on the path, PYTHONPATH={folder})"
    LOAD_ERRORS.append(LoadError(source, line))


def load_builtin_plugins() -> None:
    """Import the built-in plugin modules and the installed entry points (once per process)."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for package in ("robustbench_dice.attacks", "robustbench_dice.defenses"):
        pkg = importlib.import_module(package)
        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
            try:
                importlib.import_module(f"{package}.{info.name}")
            except Exception as exc:  # noqa: BLE001 - one broken plugin must not hide the others
                _record(f"{package}.{info.name}", exc)
    for group in ENTRY_POINT_GROUPS.values():
        for entry_point in sorted(importlib.metadata.entry_points(group=group), key=lambda e: e.name):
            try:
                entry_point.load()
            except Exception as exc:  # noqa: BLE001
                _record(f"entry point {entry_point.name} = {entry_point.value}", exc)


def _module_file(module: Any) -> Path | None:
    file = getattr(module, "__file__", None)
    return Path(file).resolve() if isinstance(file, str) else None


def load_plugin_file(path: str | Path) -> list[type[Plugin]]:
    """Import one plugin file; returns the plugin classes it registered. Import errors propagate."""
    path = Path(path).resolve()
    if not path.is_file():
        raise ConfigError(f"plugin file {str(path)!r} does not exist")
    if path.suffix != ".py":
        raise ConfigError(f"plugin file {str(path)!r} is not a .py file")
    load_builtin_plugins()
    registered = [c for c in (*ATTACKS.values(), *DEFENSES.values()) if _defined_in(c, path)]
    # a built-in plugin's file, or one loaded before: importing it again would register a clashing copy
    if registered or any(functions_of_file(path).values()):
        return registered
    before = {**{("attack", k): v for k, v in ATTACKS.items()}, **{("defense", k): v for k, v in DEFENSES.items()}}
    # a flat (undotted) name: pickle re-imports a class's module by name, and a dotted one needs a parent package
    module_name = re.sub(r"\W", "_", f"{USER_MODULE_PREFIX}_{path.parent.name}_{path.stem}")
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import plugin file {str(path)!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # pickling a plugin instance needs its module importable by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    after = {**{("attack", k): v for k, v in ATTACKS.items()}, **{("defense", k): v for k, v in DEFENSES.items()}}
    return [cls for key, cls in after.items() if before.get(key) is not cls]


def load_plugin_folder(folder: str | Path) -> list[LoadError]:
    """Import every ``*.py`` in ``folder``; returns the files that failed (also kept in LOAD_ERRORS)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"plugin folder {str(folder)!r} does not exist")
    if folder.resolve() in _user_folders:
        return []
    _user_folders.append(folder.resolve())
    failed = []
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:
            load_plugin_file(path)
        except Exception as exc:  # noqa: BLE001
            _record(str(path), exc)
            failed.append(LOAD_ERRORS[-1])
    return failed


def unregistered_plugins(scenario: Any) -> list[str]:
    """``"kind 'name'"`` for each plugin a scenario dict (``Scenario.to_dict()``, as a record stores it) names that
    no loaded plugin registers: a plugin of a ``--plugins`` folder this process did not load, or one since removed."""
    if not isinstance(scenario, dict):
        return []
    load_builtin_plugins()
    tables: dict[str, Any] = {**CATALOGUES, "attack": ATTACKS, "defense": DEFENSES}
    return [
        f"{kind} {name!r}"
        for kind, table in tables.items()
        if isinstance(name := scenario.get(kind), str) and name not in table
    ]


def plugin_class(kind: str, name: str) -> Any:
    """The attack or defense class registered as ``name`` (built-ins loaded first), or None."""
    load_builtin_plugins()
    table: dict[str, Any] = ATTACKS if kind == "attack" else DEFENSES
    return table.get(name)


def canonical_parameters(kind: str, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` of the attack or defense ``name`` in canonical form (:func:`.parameter_types.canonical`: a whole
    number given for a ``float`` parameter made a float, so ``std = 1`` and ``std = 1.0`` are one run, with one store
    key); unchanged for a plugin not registered here."""
    declared = _parameter_types(plugin_class(kind, name))
    return {key: canonical(value, declared[key]) if key in declared else value for key, value in params.items()}


def non_default_parameters(kind: str, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """:func:`canonical_parameters` without those at their default: what makes a run with them differ from one
    with the plugin's defaults (``{std = 1.0}`` is the plain ``gaussian``)."""
    cls = plugin_class(kind, name)
    defaults = _defaults(cls) if cls is not None else {}
    declared = _parameter_types(cls)
    return {
        key: value
        for key, value in canonical_parameters(kind, name, params).items()
        if key not in defaults
        or value != (default := canonical(defaults[key], declared[key]))
        or type(value) is not type(default)
    }


def _defaults(cls: type[Plugin]) -> dict[str, Any]:
    """Each parameter's default value (a fresh one from its ``default_factory``); parameters without one left out."""
    out = {}
    for f in parameters(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


@functools.cache
def _parameter_types(cls: type[Plugin] | None) -> dict[str, Any]:
    """Each parameter's declared type, resolved (:func:`.parameter_types.resolved_types`); empty for None."""
    return {} if cls is None else resolved_types(cls, [f.name for f in parameters(cls)])


def parameters(cls: type[Plugin]) -> list[dataclasses.Field[Any]]:
    """The typed parameters of a plugin class (its dataclass fields)."""
    if not dataclasses.is_dataclass(cls):
        return []
    return [f for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")]


def type_name(annotation: Any) -> str:
    """``int``, ``float | None``, ...: readable whether the annotation is a string or a type."""
    if isinstance(annotation, str):
        return annotation
    return annotation.__name__ if isinstance(annotation, type) else str(annotation)


def _build(table: dict[str, Any], kind: str, name: str, params: dict[str, Any], auto: int | None = None) -> Any:
    load_builtin_plugins()
    try:
        cls = table[check_choice(kind, name, table)]
    except ConfigError as exc:
        broken = "; ".join(map(str, LOAD_ERRORS))
        hint = f" (plugin files that failed to import: {broken})" if broken else ""
        if not _user_folders:
            hint += f"; {kind}s of your own load with --plugins DIR (Python: registry.load_plugin_folder)"
        raise ConfigError(f"{exc}{hint}") from None
    valid = {f.name: f for f in parameters(cls)}
    declared = _parameter_types(cls)
    bound = getattr(cls, "byzantine_bound", None)
    params = dict(params)
    for key, value in params.items():
        if key not in valid:
            raise ConfigError(
                f"{kind} {name!r} has no parameter {key!r}{did_you_mean(key, valid)};"
                f" valid: {', '.join(valid) or '(none)'}"
            )
        if value == AUTO and key == bound:
            # without a run to resolve it (checking a suite), the parameter's default stands in
            params[key] = valid[key].default if auto is None else auto
        elif not fits(value, declared[key]):
            expected, hint = type_name(valid[key].type), ""
            if key == bound:  # the engine resolves "auto" to the most Byzantine in-neighbours of any honest node
                expected += f" or {AUTO!r}"
            elif value == AUTO:
                hint = f" (only {bound!r} takes {AUTO!r})" if bound else f" (no parameter of {name!r} takes {AUTO!r})"
            raise ConfigError(f"{kind} {name!r} parameter {key!r} must be {expected}, got {value!r}{hint}")
        elif kind == "defense" and isinstance(value, float) and math.isnan(value):
            # every comparison with NaN is False: a NaN threshold or radius silently turns the rule off.
            # An attack's NaN is left alone: sending NaN is a Byzantine behaviour worth benchmarking
            raise ConfigError(f"defense {name!r} parameter {key!r} must be a number, got nan")
        else:
            params[key] = for_plugin(value, declared[key])
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{kind} {name!r}: {exc}") from exc


def build_attack(name: str, params: dict[str, Any] | None = None) -> Attack:
    return _build(ATTACKS, "attack", name, params or {})


def build_defense(
    name: str, params: dict[str, Any] | None = None, *, byzantine_in_neighbours: int | None = None
) -> Defense:
    """The defense ``name`` with ``params``; ``"auto"`` for its ``byzantine_bound`` parameter becomes
    ``byzantine_in_neighbours`` (the engine passes ``RunSetup.byzantine_in_neighbours``; without it, as when a
    suite is checked before any run, the parameter's default stands in)."""
    return _build(DEFENSES, "defense", name, params or {}, byzantine_in_neighbours)
