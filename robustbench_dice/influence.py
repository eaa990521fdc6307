"""Influence measurements on real training runs: record windows from the engine, then estimate and re-run."""

from __future__ import annotations

import torch

from .dice import Probe, Window
from .engine import RoundRecord, Simulation
from .errors import ConfigError
from .scenario import Scenario


def record_windows(scenario: Scenario, rounds: list[int], horizon: int) -> tuple[Simulation, list[Window]]:
    """Train ``scenario`` once and keep, for each round t in ``rounds``, the inputs of rounds t .. t+horizon-1."""
    if scenario.momentum != 0.0:
        raise ConfigError("DICE windows need plain SGD (momentum=0): the estimate linearises an SGD step")
    if scenario.attack != "none" or scenario.defense != "gossip":
        raise ConfigError("DICE windows are recorded on clean gossip training (attack 'none', defense 'gossip')")
    last = max(rounds) + horizon
    if last > scenario.rounds:
        raise ConfigError(f"probe round {max(rounds)} + horizon {horizon} exceeds rounds={scenario.rounds}")
    records: dict[int, RoundRecord] = {}
    wanted = {t + s for t in rounds for s in range(horizon)}

    def keep(record: RoundRecord) -> None:
        if record.round in wanted:
            records[record.round] = record

    sim = Simulation.from_scenario(scenario)
    sim.observer = keep
    sim.run()
    windows = []
    for t in rounds:
        span = [records[t + s] for s in range(horizon)]
        windows.append(
            Window(
                round=t,
                theta=span[0].theta,
                batches=tuple((r.x, r.y) for r in span),
                weights=tuple(r.weights.to_dense() if r.weights.layout != torch.strided else r.weights for r in span),
                lr=scenario.lr,
                weight_decay=scenario.weight_decay,
            )
        )
    return sim, windows


def probe_from_test_set(sim: Simulation, size: int | None = None) -> Probe:
    """The global held-out test set (or its first ``size`` samples) as the probe set z'."""
    ds = sim.setup.dataset
    x, y = ds.x_test, ds.y_test
    if size is not None:
        x, y = x[:size], y[:size]
    return Probe(x.to(sim.setup.device, sim.setup.dtype), y.to(sim.setup.device))
