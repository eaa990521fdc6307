"""robustbench-dice: Byzantine robustness benchmarks for decentralized learning, built around DICE."""

from .engine import Simulation, simulate
from .errors import ConfigError, DatasetNotFoundError
from .result import RunResult
from .scenario import Scenario

__all__ = ["ConfigError", "DatasetNotFoundError", "RunResult", "Scenario", "Simulation", "simulate"]
