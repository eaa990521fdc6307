"""The generic conformance suite every plugin (attack, defense, dataset, model, topology) must pass.

Each check takes a registered plugin class, runs it through the real engine
on small scenarios (6 nodes on a ring and on a complete graph, digits, a few
rounds) and raises :class:`AssertionError` with a readable message when the
plugin breaks the contract in :mod:`robustbench_dice.plugins`. Dataset plugins
(:func:`run_dataset_conformance`) are loaded twice and trained on by every
model that takes their inputs; model plugins (:func:`run_model_conformance`)
must batch over nodes exactly, train reproducibly and give forward-over-reverse
Hessian-vector products that agree with double backward; topology plugins
(:func:`run_topology_conformance`) must give connected, seeded graphs that a
run trains on. ``tests/`` runs every check on every registered plugin;
``robustbench-dice check FILE.py`` runs them on the plugins one file registers.
"""

from __future__ import annotations

import dataclasses
import inspect
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .datasets import Dataset, load_dataset
from .engine import Simulation, simulate
from .errors import ConfigError, DatasetNotFoundError
from .functional import per_node_hvp, per_node_loss
from .models import build_model
from .plugins import AUTO, Attack, AttackView, CellInfo, Defense, DefenseView, Plugin
from .registry import parameters
from .scenario import Scenario
from .topology import build_topology

TOPOLOGIES = ("ring", "complete")
FORBIDDEN_WORDS = ("byz", "honest", "malicious", "attacker")


@dataclass(frozen=True)
class CheckResult:
    plugin: str
    check: str
    passed: bool
    detail: str = ""
    skipped: bool = False  # the check could not run here (``detail`` says why); it neither passed nor failed


class CheckSkipped(Exception):
    """Raised by a check that cannot run on this machine; its message is the reason the user sees."""


def _require_cuda() -> None:
    if not torch.cuda.is_available():
        raise CheckSkipped("no CUDA device on this machine")


def _numbers_close(cpu: Any, cuda: Any, where: str, rtol: float, atol: float) -> None:
    """Two results' JSON data compared recursively: numbers to rtol/atol (NaN equals NaN), everything else exactly."""
    if isinstance(cpu, dict):
        assert isinstance(cuda, dict) and cpu.keys() == cuda.keys(), f"{where}: different fields"
        for key in cpu:
            _numbers_close(cpu[key], cuda[key], f"{where}.{key}", rtol, atol)
    elif isinstance(cpu, list | tuple):
        assert isinstance(cuda, list | tuple) and len(cpu) == len(cuda), f"{where}: different lengths"
        for i, (a, b) in enumerate(zip(cpu, cuda, strict=True)):
            _numbers_close(a, b, f"{where}[{i}]", rtol, atol)
    elif isinstance(cpu, float) and isinstance(cuda, float):
        same = (np.isnan(cpu) and np.isnan(cuda)) or bool(np.isclose(cpu, cuda, rtol=rtol, atol=atol))
        assert same, f"{where}: {cpu!r} on the CPU, {cuda!r} on CUDA"
    else:
        assert cpu == cuda, f"{where}: {cpu!r} on the CPU, {cuda!r} on CUDA"


# the run data that differs between devices by design: the scenario's device field, timings, the versions (GPU name)
DEVICE_FIELDS = ("scenario", "timings", "versions")


