"""The CUDA path: each computation on a GPU equals the same computation on the CPU.

Skipped where torch sees no CUDA device (CI has none); ``pytest tests/test_cuda.py`` on a machine with a GPU runs
them. Everything is in float64 and every random draw comes from the same CPU generators on both devices, so the two
runs differ by rounding alone: a device-specific bug (a tensor left on the CPU, a generator on the wrong device, an
operation CUDA orders differently) shows as a difference far above it.
"""

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from robustbench_dice import Scenario, Simulation, dice, simulate
from robustbench_dice.cli import main
from robustbench_dice.conformance import _runnable
from robustbench_dice.dice import dice_estimate, dice_ground_truth
from robustbench_dice.influence import AlignmentConfig, probe_from_test_set, record_windows, run_alignment
from robustbench_dice.registry import ATTACKS, DEFENSES, load_builtin_plugins, load_plugin_file
from robustbench_dice.setup import prepare

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

load_builtin_plugins()
RTOL, ATOL = 1e-6, 1e-9
DEVICE_DEPENDENT = ("timings", "versions", "scenario")  # the scenario differs in its device field alone


def _assert_close(cpu, cuda, where="result"):
    """Recursive comparison of two results' JSON data: numbers to RTOL/ATOL (NaN equal to NaN), the rest exactly."""
    if isinstance(cpu, dict):
        assert cpu.keys() == cuda.keys(), where
        for key in cpu:
            _assert_close(cpu[key], cuda[key], f"{where}.{key}")
    elif isinstance(cpu, list | tuple):
        assert len(cpu) == len(cuda), where
        for i, (a, b) in enumerate(zip(cpu, cuda, strict=True)):
            _assert_close(a, b, f"{where}[{i}]")
    elif isinstance(cpu, float) and isinstance(cuda, float):
        same = (math.isnan(cpu) and math.isnan(cuda)) or math.isclose(cpu, cuda, rel_tol=RTOL, abs_tol=ATOL)
        assert same, f"{where}: cpu {cpu!r} != cuda {cuda!r}"
    else:
        assert cpu == cuda, f"{where}: cpu {cpu!r} != cuda {cuda!r}"


def _assert_cuda_run_equals_cpu_run(scenario: Scenario) -> None:
    runs = {}
    for device in ("cpu", "cuda"):
        sim = Simulation.from_scenario(dataclasses.replace(scenario, device=device, dtype="float64"))
        runs[device] = sim, sim.run()
    (cpu_sim, cpu_result), (cuda_sim, cuda_result) = runs["cpu"], runs["cuda"]
    assert cpu_result.status == "ok" == cuda_result.status, (cpu_result.reason, cuda_result.reason)
    assert cuda_sim.final_theta.device.type == "cuda"
    torch.testing.assert_close(cuda_sim.final_theta.cpu(), cpu_sim.final_theta, rtol=RTOL, atol=ATOL)
    cpu_data, cuda_data = cpu_result.to_dict(), cuda_result.to_dict()
    for key in DEVICE_DEPENDENT:
        cpu_data.pop(key), cuda_data.pop(key)
    _assert_close(cpu_data, cuda_data)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_every_attack_on_cuda_equals_cpu(name):
    _assert_cuda_run_equals_cpu_run(_runnable("attack", name)[0].setup.scenario)


@pytest.mark.parametrize("name", sorted(DEFENSES))
def test_every_defense_on_cuda_equals_cpu(name):
    _assert_cuda_run_equals_cpu_run(_runnable("defense", name)[0].setup.scenario)


@pytest.mark.parametrize("defense", ["gossip", "dice_prune"])
def test_proximal_influence_tracking_on_cuda_equals_cpu(defense):
    base = dict(nodes=8, rounds=6, batch_size=8, eval_every=3, topology="exponential", seed=2)
    _assert_cuda_run_equals_cpu_run(
        Scenario(**base, attack="label_flip", byzantine=2, defense=defense, track_influence=True)
    )


