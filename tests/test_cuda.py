"""The CUDA path: each computation on a GPU equals the same computation on the CPU.

Skipped where torch sees no CUDA device (CI has none); ``pytest tests/test_cuda.py`` on a machine with a GPU runs
them. Everything is in float64 and every random draw comes from the same CPU generators on both devices, so the two
runs differ by rounding alone: a device-specific bug (a tensor left on the CPU, a generator on the wrong device, an
operation CUDA orders differently) shows as a difference far above it.
"""

from pathlib import Path

import pytest
import torch

from robustbench_dice import Scenario, dice, simulate
from robustbench_dice.cli import main
from robustbench_dice.conformance import _numbers_close, assert_same_run_on_cuda
from robustbench_dice.dice import dice_estimate, dice_ground_truth
from robustbench_dice.influence import AlignmentConfig, probe_from_test_set, record_windows, run_alignment
from robustbench_dice.registry import load_plugin_file
from robustbench_dice.setup import prepare

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

RTOL, ATOL = 1e-6, 1e-9
# every attack and defense plugin is run on CUDA against the CPU by the conformance suite's same_numbers_on_cuda
# (tests/test_conformance.py), every built-in model by model_same_numbers_on_cuda


@pytest.mark.parametrize("defense", ["gossip", "dice_prune"])
def test_proximal_influence_tracking_on_cuda_equals_cpu(defense):
    base = dict(nodes=8, rounds=6, batch_size=8, eval_every=3, topology="exponential", seed=2)
    assert_same_run_on_cuda(Scenario(**base, attack="label_flip", byzantine=2, defense=defense, track_influence=True))


@pytest.mark.parametrize("model", ["logreg", "mlp", "cnn"])
def test_built_in_models_on_cuda_equal_cpu_on_a_time_varying_graph(model):
    assert_same_run_on_cuda(
        Scenario(model=model, nodes=6, rounds=4, batch_size=8, eval_every=2, topology="one_peer_exponential")
    )


def test_a_module_model_plugin_on_cuda_equals_cpu(restore_registry):
    load_plugin_file(Path(__file__).parents[1] / "docs" / "examples" / "small_convnet.py")
    assert_same_run_on_cuda(Scenario(model="small_convnet", nodes=6, rounds=4, batch_size=8, eval_every=2))


def test_sparse_gossip_on_cuda_equals_cpu():
    scenario = Scenario(
        nodes=160, topology="ring", partition="replicated", samples_per_node=16, rounds=3, batch_size=8, eval_every=3
    )
    assert prepare(scenario).mixing.at(0).use_sparse  # the CSR product, not the dense one
    assert_same_run_on_cuda(scenario)


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
    _numbers_close(cpu, cuda, "alignment", RTOL, ATOL)


def test_a_cuda_run_names_its_gpu(capsys):
    gpu = torch.cuda.get_device_name()
    assert simulate(Scenario(nodes=4, rounds=2, device="cuda")).versions["gpu"] == gpu
    assert "gpu" not in simulate(Scenario(nodes=4, rounds=2)).versions
    assert main(["simulate", "--nodes", "4", "--rounds", "2", "--device", "cuda"]) == 0
    assert f"ms on {gpu}" in capsys.readouterr().out


def test_small_sorts_on_the_gpu_take_torch_sort_and_give_the_networks_values(monkeypatch):
    """On a GPU the median's sorting network lost to one torch.sort at 16 nodes (0.27x); below
    CUDA_NETWORK_MIN_VALUES the sort is torch.sort's, above it the network's, with the same values either way."""
    from robustbench_dice import order_stats

    generator = torch.Generator().manual_seed(0)
    rows = [torch.randn(16, 4810, generator=generator, dtype=torch.float64).cuda() for _ in range(5)]
    rows[2][0, :7] = rows[1][0, :7]  # ties
    expected = torch.stack(rows).sort(dim=0).values
    networks = []
    pairs = order_stats.batcher_pairs
    monkeypatch.setattr(order_stats, "batcher_pairs", lambda m: networks.append(m) or pairs(m))
    stacked = torch.stack(rows, dim=1)  # (N, M, P), as the defenses hold their candidates
    assert torch.equal(torch.stack(order_stats.sorted_slices(rows)), expected) and networks == []
    assert torch.equal(order_stats.sort_along(stacked), expected.transpose(0, 1)) and networks == []
    monkeypatch.setattr(order_stats, "CUDA_NETWORK_MIN_VALUES", 0)
    assert torch.equal(torch.stack(order_stats.sorted_slices(rows)), expected) and networks == [5]
    assert torch.equal(order_stats.sort_along(stacked), expected.transpose(0, 1)) and networks == [5, 5]


def test_the_geometric_median_iterates_on_the_gpu_to_the_cpus_numbers():
    """On a GPU Weiszfeld's steps run in torch there (numpy on the CPU): the same medians, vertex cases included."""
    from robustbench_dice.defenses.geometric_median import weiszfeld

    generator = torch.Generator().manual_seed(3)
    candidates = torch.randn(64, 7, 50, generator=generator, dtype=torch.float64)
    candidates[:8, 3] = candidates[:8, 1]  # coincident candidates pool their weight
    weight = torch.rand(64, 7, generator=generator, dtype=torch.float64)
    weight[8:16, 2] = 10.0  # a heavy candidate: the median is that vertex
    weight[16:20, 5:] = 0.0  # absent slots
    cpu = weiszfeld(candidates, weight, 1e-6, 100, 1e-6)
    gpu = weiszfeld(candidates.cuda(), weight.cuda(), 1e-6, 100, 1e-6)
    assert gpu[0].is_cuda
    for a, b in zip(cpu, gpu, strict=True):
        assert torch.allclose(a, b.cpu(), rtol=1e-9, atol=1e-12)
    assert torch.allclose(cpu[0][8:16], candidates[8:16, 2], rtol=0, atol=1e-12)  # the vertex test found them