def assert_same_run_on_cuda(scenario: Scenario, rtol: float = 1e-6, atol: float = 1e-9) -> str:
    """Run ``scenario`` in float64 on the CPU and on CUDA and require the same numbers: final parameters and every
    number of the result. Every random draw comes from the same CPU generators on both, so only rounding may differ;
    a tensor made on the CPU, a generator on the wrong device or an operation CUDA orders differently shows as a
    difference far above it."""
    runs = []
    for device in ("cpu", "cuda"):
        sim = Simulation.from_scenario(dataclasses.replace(scenario, device=device, dtype="float64"))
        runs.append((sim, sim.run()))
    (cpu_sim, cpu_result), (cuda_sim, cuda_result) = runs
    assert cpu_result.status == "ok", f"status {cpu_result.status!r} on the CPU ({cpu_result.reason})"
    assert cuda_result.status == "ok", f"status {cuda_result.status!r} on CUDA ({cuda_result.reason})"
    assert cpu_sim.final_theta is not None and cuda_sim.final_theta is not None
    assert cuda_sim.final_theta.device.type == "cuda", "the final parameters are not on the GPU"
    cpu_theta, cuda_theta = cpu_sim.final_theta, cuda_sim.final_theta.cpu()
    # NaN == NaN here, as in _numbers_close and same_seed_same_result: NaN models fail well-formedness, not this
    both_nan = cpu_theta.isnan() & cuda_theta.isnan()
    assert torch.equal(cpu_theta.isnan(), cuda_theta.isnan()), "final parameters are NaN in different places"
    gap = float((cuda_theta - cpu_theta).masked_fill(both_nan, 0.0).abs().max())
    scale = float(cpu_theta.masked_fill(both_nan, 0.0).abs().max())
    assert gap <= atol + rtol * scale, f"final parameters differ by {gap:.2e} between the CPU and CUDA"
    cpu_data, cuda_data = cpu_result.to_dict(), cuda_result.to_dict()
    for key in DEVICE_FIELDS:
        cpu_data.pop(key), cuda_data.pop(key)
    _numbers_close(cpu_data, cuda_data, "result", rtol, atol)
    return f"{scenario.topology}, float64: largest parameter difference {gap:.1e}"


def _scenario(kind: str, name: str, topology: str, **changes: Any) -> Scenario:
    base = dict(nodes=6, rounds=3, batch_size=8, eval_every=3, topology=topology, seed=0)
    if kind == "attack":
        base.update(attack=name, byzantine=2, defense="gossip")
    else:
        base.update(defense=name, byzantine=1, attack="gaussian", attack_params={"std": 10.0})
    base.update(changes)
    return Scenario(**base)  # type: ignore[arg-type]


def _runnable(kind: str, name: str) -> list[Simulation]:
    """Fresh simulations on each topology that the plugin does not decline."""
    sims = []
    for topology in TOPOLOGIES:
        sim = Simulation.from_scenario(_scenario(kind, name, topology))
        if sim.skip_reason() is None:
            sims.append(sim)
    assert sims, f"{name!r} declines every conformance cell ({', '.join(TOPOLOGIES)}); it must run on at least one"
    return sims


def builds_with_defaults(kind: str, cls: type[Plugin]) -> str:
    assert isinstance(cls.name, str) and cls.name, "plugin needs a non-empty class attribute `name`"
    assert (cls.__doc__ or "").strip(), "plugin needs a docstring: a one-line description and its source paper"
    assert dataclasses.is_dataclass(cls), "plugin must be a @dataclass so its parameters are typed fields"
    for f in parameters(cls):
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        assert has_default, f"parameter {f.name!r} has no default"
    cls()
    return f"parameters: {', '.join(f.name for f in parameters(cls)) or '(none)'}"


def runs_on_small_graphs(kind: str, cls: type[Plugin]) -> str:
    notes = []
    ran = 0
    for topology in TOPOLOGIES:
        result = simulate(_scenario(kind, cls.name, topology))
        if result.status == "skipped":
            assert result.reason and result.reason.strip(), "a skipped cell must give a reason"
            notes.append(f"{topology}: skipped ({result.reason})")
        else:
            assert result.status == "ok", f"{topology}: status {result.status!r}"
            assert result.final_accuracy_mean is not None
            ran += 1
            notes.append(f"{topology}: ok")
    assert ran, "declined every conformance cell"
    return "; ".join(notes)


def same_seed_same_result(kind: str, cls: type[Plugin]) -> str:
    sim_a, sim_b = _runnable(kind, cls.name)[0], None
    scenario = sim_a.setup.scenario
    result_a = sim_a.run()
    theta_a = sim_a.final_theta
    sim_b = Simulation.from_scenario(scenario)
    result_b = sim_b.run()
    result_again = sim_a.run()  # the same instances once more: state kept across rounds must not leak into a new run
    for (theta, result), what in (
        ((sim_b.final_theta, result_b), "two runs with the same seed"),
        ((sim_a.final_theta, result_again), "running the same Simulation twice"),
    ):
        assert theta_a is not None and theta is not None
        # NaN == NaN here: a plugin that produces NaN fails well-formedness, not reproducibility
        same_theta = torch.allclose(theta_a, theta, rtol=0.0, atol=0.0, equal_nan=True)
        assert same_theta, (
            f"{what} gave different parameters (draw random numbers from view.generator, not torch's global one,"
            " and reset state kept across rounds at the start of a run)"
        )
        same_outputs = repr((result_a.curve, result_a.suspicion)) == repr((result.curve, result.suspicion))
        assert same_outputs, f"{what} gave different accuracy curves or suspicion scores"
    return f"checked on {scenario.topology}, and the same Simulation run twice"


