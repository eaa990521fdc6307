import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_addoption(parser):
    parser.addoption(
        "--cuda",
        action="store_true",
        help="stop at once where torch sees no CUDA device, instead of skipping the CUDA tests (for a GPU machine)",
    )


def pytest_configure(config):
    if config.getoption("--cuda") and not torch.cuda.is_available():
        from robustbench_dice.setup import cuda_status

        raise pytest.UsageError(
            f"--cuda: torch {torch.__version__} sees no CUDA device ({cuda_status()}), so the CUDA tests would only"
            " be skipped"
        )


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """MNIST-1D cache in a per-session temp folder, never the user's home."""
    monkeypatch.setenv("ROBUSTBENCH_DICE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def restore_registry():
    """Every plugin registry as it was before the test: plugins a test registers do not leak into others."""
    from robustbench_dice import registry
    from robustbench_dice.datasets import DATASETS, PLUGIN_DATASETS
    from robustbench_dice.models import MODELS, PLUGIN_MODELS
    from robustbench_dice.topology import PLUGIN_TOPOLOGIES, TOPOLOGIES

    registry.load_builtin_plugins()
    tables = (registry.ATTACKS, registry.DEFENSES, PLUGIN_DATASETS, DATASETS, PLUGIN_MODELS, MODELS)
    tables += (PLUGIN_TOPOLOGIES, TOPOLOGIES)
    saved = [dict(t) for t in tables]
    errors, folders = list(registry.LOAD_ERRORS), list(registry._user_folders)
    yield
    for table, before in zip(tables, saved, strict=True):
        table.clear()
        table.update(before)
    registry.LOAD_ERRORS[:] = errors
    registry._user_folders[:] = folders
