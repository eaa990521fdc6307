"""The generic suite, run over every registered plugin: a new plugin is tested the moment it is registered."""

import pytest
import torch

from robustbench_dice.conformance import (
    CheckSkipped,
    checks_for,
    run_dataset_conformance,
    run_model_conformance,
    run_topology_conformance,
)
from robustbench_dice.registry import ATTACKS, DEFENSES, load_builtin_plugins
from robustbench_dice.topology import TOPOLOGIES

load_builtin_plugins()
CASES = [
    pytest.param(kind, name, check, id=f"{kind}-{name}-{check.__name__}")
    for kind, table in (("attack", ATTACKS), ("defense", DEFENSES))
    for name in sorted(table)
    for check in checks_for(kind)
]


@pytest.mark.parametrize("kind,name,check", CASES)
def test_plugin_conformance(kind, name, check):
    table = ATTACKS if kind == "attack" else DEFENSES
    try:
        check(kind, table[name])
    except CheckSkipped as reason:  # e.g. the CUDA check on a machine without a GPU
        pytest.skip(str(reason))


def test_required_plugins_are_registered():
    assert {
        "none",
        "label_flip",
        "gradient_scale",
        "free_ride",
        "sign_flip",
        "gaussian",
        "alie",
        "ipm",
        "dissensus",
        "min_max",
        "min_sum",
        "mimic",
    } <= set(ATTACKS)
    required = {"gossip", "dice_prune", "krum", "median", "trimmed_mean", "clipped_gossip", "balance", "ios", "ubar"}
    assert required <= set(DEFENSES)


@pytest.mark.parametrize("name", ["digits", "mnist1d"])
def test_the_built_in_datasets_pass_the_dataset_checks(name):
    """The checks a dataset plugin must pass, on data known to be right: a check that fails here is wrong."""
    results = run_dataset_conformance(name)
    assert all(r.passed for r in results), results


@pytest.mark.parametrize("name", ["logreg", "mlp", "cnn"])
def test_the_built_in_models_pass_the_model_checks(name):
    results = run_model_conformance(name)
    assert all(r.passed for r in results), results
    (cuda,) = [r for r in results if r.check == "model_same_numbers_on_cuda"]
    assert cuda.skipped == (not torch.cuda.is_available())  # a real check wherever there is a GPU


@pytest.mark.parametrize("name", [t for t in TOPOLOGIES if t != "file"])
def test_the_built_in_topologies_pass_the_topology_checks(name):
    results = run_topology_conformance(name)
    assert all(r.passed for r in results), results


def test_a_dataset_whose_files_are_missing_fails_its_checks_saying_how_to_give_a_data_root(restore_registry, tmp_path):
    from pathlib import Path

    from robustbench_dice.errors import DatasetNotFoundError
    from robustbench_dice.registry import register_dataset

    @register_dataset("files_test")
    def files_test(data_root):
        """A dataset kept in files (a test; no data)."""
        raise DatasetNotFoundError(f"{Path(data_root or '.') / 'files.npz'} does not exist")

    results = run_dataset_conformance("files_test")
    assert results and not any(r.passed for r in results)
    assert all("(its loader got data_root=None: `check --data-root DIR` gives it one)" in r.detail for r in results)
    given = run_dataset_conformance("files_test", str(tmp_path))  # a root was given: its own message is enough
    assert all(f"{tmp_path}/files.npz does not exist" in r.detail and "gives it one" not in r.detail for r in given)