def _run_spying_attack(sim: Simulation) -> None:
    attack = sim.attack
    labels_before = sim.setup.data.train_labels.clone()
    seen: list[AttackView] = []
    original_messages, original_setup = attack.messages, attack.setup

    def spy_setup(context: Any) -> None:
        original_setup(context)
        changed = (context.train_labels != labels_before).any(dim=1).nonzero().flatten().tolist()
        outside = sorted(set(changed) - set(context.byzantine.tolist()))
        assert not outside, f"setup changed the training labels of honest nodes {outside}"

    def spy_messages(view: AttackView) -> torch.Tensor:
        before = {k: getattr(view, k).clone() for k in ("theta", "half", "delta")}
        sent = original_messages(view)
        for k, value in before.items():
            assert torch.equal(getattr(view, k), value), f"messages() modified view.{k} in place"
        expected = (view.byzantine.numel(), view.theta.shape[1])
        assert tuple(sent.shape) == expected, f"messages() returned shape {tuple(sent.shape)}, expected {expected}"
        assert torch.isfinite(sent).all(), "messages() returned non-finite values"
        seen.append(view)
        return sent

    attack.setup, attack.messages = spy_setup, spy_messages  # type: ignore[method-assign]
    sim.run()
    assert seen, "the attack was never asked for messages"


def attack_changes_only_byzantine_rows(kind: str, cls: type[Plugin]) -> str:
    assert kind == "attack"
    for sim in _runnable(kind, cls.name):
        _run_spying_attack(sim)
    return "messages have shape (|B|, P), honest rows and the view are untouched"


def _view_tensors(view: DefenseView) -> dict[str, torch.Tensor]:
    """The view's tensors a defense must only read: the engine and the influence tracking read them after it."""
    nb = view.neighbours
    tensors = {name: getattr(view, name) for name in ("messages", "reported_delta", "own", "theta")}
    tensors |= {f"neighbours.{name}": getattr(nb, name) for name in ("index", "weight", "mask", "self_weight")}
    tensors["weights"] = view.weights.to_dense() if view.weights.layout != torch.strided else view.weights
    return tensors


def _run_spying_defense(sim: Simulation) -> None:
    defense = sim.defense
    honest = torch.as_tensor(sim.setup.honest)
    original = defense.aggregate

    def spy(view: DefenseView) -> Any:
        before = {name: tensor.clone() for name, tensor in _view_tensors(view).items()}
        out = original(view)
        for name, tensor in _view_tensors(view).items():
            assert torch.equal(tensor, before[name]), f"aggregate() modified view.{name} in place"
        gathered = view.__dict__.pop("_neighbour_messages", None)  # the cache the defense was handed, if it asked
        if gathered is not None:
            intact = torch.equal(gathered, view.neighbour_messages())
            assert intact, "aggregate() modified the tensor view.neighbour_messages() returns in place"
        n, p = view.own.shape
        assert tuple(out.theta.shape) == (n, p), f"theta has shape {tuple(out.theta.shape)}, expected {(n, p)}"
        assert torch.isfinite(out.theta[honest]).all(), "non-finite parameters for an honest node"
        if out.suspicion is not None:
            scores = out.suspicion[view.neighbours.mask]
            assert torch.isfinite(scores).all(), "suspicion must be a finite score for every in-neighbour"
        if out.pruned is not None:
            assert out.pruned.dtype == torch.bool, "pruned must be a bool tensor"
        return out

    defense.aggregate = spy  # type: ignore[method-assign]
    sim.run()


def defense_output_is_well_formed(kind: str, cls: type[Plugin]) -> str:
    assert kind == "defense"
    for sim in _runnable(kind, cls.name):
        _run_spying_defense(sim)
    return "finite honest parameters, a finite score per in-neighbour (or none), the view left as it came"


def defense_never_sees_byzantine_set(kind: str, cls: type[Plugin]) -> str:
    assert kind == "defense"
    signature = list(inspect.signature(getattr(cls, "aggregate")).parameters)  # noqa: B009
    assert signature == ["self", "view"], f"aggregate must take only (self, view), takes {signature}"
    for holder in (DefenseView, CellInfo):
        for name in (f.name for f in dataclasses.fields(holder)):
            assert not any(w in name.lower() for w in FORBIDDEN_WORDS), f"{holder.__name__}.{name} leaks the threat"
    return "aggregate(view) only; DefenseView and CellInfo carry no Byzantine set"