@pytest.mark.parametrize("model", ["logreg", "mlp", "cnn"])
def test_built_in_models_on_cuda_equal_cpu(model):
    _assert_cuda_run_equals_cpu_run(
        Scenario(model=model, nodes=6, rounds=4, batch_size=8, eval_every=2, topology="one_peer_exponential")
    )


def test_a_module_model_plugin_on_cuda_equals_cpu(restore_registry):
    load_plugin_file(Path(__file__).parents[1] / "docs" / "examples" / "small_convnet.py")
    _assert_cuda_run_equals_cpu_run(Scenario(model="small_convnet", nodes=6, rounds=4, batch_size=8, eval_every=2))


def test_sparse_gossip_on_cuda_equals_cpu():
    scenario = Scenario(
        nodes=160, topology="ring", partition="replicated", samples_per_node=16, rounds=3, batch_size=8, eval_every=3
    )
    assert prepare(scenario).mixing.at(0).use_sparse  # the CSR product, not the dense one
    _assert_cuda_run_equals_cpu_run(scenario)


def _dice_inputs(device):
    """(model, window, sources, probe) of a recorded window on ``device``: 6 nodes, time-varying graph, float64."""
    scenario = Scenario(
        nodes=6, rounds=10, batch_size=8, lr=0.1, momentum=0.0, weight_decay=1e-3, dtype="float64", seed=1,
        topology="one_peer_exponential", eval_every=10, device=device,
    )  # fmt: skip
    sim, (window,) = record_windows(scenario, [4], 3)
    return sim.setup.model, window, torch.arange(6, device=device), probe_from_test_set(sim, 50)


def test_dice_estimate_and_ground_truth_on_cuda_equal_cpu():
    out = {}
    for device in ("cpu", "cuda"):
        model, window, sources, probe = _dice_inputs(device)
        out[device] = [f(model, window, sources, probe, 3) for f in (dice_estimate, dice_ground_truth)]
    for cpu, cuda in zip(out["cpu"], out["cuda"], strict=True):
        assert cuda.device.type == "cuda" and cpu.abs().max() > 0
        torch.testing.assert_close(cuda.cpu(), cpu, rtol=RTOL, atol=1e-12)


def test_dice_on_cuda_chunks_sources_by_its_own_budget(monkeypatch):
    model, window, sources, probe = _dice_inputs("cuda")
    assert len(dice._source_chunks(window, sources, None)) == 1  # 6 sources fit the GPU's budget at once
    whole = [f(model, window, sources, probe, 3) for f in (dice_estimate, dice_ground_truth)]
    monkeypatch.setattr(dice, "CUDA_CHUNK_BYTES", 2 * window.theta.numel() * window.theta.element_size())
    assert len(dice._source_chunks(window, sources, None)) == 3
    for f, expected in zip((dice_estimate, dice_ground_truth), whole, strict=True):
        torch.testing.assert_close(f(model, window, sources, probe, 3), expected, rtol=1e-10, atol=1e-14)


def test_auto_device_is_cuda_when_there_is_one():
    assert prepare(Scenario(nodes=4, device="auto")).device.type == "cuda"


def test_alignment_experiment_on_cuda_equals_cpu():
    tiny = dict(models=("mlp",), topologies=("ring",), lrs=(0.1,), sweep_topologies=(), nodes=4, rounds=8)
    tiny.update(probe_rounds=2, horizon=2, batch_size=8)
    cpu, cuda = (run_alignment(AlignmentConfig(**tiny, device=d), log=lambda _: None) for d in ("cpu", "cuda"))
    assert len(cpu[0]) > 0
    _assert_close(cpu, cuda)


def test_a_cuda_run_names_its_gpu(capsys):
    gpu = torch.cuda.get_device_name()
    assert simulate(Scenario(nodes=4, rounds=2, device="cuda")).versions["gpu"] == gpu
    assert "gpu" not in simulate(Scenario(nodes=4, rounds=2)).versions
    assert main(["simulate", "--nodes", "4", "--rounds", "2", "--device", "cuda"]) == 0
    assert f"ms on {gpu}" in capsys.readouterr().out
