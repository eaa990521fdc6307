"""The Scenario: one validated, serialisable description of a run.

Load one from TOML with :meth:`Scenario.from_toml`, override fields with
:meth:`Scenario.replace`; every field is checked on construction and a bad
value raises :class:`~robustbench_dice.errors.ConfigError` naming the field,
the value and what is accepted.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .datasets import DATASETS
from .errors import ConfigError, check_choice, did_you_mean
from .mixing import MIXING_RULES
from .models import MODELS
from .partition import PARTITIONS
from .topology import TOPOLOGIES

PLACEMENTS = ("random", "degree")
INITS = ("same", "independent")
DEVICES = ("cpu", "cuda", "auto")
DTYPES = ("float32", "float64")


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


def _fields_named_in(catalogue: dict[str, str]) -> dict[str, tuple[str, ...]]:
    """Scenario field -> the catalogue entries that read it, from the ``[field, field]`` that ends each description
    (the same annotation `robustbench-dice list` prints)."""
    readers: dict[str, tuple[str, ...]] = {}
    for name, description in catalogue.items():
        for group in re.findall(r"\[([^]]+)\]$", description):
            for field_name in (f.strip() for f in group.split(",")):
                readers[field_name] = (*readers.get(field_name, ()), name)
    return readers


def _check_pluggable(kind: str, name: str, catalogue: dict[str, str]) -> None:
    """:func:`check_choice` for a dataset, model or topology, which plugins may add (entry points load on demand)."""
    if name in catalogue:
        return
    from .registry import load_builtin_plugins

    load_builtin_plugins()  # installed packages' entry points may register it
    try:
        check_choice(kind, name, catalogue)
    except ConfigError as exc:
        raise ConfigError(
            f"{exc}; {'topologies' if kind == 'topology' else kind + 's'} of your own register with @register_{kind} and load with --plugins DIR (docs/plugins.md)"
        ) from None


@dataclass(frozen=True)
class Scenario:
    """One decentralized-training run: data, model, graph, adversary, defense, optimiser, seed."""

    dataset: str = _f("digits", f"dataset, one of {', '.join(DATASETS)}, or one a plugin registers")
    data_root: str | None = _f(
        None, "folder holding torchvision datasets (mnist, fashion-mnist, cifar10); given to a plugin dataset's loader"
    )
    mnist1d_samples: int = _f(5000, "number of MNIST-1D samples generated (80% train pool, 20% test)")
    partition: str = _f("iid", f"how the train pool is split across nodes: {', '.join(PARTITIONS)}")
    dirichlet_alpha: float = _f(0.5, "concentration of the Dirichlet label partition (smaller = more skewed)")
    shards_per_node: int = _f(2, "label-sorted shards per node for partition 'shards'")
    samples_per_node: int | None = _f(None, "samples each node draws for partition 'replicated'")
    val_fraction: float = _f(0.2, "fraction of each node's data held out as its local validation set z'")
    model: str = _f("mlp", f"model, one of {', '.join(MODELS)}, or one a plugin registers")
    hidden: tuple[int, ...] = _f((64,), "hidden layer widths of the mlp")
    init: str = _f("same", "initial parameters: 'same' for every node or 'independent' per node")
    topology: str = _f("ring", f"communication graph, one of {', '.join(TOPOLOGIES)}, or one a plugin registers")
    edge_probability: float = _f(0.3, "edge probability of the erdos_renyi graph")
    small_world_k: int = _f(4, "each node's ring neighbours in the small_world graph (even)")
    small_world_p: float = _f(0.2, "rewiring probability of the small_world graph")
    torus_rows: int | None = _f(None, "rows of the torus (default: the most square factorisation)")
    adjacency_file: str | None = _f(None, "adjacency matrix (.npy/.csv/.txt, row = receiver) for topology 'file'")
    mixing: str = _f("metropolis_hastings", f"mixing rule, one of {', '.join(MIXING_RULES)}")
    nodes: int = _f(16, "number of nodes N")
    byzantine: int = _f(0, "number of Byzantine nodes (or use byzantine_fraction)")
    byzantine_fraction: float | None = _f(None, "fraction of Byzantine nodes, rounded down; overrides byzantine")
    byzantine_placement: str = _f("random", "where Byzantine nodes sit: 'random' or 'degree' (highest first)")
    attack: str = _f("none", "attack plugin name")
    attack_params: dict[str, Any] = _f({}, "parameters of the attack plugin")
    defense: str = _f("gossip", "defense plugin name")
    defense_params: dict[str, Any] = _f(
        {}, "parameters of the defense plugin; its Byzantine bound may be 'auto' (docs/suites.md)"
    )
    rounds: int = _f(200, "communication rounds T (one local step + one gossip each)")
    batch_size: int = _f(32, "minibatch size of each node's local step")
    lr: float = _f(0.1, "learning rate eta")
    momentum: float = _f(0.9, "heavy-ball momentum of the local SGD step (0 = plain SGD)")
    weight_decay: float = _f(0.0, "L2 weight decay added to the local gradient")
    eval_every: int = _f(10, "evaluate test accuracy every this many rounds (and at the end)")
    seed: int = _f(0, "seed of everything random in the run")
    dtype: str = _f("float32", "floating point precision of models and data: 'float32' or 'float64'")
    track_influence: bool = _f(False, "accumulate DICE proximal influence Prox(k -> j) of every edge on z'_j")
    device: str = _f("cpu", "'cpu', 'cuda' or 'auto' (cuda when available); CUDA_VISIBLE_DEVICES picks the GPU")

    def __post_init__(self) -> None:
        # copies of what they were given; anything else is left for _check_types to name
        if isinstance(self.hidden, (list, tuple)):
            object.__setattr__(self, "hidden", tuple(self.hidden))
        for name in ("attack_params", "defense_params"):
            if isinstance(getattr(self, name), Mapping):
                object.__setattr__(self, name, dict(getattr(self, name)))
        self._check_types()
        from .registry import canonical_parameters

        object.__setattr__(self, "attack_params", canonical_parameters("attack", self.attack, self.attack_params))
        object.__setattr__(self, "defense_params", canonical_parameters("defense", self.defense, self.defense_params))
        self._check_values()

    # -- validation -------------------------------------------------------
    def _check_types(self) -> None:
        for name, ann in _annotations():
            value = getattr(self, name)
            if value is None and "None" in ann:
                continue
            if ann.startswith("bool") and not isinstance(value, bool):
                raise ConfigError(f"{name} must be true or false, got {value!r}")
            if ann.startswith("int") and not (isinstance(value, int) and not isinstance(value, bool)):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
            if ann.startswith("float") and not (isinstance(value, (int, float)) and not isinstance(value, bool)):
                raise ConfigError(f"{name} must be a number, got {value!r}")
            if ann.startswith("float") and isinstance(value, int):
                object.__setattr__(self, name, float(value))  # lr = 1 and lr = 1.0 are one run, with one store key
            if ann.startswith("str") and not isinstance(value, str):
                raise ConfigError(f"{name} must be a string, got {value!r}")
            if ann.startswith("dict") and not isinstance(value, dict):
                raise ConfigError(f"{name} must be a table of parameters, got {value!r}")
        if not isinstance(self.hidden, tuple) or not all(
            isinstance(h, int) and not isinstance(h, bool) for h in self.hidden
        ):
            shown = list(self.hidden) if isinstance(self.hidden, tuple) else self.hidden
            raise ConfigError(f"hidden must be a list of integers, got {shown!r}")

    def _check_values(self) -> None:
        _check_pluggable("dataset", self.dataset, DATASETS)
        _check_pluggable("model", self.model, MODELS)
        check_choice("partition", self.partition, PARTITIONS)
        _check_pluggable("topology", self.topology, TOPOLOGIES)
        check_choice("mixing rule", self.mixing, MIXING_RULES)
        check_choice("byzantine_placement", self.byzantine_placement, PLACEMENTS)
        check_choice("init", self.init, INITS)
        check_choice("device", self.device, DEVICES)
        check_choice("dtype", self.dtype, DTYPES)
        if self.nodes < 2:
            raise ConfigError(f"nodes must be >= 2, got {self.nodes}")
        if any(width <= 0 for width in self.hidden):
            raise ConfigError(f"hidden layer widths must be positive, got {list(self.hidden)}")
        if not self.hidden and self.model == "mlp":
            raise ConfigError("hidden must list at least one layer width for model 'mlp', got []")
        if self.byzantine_fraction is not None and not 0.0 <= self.byzantine_fraction < 1.0:
            raise ConfigError(f"byzantine_fraction must be in [0, 1), got {self.byzantine_fraction}")
        if not 0 <= self.n_byzantine < self.nodes:
            raise ConfigError(
                f"byzantine must satisfy 0 <= byzantine < nodes={self.nodes}, got {self.n_byzantine}"
                " (at least one honest node is needed)"
            )
        for name in ("rounds", "batch_size", "eval_every"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not 0 < self.lr < math.inf:
            raise ConfigError(f"lr must be finite and > 0, got {self.lr}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0 <= self.weight_decay < math.inf:
            raise ConfigError(f"weight_decay must be finite and >= 0, got {self.weight_decay}")
        if not 0 < self.dirichlet_alpha < math.inf:
            raise ConfigError(
                f"dirichlet_alpha must be finite and > 0, got {self.dirichlet_alpha}"
                " (its limit alpha -> inf is partition='iid')"
            )
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.track_influence and self.val_fraction == 0:
            raise ConfigError(
                "track_influence measures influence on each node's validation set z', but val_fraction=0 holds"
                " none out; set val_fraction > 0 (default 0.2)"
            )
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")

    @property
    def n_byzantine(self) -> int:
        if self.byzantine_fraction is not None:
            return int(self.byzantine_fraction * self.nodes)
        return self.byzantine

    # -- (de)serialisation ------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in _fields()]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scenario:
        names = set(cls.field_names())
        unknown = [k for k in data if k not in names]
        if unknown:
            key = unknown[0]
            raise ConfigError(f"unknown scenario key {key!r}{did_you_mean(key, cls.field_names())}")
        return cls(**data)

    @classmethod
    def from_toml(cls, path: str | Path) -> Scenario:
        """Read a scenario from TOML: top-level keys are fields; ``[attack_params]`` / ``[defense_params]`` tables."""
        path = Path(path)
        return cls.from_text(read_config(path, "TOML"), "toml", path)

    @classmethod
    def from_text(cls, text: str, kind: str, path: Path | None = None) -> Scenario:
        """A scenario from the text of a config: ``kind`` 'toml' (as :meth:`from_toml`) or 'json' (as
        :meth:`from_file`); ``path`` is the file it came from, for errors (None: standard input)."""
        check_choice("config kind", kind, ("toml", "json"))
        where = repr(str(path)) if path is not None else "standard input"
        if kind == "json":
            return cls._from_json(text, where)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"malformed TOML in {where}: {exc}") from exc
        if "scenario" in data and isinstance(data["scenario"], dict):
            outside = [key for key in data if key != "scenario"]
            if outside:  # nothing would read them: `rounds = 5` above [scenario] would run the default 200 rounds
                raise ConfigError(
                    f"{where} has {outside[0]!r} outside its [scenario] table, where nothing reads it:"
                    " put every field under [scenario] (and its parameters under [scenario.attack_params], ...),"
                    " or leave the [scenario] header out"
                )
            data = data["scenario"]
        if "suite" in data and isinstance(data["suite"], dict):
            raise ConfigError(
                f"{where} is a suite file (a [suite] table), not a scenario: run it with"
                f" `robustbench-dice run --suite {path if path is not None else 'FILE'}`"
            )
        if "byzantine" in data and "byzantine_fraction" in data:  # as the flags: the fraction would win, silently
            raise ConfigError(
                f"{where} sets byzantine = {data['byzantine']!r} and byzantine_fraction ="
                f" {data['byzantine_fraction']!r}: the fraction overrides the count; give one or the other"
            )
        return cls.from_dict(data)

    def unused_fields(self) -> list[str]:
        """Fields set away from their defaults that this scenario's choices never read, each with what reads it
        (``--edge-probability`` on a ring, ``--samples-per-node`` without partition 'replicated', ...).

        Not an error: a suite's ``[suite.base]`` legitimately sets fields that only some of its cells use.
        """
        readers: dict[str, tuple[str, tuple[str, ...]]] = {  # field -> (the choice, the values that read it)
            "dirichlet_alpha": ("partition", ("dirichlet",)),
            "shards_per_node": ("partition", ("shards",)),
            "samples_per_node": ("partition", ("replicated",)),
        }
        for choice, catalogue in (("dataset", DATASETS), ("model", MODELS), ("topology", TOPOLOGIES)):
            for name, users in _fields_named_in(catalogue).items():
                readers[name] = (choice, users)
        defaults = Scenario()
        unused = []
        for f in fields(self):  # in field order
            if f.name not in readers:
                continue
            choice, users = readers[f.name]
            if getattr(self, f.name) != getattr(defaults, f.name) and getattr(self, choice) not in users:
                unused.append(
                    f"{f.name} (read only with {choice} {' / '.join(users)}; this run has {getattr(self, choice)})"
                )
        return unused

    @classmethod
    def from_file(cls, path: str | Path) -> Scenario:
        """A scenario from a TOML file, or from JSON: a scenario object, or anything holding one under
        ``"scenario"`` (a stored record in ``results/store/``, a ``simulate --json`` result), to re-run it."""
        path = Path(path)
        if path.suffix.lower() != ".json":
            return cls.from_toml(path)
        return cls._from_json(read_config(path, "JSON"), repr(str(path)))

    @classmethod
    def _from_json(cls, text: str, where: str) -> Scenario:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"malformed JSON in {where}: {exc}") from exc
        if isinstance(data, dict) and isinstance(data.get("scenario"), dict):
            data = data["scenario"]
        if not isinstance(data, dict):
            raise ConfigError(f"{where} holds no scenario (a JSON object of scenario fields)")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """Every field, in declaration order, as JSON-ready values: what ``dataclasses.asdict`` gives (the store's
        keys hash it), written out because reading a 36,000-run store calls it for every run."""
        out = {f.name: getattr(self, f.name) for f in _fields()}
        out["hidden"] = list(self.hidden)
        out["attack_params"] = copy.deepcopy(self.attack_params)
        out["defense_params"] = copy.deepcopy(self.defense_params)
        return out

    def replace(self, **changes: Any) -> Scenario:
        return self.from_dict({**self.to_dict(), **changes})


def read_config(path: Path, kind: str) -> str:
    """The text of the config file ``path``; ConfigError when it is missing or not text."""
    try:
        return path.read_text()
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {str(path)!r} does not exist") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"malformed {kind} in {str(path)!r}: {exc}") from exc


@functools.cache
def _fields() -> tuple[dataclasses.Field[Any], ...]:
    """``dataclasses.fields(Scenario)``, computed once: it is called for every scenario built or read."""
    return fields(Scenario)


@functools.cache
def _annotations() -> tuple[tuple[str, str], ...]:
    """``(name, annotation text)`` of every field, for the type checks of every scenario built or read."""
    return tuple((f.name, str(f.type)) for f in _fields())


def _parse_literal(text: str) -> Any:
    """A TOML literal (number, bool, string, array); bare words are strings. Never eval."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_param_pairs(pairs: Iterable[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` strings (``--attack-param`` and the like) as a parameter dict; ConfigError naming ``flag``."""
    out: dict[str, Any] = {}
    given: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ConfigError(f"{flag} expects KEY=VALUE, got {pair!r}")
        if key in out:  # the last would win unseen, as a TOML table's repeated key would not
            raise ConfigError(f"{flag} sets {key!r} twice ({key}={given[key]} and {key}={value}); give it once")
        out[key], given[key] = _parse_literal(value), value
    return out