def byzantine_bound_takes_auto(kind: str, cls: type[Plugin]) -> str:
    assert kind == "defense"
    bound = getattr(cls, "byzantine_bound", None)
    if bound is None:
        return "no Byzantine bound (byzantine_bound = None)"
    scenario = _scenario(kind, cls.name, "complete", byzantine=2, defense_params={bound: AUTO})
    sim = Simulation.from_scenario(scenario)
    resolved = sim.setup.byzantine_in_neighbours
    assert getattr(sim.defense, bound) == resolved, (
        f"{bound}='auto' built {bound}={getattr(sim.defense, bound)!r}; the run has {resolved} Byzantine in-neighbours"
    )
    explicit = Simulation.from_scenario(scenario.replace(defense_params={bound: resolved}))
    reason = sim.skip_reason()
    assert reason == explicit.skip_reason(), f"{bound}='auto' and {bound}={resolved} decline differently"
    if reason is not None:
        return f"{bound}='auto' -> {resolved} (declined: {reason})"
    sim.run()
    explicit.run()
    assert sim.final_theta is not None and explicit.final_theta is not None
    assert torch.equal(sim.final_theta, explicit.final_theta), f"{bound}='auto' and {bound}={resolved} differ"
    return f"{bound}='auto' -> {resolved}, the same run as {bound}={resolved}"


def same_numbers_on_cuda(kind: str, cls: type[Plugin]) -> str:
    """The plugin's first conformance cell gives the CPU's numbers on a GPU (skipped where there is none)."""
    _require_cuda()
    return assert_same_run_on_cuda(_runnable(kind, cls.name)[0].setup.scenario)


def pickles(kind: str, cls: type[Plugin]) -> str:
    fresh = cls()
    clone = pickle.loads(pickle.dumps(fresh))
    assert type(clone) is cls and dataclasses.asdict(clone) == dataclasses.asdict(fresh)  # type: ignore[call-overload]
    sim = _runnable(kind, cls.name)[0]
    sim.run()
    used = sim.attack if kind == "attack" else sim.defense
    pickle.loads(pickle.dumps(used))
    return "fresh and after a run"


ATTACK_CHECKS: list[Callable[[str, type[Plugin]], str]] = [
    builds_with_defaults,
    runs_on_small_graphs,
    same_seed_same_result,
    attack_changes_only_byzantine_rows,
    pickles,
    same_numbers_on_cuda,
]
DEFENSE_CHECKS: list[Callable[[str, type[Plugin]], str]] = [
    builds_with_defaults,
    runs_on_small_graphs,
    same_seed_same_result,
    defense_output_is_well_formed,
    defense_never_sees_byzantine_set,
    byzantine_bound_takes_auto,
    pickles,
    same_numbers_on_cuda,
]


def checks_for(kind: str) -> list[Callable[[str, type[Plugin]], str]]:
    return ATTACK_CHECKS if kind == "attack" else DEFENSE_CHECKS


def kind_of(cls: type[Plugin]) -> str:
    if issubclass(cls, Attack):
        return "attack"
    if issubclass(cls, Defense):
        return "defense"
    raise TypeError(f"{cls.__qualname__} is neither an Attack nor a Defense")


def run_conformance(cls: type[Plugin]) -> list[CheckResult]:
    """Every check on one plugin class; failures are collected, not raised."""
    kind = kind_of(cls)
    return _collect(cls.name, checks_for(kind), kind, cls)


def _load(name: str, data_root: str | None) -> Dataset:
    """``load_dataset``, with a missing dataset's error saying how ``check`` gives its loader a data root."""
    try:
        return load_dataset(name, data_root)
    except DatasetNotFoundError as exc:
        if data_root is not None:
            raise
        raise DatasetNotFoundError(
            f"{exc} (its loader got data_root=None: `check --data-root DIR` gives it one)"
        ) from exc


def dataset_loads_and_is_valid(name: str, data_root: str | None) -> str:
    data = _load(name, data_root)  # check_dataset: types, shapes, labels, finite values
    return (
        f"{len(data.y_train)} train / {len(data.y_test)} test samples, input {tuple(data.input_shape)},"
        f" {data.num_classes} classes"
    )


