"""robustbench-dice: Byzantine robustness benchmarks for decentralized learning, built around DICE."""

import importlib.metadata

from .engine import Simulation, simulate
from .errors import ConfigError, DatasetNotFoundError
from .result import RunResult
from .scenario import Scenario

try:
    __version__ = importlib.metadata.version("robustbench-dice")
except importlib.metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "unknown"

__all__ = ["__version__", "ConfigError", "DatasetNotFoundError", "RunResult", "Scenario", "Simulation", "simulate"]
