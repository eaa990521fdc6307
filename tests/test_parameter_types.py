"""Plugin parameter types: which config values fit an annotation, their canonical form, and plugins that use them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import pytest

from robustbench_dice.errors import ConfigError
from robustbench_dice.parameter_types import canonical, fits, for_plugin, resolved_types

FITS = [
    (3, int, True),
    (3.0, int, False),
    (True, int, False),  # a bool is an int to Python, not to a config
    (3, float, True),
    (True, float, False),
    ("x", float, False),
    (True, bool, True),
    (1, bool, False),
    (None, float | None, True),
    (None, Optional[int], True),  # noqa: UP045 (the spelling plugins may use)
    (None, float, False),
    ([1, 2.5], list[float], True),
    (3, list[float], False),  # a scalar for a list: accepted by the substring check this replaced
    (["a"], list[float], False),
    ("ab", list[str], False),  # a string is a sequence of strings to Python, not a list to a config
    ([[1, 2], [3]], list[list[int]], True),
    ([1, 2], tuple[int, int], True),
    ([1], tuple[int, int], False),
    ([1, 2.5], tuple[int, int], False),
    ([1, 2, 3], tuple[int, ...], True),
    ({"a": 1, "b": 2.5}, dict[str, float], True),
    ({"a": "x"}, dict[str, float], False),
    ([1], dict[str, float], False),
    ("b", Literal["a", "b"], True),
    ("c", Literal["a", "b"], False),
    (1, Literal[True], False),
    ("anything", Any, True),
    ([1], list, True),
    (2, int | list[int], True),
    ([2], int | list[int], True),
    ("2", int | list[int], False),
    ("results/x", Path, True),  # a class of the plugin's own: its __post_init__ judges (a TOML string is no Path)
]


@pytest.mark.parametrize("value,annotation,expected", FITS)
def test_which_values_fit_an_annotation(value, annotation, expected):
    assert fits(value, annotation) is expected


@pytest.mark.parametrize(
    "value,annotation,expected",
    [
        (1, float, 1.0),
        (1, float | None, 1.0),
        (None, float | None, None),
        (1, int, 1),
        (1, int | float, 1),  # an int member takes the whole number as it is
        ([1, 2.5], list[float], [1.0, 2.5]),
        ((1, 2), tuple[float, float], [1.0, 2.0]),  # as JSON keeps it: a list
        ([[1], [2]], list[list[float]], [[1.0], [2.0]]),
        ({"a": 1}, dict[str, float], {"a": 1.0}),
        ([1, 2], list[int] | None, [1, 2]),
        ("x", float, "x"),  # not a fit: left for the plugin's build to reject
    ],
)
def test_canonical_values(value, annotation, expected):
    out = canonical(value, annotation)
    assert out == expected and _types(out) == _types(expected)  # 1 == 1.0 to Python: the types show the conversion


def _types(value):
    """``value`` with every leaf replaced by its type, containers kept."""
    if isinstance(value, list | tuple):
        return type(value), [_types(v) for v in value]
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    return type(value)


def test_a_list_reaches_a_tuple_parameter_as_a_tuple():
    assert for_plugin([1, 2], tuple[int, int]) == (1, 2)
    assert for_plugin([1, 2], tuple[int, int] | None) == (1, 2)
    assert for_plugin([1, 2], list[int]) == [1, 2]


def test_string_annotations_resolve_and_unknown_names_go_unchecked():
    @dataclass
    class Plugin:
        weights: list[float] = field(default_factory=list)  # a string here: this module has future annotations
        other: NotDefinedAnywhere = None  # type: ignore[name-defined]  # noqa: F821

    assert resolved_types(Plugin, ["weights"]) == {"weights": Any}  # get_type_hints fails on the second field

    @dataclass
    class Resolvable:
        weights: list[float] = field(default_factory=list)
        mode: str = "a"

    assert resolved_types(Resolvable, ["weights", "mode"]) == {"weights": list[float], "mode": str}


def test_a_plugin_with_container_parameters_builds_from_config_values(restore_registry, capsys):
    """A list-valued parameter could not be set at all (a list is not a float), and a scalar passed for it."""
    from robustbench_dice import Scenario
    from robustbench_dice.cli import main
    from robustbench_dice.plugins import Aggregation, Defense, DefenseView
    from robustbench_dice.registry import build_defense, register_defense
    from robustbench_dice.store import scenario_key

    @register_defense
    @dataclass
    class LayerScaled(Defense):
        """Plain gossip with container parameters (a test plugin; no paper)."""

        name = "layer_scaled_test"
        weights: list[float] = field(default_factory=lambda: [1.0, 2.0])
        pair: tuple[int, int] = (1, 2)
        mode: Literal["sum", "mean"] = "sum"

        def aggregate(self, view: DefenseView) -> Aggregation:
            return Aggregation(theta=view.own)

    built = build_defense("layer_scaled_test", {"weights": [1, 2.5], "pair": [3, 4], "mode": "mean"})
    assert built.weights == [1, 2.5] and built.pair == (3, 4) and built.mode == "mean"
    for params, message in [
        ({"weights": 3}, "parameter 'weights' must be list\\[float\\], got 3"),
        ({"pair": [3]}, "parameter 'pair' must be tuple\\[int, int\\], got \\[3\\]"),
        ({"mode": "max"}, "parameter 'mode' must be Literal\\['sum', 'mean'\\], got 'max'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            build_defense("layer_scaled_test", params)
    # whole numbers in a list of floats are the same run as their floats
    ints = Scenario(defense="layer_scaled_test", defense_params={"weights": [1, 3]})
    floats = Scenario(defense="layer_scaled_test", defense_params={"weights": [1.0, 3.0]})
    assert ints.defense_params == {"weights": [1.0, 3.0]} and scenario_key(ints) == scenario_key(floats)
    flags = ["--defense", "layer_scaled_test", "--nodes", "6", "--rounds", "2", "--quiet"]
    assert main(["simulate", *flags, "--defense-param", "weights=[1, 2]", "--defense-param", "pair=[5, 6]"]) == 0
    assert main(["simulate", *flags, "--defense-param", "weights=2"]) == 2
    assert "parameter 'weights' must be list[float], got 2" in capsys.readouterr().err