def dataset_same_data_every_load(name: str, data_root: str | None) -> str:
    first, second = _load(name, data_root), _load(name, data_root)
    for part in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(first, part), getattr(second, part)), (
            f"two loads gave different {part} (seed any randomness in the loader: a suite's runs load it in"
            " separate processes)"
        )
    assert first.num_classes == second.num_classes, "two loads gave different num_classes"
    return "two loads are identical"


def dataset_trains_on_a_small_graph(name: str, data_root: str | None) -> str:
    image = len(_load(name, data_root).input_shape) == 3
    notes = []
    for model in ("logreg", "mlp", *(("cnn",) if image else ())):
        scenario = Scenario(
            dataset=name, data_root=data_root, model=model, nodes=6, rounds=3, batch_size=8, eval_every=3, seed=0
        )
        result = simulate(scenario)
        assert result.status == "ok", f"{model}: status {result.status!r} ({result.reason})"
        assert result.final_accuracy_mean is not None
        notes.append(f"{model}: accuracy {result.final_accuracy_mean:.3f} after 3 rounds")
    return "; ".join(notes if image else [*notes, "cnn: not run (it needs (C, H, W) inputs)"])


DATASET_CHECKS: list[Callable[[str, str | None], str]] = [
    dataset_loads_and_is_valid,
    dataset_same_data_every_load,
    dataset_trains_on_a_small_graph,
]


def _model_on(name: str, dataset: str, data_root: str | None, dtype: torch.dtype = torch.float32) -> Any:
    """The model ``name`` built for ``dataset``, 3 nodes' distinct parameters and a batch of 5 inputs per node."""
    data = _load(dataset, data_root)
    model = build_model(name, data.input_shape, data.num_classes)
    theta = model.init(3, torch.Generator().manual_seed(0), same=False).to(dtype)
    x = data.x_train[:15].to(dtype).reshape(3, 5, *data.input_shape)
    return model, theta, x, data.y_train[:15].reshape(3, 5)


def model_batches_nodes_exactly(name: str, dataset: str, data_root: str | None) -> str:
    model, theta, x, _ = _model_on(name, dataset, data_root)
    per_node, shared = model.forward(theta, x), model.forward(theta, x[0])
    for k in range(3):
        for batched, inputs, what in ((per_node, x[k], "per-node inputs"), (shared, x[0], "inputs shared by all")):
            single = model.forward_single(theta[k], inputs)
            assert torch.allclose(batched[k], single, rtol=1e-4, atol=1e-5), (
                f"node {k}'s logits with {what} differ from its own model's by {(batched[k] - single).abs().max():.2e}"
            )
    off = getattr(model, "train_only_layers", ())
    note = f"; dropout layers {', '.join(off)} are off (modules run in eval mode)" if off else ""
    return f"{model.num_params} parameters; 3 nodes at once equal each node alone, on {dataset}{note}"


def model_trains_reproducibly(name: str, dataset: str, data_root: str | None) -> str:
    scenario = Scenario(
        dataset=dataset, data_root=data_root, model=name, nodes=6, rounds=3, batch_size=8, eval_every=3, seed=0
    )
    first, second = Simulation.from_scenario(scenario), Simulation.from_scenario(scenario)
    result = first.run()
    second.run()
    assert result.status == "ok", f"status {result.status!r} ({result.reason})"
    assert first.final_theta is not None and second.final_theta is not None
    assert torch.equal(first.final_theta, second.final_theta), "two runs with the same seed gave different models"
    return f"accuracy {result.final_accuracy_mean:.3f} after 3 rounds on a 6-node ring, the same twice"


