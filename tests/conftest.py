import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """MNIST-1D cache in a per-session temp folder, never the user's home."""
    monkeypatch.setenv("ROBUSTBENCH_DICE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
