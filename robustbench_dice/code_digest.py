"""Fingerprints of a plugin's code, for the result store's keys.

A plugin that is not built in is fingerprinted by the file that defines it
and by the user's own modules that file uses, directly or through each other:
an edit to a helper module then makes new runs, as an edit to the plugin's
file does. A module counts as the user's when it belongs to the plugin's own
top-level package, or when its file lies outside Python's standard library
and the installed packages (site-packages). robustbench_dice's modules never
count: ``RESULTS_VERSION`` covers them. "Uses" means: the file's source
imports it (``import M``, ``from M import name``, relative imports; in a
function body too) and it has been imported by the time the plugin registers.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import site
import sys
import sysconfig
from functools import cache
from pathlib import Path
from types import ModuleType

_OWN_PACKAGE = __name__.partition(".")[0]


@cache
def _installation_folders() -> tuple[Path, ...]:
    """Folders of the standard library and of installed packages: code there is not the user's."""
    paths = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    paths.add(site.getusersitepackages())
    return tuple(Path(p).resolve() for p in paths if p)


def _file(module: ModuleType) -> Path | None:
    name = getattr(module, "__file__", None)
    return Path(name).resolve() if name and name.endswith(".py") else None


def _top_package(module: ModuleType) -> str:
    return module.__name__.partition(".")[0]


def _is_user_code(module: ModuleType, plugin_package: str) -> bool:
    if _top_package(module) == _OWN_PACKAGE:
        return False
    path = _file(module)
    if path is None:
        return False
    if _top_package(module) == plugin_package:
        return True
    return not any(path.is_relative_to(folder) for folder in _installation_folders())


def _imported_names(path: Path, package: str | None) -> set[str]:
    """Absolute names of the modules the source at ``path`` imports anywhere (a function body's imports
    included), and of what ``from M import name`` may take as a submodule ``M.name``."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError):
        return set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            try:
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            except (ImportError, ValueError):  # a relative import outside a package
                continue
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {n.rstrip(".") for n in names}


def _used_modules(module: ModuleType) -> list[ModuleType]:
    """The loaded modules that ``module``'s source imports (modules not imported yet are not looked for: finding
    a dotted name would import its parents, i.e. run code)."""
    path = _file(module)
    if path is None:
        return []
    package = module.__package__ if module.__package__ is not None else module.__name__.rpartition(".")[0]
    found = (sys.modules.get(name) for name in sorted(_imported_names(path, package or None)))
    return [m for m in found if isinstance(m, ModuleType)]


def user_code_files(module: ModuleType) -> list[Path]:
    """``module``'s file, then, sorted, those of the user's modules it uses directly or through each other."""
    name = getattr(module, "__file__", None)
    if not name:
        return []
    own = Path(name).resolve()
    package = _top_package(module)
    seen: dict[Path, ModuleType] = {own: module}
    stack = [module]
    while stack:
        for used in _used_modules(stack.pop()):
            path = _file(used)
            if path is not None and path not in seen and _is_user_code(used, package):
                seen[path] = used
                stack.append(used)
    return [own, *sorted(p for p in seen if p != own)]


def code_digest(module: ModuleType) -> str | None:
    """A 16-hex-digit hash of :func:`user_code_files`' contents (None when ``module`` has no file).

    With no helper module it is the hash of the defining file alone, as before helpers were counted, so the
    store keys of such plugins' runs did not change. Helpers enter by name and content, in an order that does
    not depend on where the files lie, so a copy of the same code elsewhere gives the same keys.
    """
    files = user_code_files(module)
    if not files:
        return None
    digest = hashlib.sha256(files[0].read_bytes())
    helpers = sorted((path.name, hashlib.sha256(path.read_bytes()).hexdigest()) for path in files[1:])
    for name, content in helpers:
        digest.update(f"\0{name}\0{content}".encode())
    return digest.hexdigest()[:16]