def model_hvp_matches_double_backward(name: str, dataset: str, data_root: str | None) -> str:
    model, theta, x, y = _model_on(name, dataset, data_root, torch.float64)
    tangent = torch.randn(theta.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    # forward-over-reverse, as DICE's estimates take it: every op of the module needs a forward-mode derivative
    exact = per_node_hvp(model, theta, x, y, tangent)
    # reverse-over-reverse, an independent route (finite differences trip over ReLU and max-pool kinks)
    leaf = theta.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(per_node_loss(model, leaf, x, y).sum(), leaf, create_graph=True)
    (reference,) = torch.autograd.grad((grad * tangent).sum(), leaf)
    error = float((exact - reference).norm() / reference.norm().clamp_min(1e-12))
    assert error < 1e-8, f"forward-over-reverse Hessian-vector products differ from double backward by {error:.1e}"
    return f"relative difference {error:.1e} (float64)"


def model_same_numbers_on_cuda(name: str, dataset: str, data_root: str | None) -> str:
    """A short run with the model gives the CPU's numbers on a GPU (skipped where there is none)."""
    _require_cuda()
    return assert_same_run_on_cuda(
        Scenario(dataset=dataset, data_root=data_root, model=name, nodes=6, rounds=3, batch_size=8, eval_every=3)
    )


MODEL_CHECKS: list[Callable[[str, str, str | None], str]] = [
    model_batches_nodes_exactly,
    model_trains_reproducibly,
    model_hvp_matches_double_backward,
    model_same_numbers_on_cuda,
]


TOPOLOGY_NODES = (6, 16)  # a topology may decline some node counts (a torus needs a composite one) but not both


def _schedules(name: str, seed: int = 0) -> dict[int, Any]:
    """Node count -> the topology's schedule, or the ConfigError it declined that count with."""
    built: dict[int, Any] = {}
    for n in TOPOLOGY_NODES:
        try:
            built[n] = build_topology(name, n, seed=seed)
        except ConfigError as exc:
            built[n] = exc
    return built


def topology_builds_connected_graphs(name: str) -> str:
    notes, built = [], _schedules(name)
    for n, schedule in built.items():
        if isinstance(schedule, ConfigError):
            notes.append(f"{n} nodes: declined ({schedule})")
            continue
        degrees = np.stack([g.in_degree for g in schedule.graphs])
        notes.append(
            f"{n} nodes: period {schedule.period}, {schedule.union().n_edges} edges,"
            f" in-degree {degrees.min()}-{degrees.max()}"
        )
    assert not all(isinstance(s, ConfigError) for s in built.values()), "; ".join(notes)
    return "; ".join(notes)


def topology_same_seed_same_graphs(name: str) -> str:
    first, second = _schedules(name, seed=7), _schedules(name, seed=7)
    for n, schedule in first.items():
        if isinstance(schedule, ConfigError):
            continue
        again = second[n]
        same = not isinstance(again, ConfigError) and [g.adjacency.tobytes() for g in schedule.graphs] == [
            g.adjacency.tobytes() for g in again.graphs
        ]
        assert same, f"two builds on {n} nodes with seed 7 gave different graphs (draw randomness from the seed)"
    return "two builds with one seed are identical"


def topology_trains_on_it(name: str) -> str:
    nodes = next(n for n, s in _schedules(name).items() if not isinstance(s, ConfigError))
    scenario = Scenario(topology=name, nodes=nodes, rounds=3, batch_size=8, eval_every=3, seed=0)
    result = simulate(scenario)
    assert result.status == "ok", f"status {result.status!r} ({result.reason})"
    return f"accuracy {result.final_accuracy_mean:.3f} after 3 rounds on {nodes} nodes"


TOPOLOGY_CHECKS: list[Callable[[str], str]] = [
    topology_builds_connected_graphs,
    topology_same_seed_same_graphs,
    topology_trains_on_it,
]


def _collect(plugin: str, checks: Sequence[Callable[..., str]], *args: Any) -> list[CheckResult]:
    """``check(*args)`` for each of ``checks`` on the plugin named ``plugin``; failures are collected, not raised."""
    results = []
    for check in checks:
        try:
            results.append(CheckResult(plugin, check.__name__, True, check(*args)))
        except CheckSkipped as exc:
            results.append(CheckResult(plugin, check.__name__, True, str(exc), skipped=True))
        except Exception as exc:  # noqa: BLE001 - report every failing check, whatever it raised
            results.append(CheckResult(plugin, check.__name__, False, f"{type(exc).__name__}: {exc}"))
    return results


def run_dataset_conformance(name: str, data_root: str | None = None) -> list[CheckResult]:
    """Every dataset check on the registered dataset ``name``; failures are collected, not raised."""
    return _collect(name, DATASET_CHECKS, name, data_root)


def run_model_conformance(name: str, dataset: str = "digits", data_root: str | None = None) -> list[CheckResult]:
    """Every model check on the registered model ``name``, with inputs from ``dataset``; failures are collected."""
    return _collect(name, MODEL_CHECKS, name, dataset, data_root)


def run_topology_conformance(name: str) -> list[CheckResult]:
    """Every topology check on the registered topology ``name``; failures are collected, not raised."""
    return _collect(name, TOPOLOGY_CHECKS, name)
