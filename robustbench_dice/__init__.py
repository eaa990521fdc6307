"""robustbench-dice: Byzantine robustness benchmarks for decentralized learning, built around DICE."""

import importlib.util
import sys
from pathlib import Path

from .cpu_kernels import pin_instruction_set

pin_instruction_set()  # before torch runs any kernel: numbers that do not depend on AVX-512

PLUGIN_PACKAGES = ("attacks", "defenses")  # installed as robustbench_dice.attacks / .defenses


def _adopt_source_plugin_folders() -> None:
    """Make ``robustbench_dice.attacks`` / ``.defenses`` importable when this package is imported from a source
    checkout with no install mapping them (``python -m robustbench_dice`` from the repository root, where the
    checkout shadows a regular install; ``PYTHONPATH=.``). There the plugin folders sit beside the package, not
    inside it, as installs lay them out. They are registered under their installed names, so that plugin classes
    pickle and unpickle the same way either way."""
    root = Path(__file__).resolve().parent.parent
    for folder in PLUGIN_PACKAGES:
        name = f"{__name__}.{folder}"
        init = root / folder / "__init__.py"
        if name in sys.modules or not init.is_file() or importlib.util.find_spec(name) is not None:
            continue
        spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        setattr(sys.modules[__name__], folder, module)


_adopt_source_plugin_folders()

from .engine import Simulation, simulate, versions  # noqa: E402
from .errors import ConfigError, DatasetNotFoundError  # noqa: E402
from .result import RunResult  # noqa: E402
from .scenario import Scenario  # noqa: E402

__version__ = versions()["robustbench_dice"]  # "unknown" in a source tree that was never installed

__all__ = ["__version__", "ConfigError", "DatasetNotFoundError", "RunResult", "Scenario", "Simulation", "simulate"]
