"""Suites: grids of scenarios from TOML, and the built-in ``quick`` and ``full`` suites.

A suite file::

    [suite]
    datasets = ["digits"]
    models = ["mlp"]
    topologies = ["ring", "torus"]
    attacks = ["none", "label_flip", { name = "gradient_scale", params = { scale = -2.0 } }]
    defenses = ["gossip", "dice_prune", { name = "dice_prune", params = { trust = "reported" } }]
    nodes = [16]
    byzantine = [3]
    seeds = [0, 1, 2]

    [suite.base]        # any Scenario field, applied to every cell
    rounds = 200

Cells are the product of the lists, in the order dataset, model, nodes,
byzantine, partition, topology, attack, defense, seed. Everything is checked
before anything runs: unknown keys and plugins (with the closest valid name),
parameter names and types, and every resulting Scenario. ``[suite.base]`` may
not set a field the grid decides (``GRID_FIELDS``). User guide: docs/suites.md.
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError, did_you_mean
from .plugins import AUTO
from .registry import ATTACKS, DEFENSES, build_attack, build_defense, load_builtin_plugins, non_default_parameters
from .scenario import Scenario, read_config

GRID_KEYS = ("datasets", "models", "nodes", "byzantine", "partitions", "topologies", "attacks", "defenses", "seeds")
GRID_FIELDS = {  # Scenario field -> the grid key that sets it in every cell (so [suite.base] cannot)
    "dataset": "datasets",
    "model": "models",
    "nodes": "nodes",
    "byzantine": "byzantine",
    "partition": "partitions",
    "topology": "topologies",
    "attack": "attacks",
    "attack_params": "attacks",
    "defense": "defenses",
    "defense_params": "defenses",
    "seed": "seeds",
}
SUITE_KEYS = (*GRID_KEYS, "name", "base", "description")
# the axes `run --only KEY=VALUES` can cut, by the summary's column names
ONLY_KEYS = {key: grid for key, grid in GRID_FIELDS.items() if not key.endswith("_params")}


@dataclass(frozen=True)
class PluginSpec:
    name: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if not self.params:
            return self.name
        return f"{self.name}(" + ", ".join(f"{k}={v}" for k, v in sorted(self.params.items())) + ")"


@dataclass(frozen=True)
class Suite:
    name: str
    datasets: tuple[str, ...] = ("digits",)
    models: tuple[str, ...] = ("mlp",)
    nodes: tuple[int, ...] = (16,)
    byzantine: tuple[int, ...] = (3,)
    partitions: tuple[str, ...] = ("iid",)
    topologies: tuple[str, ...] = ("ring",)
    attacks: tuple[PluginSpec, ...] = (PluginSpec("none"),)
    defenses: tuple[PluginSpec, ...] = (PluginSpec("gossip"),)
    seeds: tuple[int, ...] = (0,)
    base: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def scenarios(self) -> list[Scenario]:
        cells = []
        for dataset, model, n, b, partition, topology, attack, defense, seed in itertools.product(
            self.datasets,
            self.models,
            self.nodes,
            self.byzantine,
            self.partitions,
            self.topologies,
            self.attacks,
            self.defenses,
            self.seeds,
        ):
            values = {
                **self.base,
                "dataset": dataset,
                "model": model,
                "nodes": n,
                "byzantine": b,
                "partition": partition,
                "topology": topology,
                "attack": attack.name,
                "attack_params": attack.params,
                "defense": defense.name,
                "defense_params": defense.params,
                "seed": seed,
            }
            cells.append(Scenario.from_dict(values))
        return cells

    def validate(self) -> None:
        """Check plugins and every cell before anything runs."""
        load_builtin_plugins()
        for spec in self.attacks:
            build_attack(spec.name, spec.params)
        for spec in self.defenses:
            build_defense(spec.name, spec.params)
        self._check_no_repeats()
        if self.base.get("byzantine_fraction") is not None and len(self.byzantine) > 1:
            raise ConfigError(
                f"[suite.base] sets byzantine_fraction = {self.base['byzantine_fraction']}, which overrides the"
                f" byzantine axis {list(self.byzantine)}: its cells would be the same runs; give one or the other"
            )
        self._check_graphs(self.scenarios())

    @staticmethod
    def _check_graphs(cells: list[Scenario]) -> None:
        """Each distinct graph the cells ask for, built now: a torus on 7 nodes was a failed run per cell, found
        only once the suite ran (graphs of 16 nodes build in milliseconds, and a suite asks for few)."""
        from .setup import GRAPH_FIELDS, scenario_topology

        seen: set[tuple[object, ...]] = set()
        for cell in cells:
            graph = tuple(getattr(cell, key) for key in GRAPH_FIELDS)
            if graph in seen:
                continue
            seen.add(graph)
            try:
                scenario_topology(cell)
            except ConfigError as error:
                raise ConfigError(f"the cells on topology {cell.topology!r} with {cell.nodes} nodes: {error}") from None

    def _check_no_repeats(self) -> None:
        """A value listed twice on one axis would make every run of its cells twice, and count them twice."""
        for key in GRID_KEYS:
            values = getattr(self, key)
            # plugins as their runs see them: std = 1 and std = 1.0 are one run, and so are a plugin with its
            # default parameters spelled out and the plugin alone
            comparable = [
                (v.name, non_default_parameters(key[:-1], v.name, v.params)) if isinstance(v, PluginSpec) else v
                for v in values
            ]
            for i, value in enumerate(comparable):
                if value in comparable[:i]:
                    first = values[comparable.index(value)]
                    shown = [v.label if isinstance(v, PluginSpec) else repr(v) for v in (first, values[i])]
                    listed = (
                        f"{shown[0]} twice" if shown[0] == shown[1] else f"{shown[0]} and {shown[1]}, the same runs"
                    )
                    raise ConfigError(f"suite key {key!r} lists {listed}: they would be made, and counted, twice")


def _plugin_specs(values: list[Any], what: str) -> tuple[PluginSpec, ...]:
    specs = []
    for value in values:
        if isinstance(value, str):
            specs.append(PluginSpec(value))
        elif isinstance(value, dict) and "name" in value and set(value) <= {"name", "params"}:
            params = value.get("params", {})
            if not isinstance(params, dict):
                raise ConfigError(f"{what} entry {value['name']!r}: params must be a table, got {params!r}")
            specs.append(PluginSpec(str(value["name"]), dict(params)))
        else:
            raise ConfigError(f"{what} entries are names or {{ name = ..., params = {{...}} }} tables, got {value!r}")
    return tuple(specs)


def suite_from_dict(data: dict[str, Any], name: str) -> Suite:
    unknown = [k for k in data if k not in SUITE_KEYS]
    if unknown:
        raise ConfigError(
            f"unknown suite key {unknown[0]!r}{did_you_mean(unknown[0], SUITE_KEYS)}; valid: {', '.join(SUITE_KEYS)}"
        )
    for key in ("name", "description"):
        if not isinstance(data.get(key, ""), str):
            raise ConfigError(f"suite key {key!r} must be a string, got {data[key]!r}")
    if "name" in data and not data["name"].strip():
        raise ConfigError(f"suite key 'name' must not be empty (leave it out for the file's name, {name!r})")
    kwargs: dict[str, Any] = {"name": data.get("name", name), "description": data.get("description", "")}
    for key in GRID_KEYS:
        if key not in data:
            continue
        values = data[key]
        if not isinstance(values, list) or not values:
            raise ConfigError(f"suite key {key!r} must be a non-empty list, got {values!r}")
        if key in ("attacks", "defenses"):
            kwargs[key] = _plugin_specs(values, key)
        else:
            kwargs[key] = tuple(values)
    base = data.get("base", {})
    if not isinstance(base, dict):
        raise ConfigError(f"suite key 'base' must be a table of scenario fields, got {base!r}")
    gridded = [k for k in base if k in GRID_FIELDS]
    if gridded:  # every cell would overwrite it with the grid's value (its default when the key is absent)
        field_name = gridded[0]
        raise ConfigError(
            f"[suite.base] sets {field_name!r}, which the grid decides for every cell: give it as"
            f" {GRID_FIELDS[field_name]} = [...] under [suite] instead"
        )
    kwargs["base"] = dict(base)
    suite = Suite(**kwargs)
    suite.validate()
    return suite


def load_suite(name_or_path: str) -> Suite:
    """A built-in suite by name, or a suite TOML file."""
    if name_or_path in BUILTIN_SUITES:
        suite = BUILTIN_SUITES[name_or_path]()
        suite.validate()
        return suite
    path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError(
            f"no built-in suite or file named {name_or_path!r}; built-in: {', '.join(BUILTIN_SUITES)}, paper"
        )
    try:
        data = tomllib.loads(read_config(path, "TOML"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"malformed TOML in {str(path)!r}: {exc}") from exc
    scenario_keys = {*Scenario.field_names(), "scenario"}
    if "suite" not in data and set(data) - set(SUITE_KEYS) and set(data) <= scenario_keys:
        raise ConfigError(
            f"{str(path)!r} is a scenario file (its keys are Scenario fields), not a suite: run it with"
            f" `robustbench-dice simulate --config {path}`; a suite's grid is a [suite] table (docs/suites.md)"
        )
    if "suite" not in data:
        return suite_from_dict(data, path.stem)
    outside = [key for key in data if key != "suite"]
    if outside:  # tomllib keeps them, and nothing would read them: a [base] meant as [suite.base] would be ignored
        key = outside[0]
        if key in SUITE_KEYS:
            hint = f"; did you mean [suite.{key}]?"
        elif key in Scenario.field_names():
            hint = "; a scenario field for every cell goes under [suite.base]"
        else:
            hint = ""
        raise ConfigError(
            f"{str(path)!r} has {key!r} outside its [suite] table, where nothing reads it{hint}"
            " (every suite key goes under [suite], docs/suites.md)"
        )
    return suite_from_dict(data["suite"], path.stem)


def quick() -> Suite:
    """The default suite: minutes on a laptop CPU."""
    return Suite(
        name="quick",
        description="digits, MLP, 16 nodes, 3 Byzantine at random; 4 topologies x 4 attacks x 4 defenses x 3 seeds",
        topologies=("ring", "torus", "exponential", "erdos_renyi"),
        attacks=tuple(PluginSpec(a) for a in ("none", "label_flip", "gradient_scale", "free_ride")),
        defenses=tuple(PluginSpec(d) for d in ("gossip", "dice_prune", "krum", "median")),
        seeds=(0, 1, 2),
        base={"rounds": 200, "eval_every": 20},
    )


def full() -> Suite:
    """Every registered attack and defense, more topologies, Byzantine fractions, non-iid data, MNIST-1D.

    A defense with a Byzantine bound (Krum's ``f``) gets ``"auto"`` for it: in each run, the most Byzantine
    in-neighbours an honest node has, the bound these rules assume known.
    """
    load_builtin_plugins()
    defenses = tuple(
        PluginSpec(name, {cls.byzantine_bound: AUTO}) if cls.byzantine_bound else PluginSpec(name)
        for name, cls in sorted(DEFENSES.items())
    )
    return Suite(
        name="full",
        description="every attack x every defense; 7 topologies; 1, 2 or 4 Byzantine of 16; iid and Dirichlet(0.5); digits, MNIST-1D",
        datasets=("digits", "mnist1d"),
        byzantine=(1, 2, 4),
        partitions=("iid", "dirichlet"),
        topologies=("ring", "torus", "exponential", "one_peer_exponential", "erdos_renyi", "small_world", "complete"),
        attacks=tuple(PluginSpec(a) for a in sorted(ATTACKS)),
        defenses=defenses,
        seeds=(0, 1, 2),
        base={"rounds": 200, "eval_every": 20},
    )


BUILTIN_SUITES = {"quick": quick, "full": full}


def parse_only(items: list[str]) -> dict[str, tuple[str, ...]]:
    """``["defense=ubar,krum", "seed=0"]`` -> ``{"defense": ("ubar", "krum"), "seed": ("0",)}``; a key given twice
    takes the values of both. ConfigError for an item that is not KEY=VALUES or a key that is not an axis."""
    only: dict[str, tuple[str, ...]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        listed = tuple(v.strip() for v in values.split(",") if v.strip())
        if not sep or not listed:
            raise ConfigError(f"--only takes KEY=VALUE[,VALUE...], got {item!r}")
        if key not in ONLY_KEYS:
            raise ConfigError(
                f"--only: unknown key {key!r}{did_you_mean(key, ONLY_KEYS)}; keys: {', '.join(ONLY_KEYS)}"
            )
        only[key] = only.get(key, ()) + listed
    return only


def _axis_label(value: Any) -> str:
    return value.label if isinstance(value, PluginSpec) else str(value)


def _matches(value: Any, listed: tuple[str, ...]) -> bool:
    """A plugin matches by its name (every variant) or its label (that variant, e.g. ``krum(f=auto)``)."""
    return _axis_label(value) in listed or (isinstance(value, PluginSpec) and value.name in listed)


def narrow(suites: list[Suite], only: dict[str, tuple[str, ...]]) -> list[Suite]:
    """``suites`` with each axis named in ``only`` cut to the values listed; the other axes stay whole. ConfigError
    for a listed value that no suite has on that axis, naming the values they have."""
    for key, listed in only.items():
        axis = [v for suite in suites for v in getattr(suite, ONLY_KEYS[key])]
        unknown = [v for v in listed if not any(_matches(a, (v,)) for a in axis)]
        if unknown:
            have = ", ".join(dict.fromkeys(_axis_label(a) for a in axis))
            raise ConfigError(
                f"--only {key}={','.join(unknown)} matches nothing in this suite; its {key} values: {have}"
            )
    narrowed = []
    for suite in suites:
        cut: dict[str, Any] = {
            ONLY_KEYS[key]: tuple(v for v in getattr(suite, ONLY_KEYS[key]) if _matches(v, listed))
            for key, listed in only.items()
        }
        narrowed.append(replace(suite, **cut))
    return narrowed
