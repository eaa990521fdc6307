"""Long runs; excluded by default, run with `tox -e slow` or `pytest -m slow`."""

import json
import subprocess
import sys

import pytest
import torch

from robustbench_dice import Scenario, Simulation
from robustbench_dice.reference import run_reference
from robustbench_dice.setup import prepare

pytestmark = pytest.mark.slow


def test_acceptance_command_twice_gives_identical_accuracy(tmp_path):
    command = [
        sys.executable,
        "-m",
        "robustbench_dice",
        "simulate",
        "--dataset",
        "digits",
        "--model",
        "mlp",
        "--topology",
        "ring",
        "--nodes",
        "16",
        "--rounds",
        "200",
        "--seed",
        "0",
        "--quiet",
    ]
    outputs = []
    for i in range(2):
        out = tmp_path / f"out{i}.json"
        subprocess.run([*command, "--json", str(out)], check=True)
        outputs.append(json.loads(out.read_text()))
    assert outputs[0]["final_accuracy_mean"] >= 0.90
    for key in ("curve", "node_accuracy", "final_accuracy_mean", "final_accuracy_worst"):
        assert outputs[0][key] == outputs[1][key]


@pytest.mark.parametrize("topology", ["one_peer_exponential", "erdos_renyi", "torus"])
def test_long_horizon_equivalence_with_reference(topology):
    scenario = Scenario(
        nodes=32,
        topology=topology,
        rounds=60,
        momentum=0.9,
        weight_decay=5e-4,
        eval_every=60,
        partition="replicated",
        samples_per_node=48,
    )
    sim = Simulation.from_scenario(scenario)
    sim.run()
    torch.testing.assert_close(sim.final_theta, run_reference(prepare(scenario)), rtol=1e-4, atol=1e-5)


def test_mnist1d_mlp_learns():
    result = Simulation.from_scenario(
        Scenario(
            dataset="mnist1d", model="mlp", hidden=(128,), topology="exponential", nodes=8, rounds=300, eval_every=100
        )
    ).run()
    assert result.final_accuracy_mean > 0.5


@pytest.mark.parametrize("model", ["logreg", "mlp"])
def test_alignment_over_two_hundred_probes(model):
    from robustbench_dice.influence import AlignmentConfig, run_alignment

    _, summary, _ = run_alignment(
        AlignmentConfig(models=(model,), topologies=("ring", "exponential"), lrs=(0.1,)), log=lambda _: None
    )
    dice = [s for s in summary if s["estimator"] == "dice"]
    assert all(s["probes"] >= 200 and s["pearson"] >= 0.99 for s in dice), dice
