"""Models from a plugin's torch.nn.Module factory (ModuleModel): the same numbers as the built-in models where the
networks are the same, the per-node reference loop's numbers, DICE's exactness, and clear errors."""

from pathlib import Path

import pytest
import torch
from torch import nn

from robustbench_dice import Scenario, registry
from robustbench_dice.conformance import run_model_conformance
from robustbench_dice.engine import Simulation
from robustbench_dice.errors import ConfigError
from robustbench_dice.functional import per_node_grad, per_node_hvp
from robustbench_dice.models import MODELS, PLUGIN_MODELS, build_model
from robustbench_dice.reference import run_reference
from robustbench_dice.setup import prepare

EXAMPLES = Path(__file__).parents[1] / "docs" / "examples"


@pytest.fixture(autouse=True)
def _plugins(restore_registry):
    @registry.register_model("module_mlp")
    def module_mlp(input_shape, num_classes):
        """The built-in MLP with one hidden layer of 32, as a torch.nn.Module (a test)."""
        return nn.Sequential(nn.Linear(input_shape[0], 32), nn.ReLU(), nn.Linear(32, num_classes))

    registry.load_plugin_file(EXAMPLES / "small_convnet.py")
    yield


@pytest.mark.parametrize("shared", [False, True])
def test_a_module_equal_to_the_built_in_mlp_gives_its_logits_gradients_and_hvps(shared):
    module, mlp = build_model("module_mlp", (64,), 10), build_model("mlp", (64,), 10, hidden=(32,))
    assert [s.shape for s in module.specs] == [s.shape for s in mlp.specs] and not module.has_gradient
    theta = mlp.init(4, torch.Generator().manual_seed(0), same=False).double()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(*(() if shared else (4,)), 6, 64, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (6,) if shared else (4, 6), generator=gen)
    torch.testing.assert_close(module.forward(theta, x), mlp.forward(theta, x), rtol=1e-12, atol=1e-12)
    # autograd through vmap(functional_call) against the MLP's hand-written backward pass
    torch.testing.assert_close(
        per_node_grad(module, theta, x, y), per_node_grad(mlp, theta, x, y), rtol=1e-10, atol=1e-12
    )
    tangents = torch.randn(2, *theta.shape, generator=gen, dtype=torch.float64)
    hvp_module, hvp_mlp = per_node_hvp(module, theta, x, y, tangents), per_node_hvp(mlp, theta, x, y, tangents)
    torch.testing.assert_close(hvp_module, hvp_mlp, rtol=1e-10, atol=1e-12)


def test_a_module_model_run_equals_the_per_node_reference_loop():
    scenario = Scenario(
        model="small_convnet",
        topology="one_peer_exponential",
        nodes=6,
        rounds=4,
        batch_size=8,
        eval_every=4,
        momentum=0.0,
        init="independent",
        seed=3,
    )
    sim = Simulation.from_scenario(scenario)
    sim.run()
    torch.testing.assert_close(sim.final_theta, run_reference(prepare(scenario)), rtol=1e-5, atol=1e-6)


def test_module_model_init_is_the_modules_own_under_the_runs_seed():
    model = build_model("module_mlp", (64,), 10)
    same = model.init(3, torch.Generator().manual_seed(0), same=True)
    assert torch.equal(same[0], same[2]) and torch.equal(same, model.init(3, torch.Generator().manual_seed(0)))
    assert not torch.equal(same, model.init(3, torch.Generator().manual_seed(1)))
    independent = model.init(3, torch.Generator().manual_seed(0), same=False)
    assert not torch.equal(independent[0], independent[1])
    weights = same[0, : 32 * 64]
    assert weights.abs().max() <= 1 / 8 and weights.std() > 0.03  # nn.Linear's U(-1/sqrt(64), 1/sqrt(64))
    assert same.dtype == torch.float32


def test_a_module_model_runs_dice_pruning_and_tracks_influence():
    scenario = Scenario(
        model="small_convnet",
        topology="torus",
        nodes=9,
        rounds=12,
        batch_size=8,
        eval_every=12,
        attack="label_flip",
        byzantine=2,
        defense="dice_prune",
        defense_params={"warmup": 2},
        track_influence=True,
        seed=0,
    )
    result = Simulation.from_scenario(scenario).run()
    assert result.status == "ok" and result.edge_auc is not None and result.proximal_influence


def _register(name, factory):
    factory.__doc__ = "A test module."
    registry.register_model(name)(factory)
    return name


@pytest.mark.parametrize(
    "factory,message",
    [
        (
            lambda shape, c: nn.Sequential(nn.Linear(shape[0], 8), nn.BatchNorm1d(8), nn.Linear(8, c)),
            "has buffers \\(1.running_mean",
        ),
        (
            lambda shape, c: nn.Linear(shape[0], c + 1),
            r"maps a batch of shape \(2, \*\(64,\)\) to \(2, 11\); it must return logits of shape \(2, 10\)",
        ),
        (
            lambda shape, c: nn.Linear(10, c),
            r"cannot take inputs of shape \(64,\): mat1 and mat2 shapes cannot be multiplied",
        ),
        (lambda shape, c: "a module", "the factory must return a torch.nn.Module, got <class 'str'>"),
        (lambda shape, c: nn.ReLU(), "the module has no parameters"),
    ],
)
def test_bad_module_models_are_clear_errors(factory, message):
    name = _register("bad_module", factory)
    with pytest.raises(ConfigError, match=f"model 'bad_module'.*{message}"):
        build_model(name, (64,), 10)


def test_dropout_is_off_and_the_model_check_says_so():
    name = _register(
        "with_dropout", lambda shape, c: nn.Sequential(nn.Linear(shape[0], 16), nn.Dropout(0.5), nn.Linear(16, c))
    )
    model = build_model(name, (64,), 10)
    theta = model.init(2, torch.Generator().manual_seed(0))
    x = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(model.forward(theta, x), model.forward(theta, x))  # no dropout mask drawn
    (result,) = [r for r in run_model_conformance(name) if r.check == "model_batches_nodes_exactly"]
    assert result.passed and "dropout layers 1 are off (modules run in eval mode)" in result.detail


def test_model_registration_and_scenario_errors():
    with pytest.raises(ConfigError, match=r"must take \(input_shape, num_classes\), not 1 argument"):
        _register("one_argument", lambda shape: nn.Linear(shape[0], 10))
    with pytest.raises(ConfigError, match="two models are named 'mlp': a built-in model and"):
        _register("mlp", lambda shape, c: nn.Linear(shape[0], c))
    assert "mlp" not in PLUGIN_MODELS and MODELS["small_convnet"].startswith("A 3x3 convolution (8 channels)")
    with pytest.raises(ConfigError, match="unknown model 'resnet'.*models of your own register with @register_model"):
        Scenario(model="resnet")
