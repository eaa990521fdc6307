"""The Python examples in the docs run as written."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).parents[1] / "docs"


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.DOTALL)


@pytest.mark.parametrize("block", _python_blocks(DOCS / "dice.md"), ids=lambda block: "dice.md")
def test_dice_doc_example_runs_and_estimate_tracks_the_ground_truth(block, capsys):
    namespace: dict[str, object] = {}
    exec(compile(block, "docs/dice.md", "exec"), namespace)  # our own docs, not user input
    estimate, truth = namespace["estimate"], namespace["truth"]
    assert estimate.shape == truth.shape == (3, 8, 8)
    for r in range(3):  # the example's own claim: the estimate follows the counterfactual, source by source
        assert ((estimate[r].mean(1) - truth[r].mean(1)).abs() < 0.2 * truth[r].mean(1).abs()).all()
    assert capsys.readouterr().out.count("truth") == 3


@pytest.mark.parametrize("block", _python_blocks(DOCS.parent / "README.md"), ids=lambda block: "README.md")
def test_readme_python_example_runs(block, capsys):
    exec(compile(block, "README.md", "exec"), {})  # our own README, not user input
    accuracy_mean, accuracy_worst = map(float, capsys.readouterr().out.split())
    assert 0.5 < accuracy_worst <= accuracy_mean <= 1.0
