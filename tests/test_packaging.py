"""The package as pip installs it from a wheel (not the editable checkout): every module and built-in plugin is in
it, and the installed copy finds its plugins without the source tree."""

import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "robustbench_dice", "attacks", "defenses")
PACKAGE_DIRS = {
    "robustbench_dice": "robustbench_dice",
    "attacks": "robustbench_dice/attacks",
    "defenses": "robustbench_dice/defenses",
}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the sources (a build in the checkout would leave build/ and egg-info there)."""
    # without build isolation the build uses this environment's packages, so no package index is needed
    for requirement in map(
        Requirement, tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    ):
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed is None or installed not in requirement.specifier:
            pytest.skip(f"building the wheel offline needs {requirement}; this environment has {installed}")
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("dist")
    _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(src))
    (built,) = out.glob("robustbench_dice-*.whl")
    return built


def test_the_wheel_holds_every_module_and_built_in_plugin(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, packaged in PACKAGE_DIRS.items():
        for module in sorted((REPO / folder).glob("*.py")):
            assert f"{packaged}/{module.name}" in names, f"{folder}/{module.name} is missing from {wheel.name}"
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[console_scripts]" in text and "robustbench-dice = robustbench_dice.cli:main" in text


def test_the_installed_wheel_lists_every_built_in_plugin_away_from_the_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    _pip("install", "--no-deps", "--no-index", "--target", str(site), str(wheel))
    # -S: no .pth files, so the editable checkout's import hook is not installed and cannot fill in what the wheel
    # lacks; the dependencies come from this environment's site-packages, after the installed copy
    libraries = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    env = {"PYTHONPATH": os.pathsep.join([str(site), *libraries]), "PATH": "/usr/bin:/bin"}
    probe = (
        "import robustbench_dice, sys; from robustbench_dice.cli import main; "
        "print(robustbench_dice.__file__); sys.exit(main(['list']))"
    )
    done = subprocess.run([sys.executable, "-S", "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    where, *listing = done.stdout.splitlines()
    assert Path(where).is_relative_to(site), f"imported {where}, not the installed wheel"
    listed = {line.split()[0] for line in listing if line.startswith("  ")}
    plugins = {
        name: f"{folder}/{module.name}"
        for folder in ("attacks", "defenses")
        for module in (REPO / folder).glob("*.py")
        for name in _registered_names(module.read_text())
    }
    assert len(plugins) >= len(list((REPO / "defenses").glob("*.py")))  # the name scan found them
    for name, source in plugins.items():
        assert name in listed, f"{name!r} ({source}) is not listed by the installed package"


def _registered_names(source: str) -> list[str]:
    """The ``name = "..."`` of each class a plugin file registers."""
    return [
        line.split("=", 1)[1].strip().strip("\"'") for line in source.splitlines() if line.strip().startswith("name = ")
    ]


def _pip(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "-q", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
