import pytest
import torch
import torch.nn.functional as F

from robustbench_dice.errors import ConfigError
from robustbench_dice.functional import per_node_grad as local_gradients
from robustbench_dice.models import build_model

CASES = [("logreg", (64,)), ("mlp", (64,)), ("mlp", (40,)), ("cnn", (64,)), ("cnn", (1, 28, 28)), ("cnn", (3, 32, 32))]


@pytest.mark.parametrize("name,shape", CASES)
def test_batched_forward_equals_single_node_forward(name, shape):
    torch.manual_seed(0)
    model = build_model(name, shape, 10, hidden=(32, 16))
    theta = model.init(5, torch.Generator().manual_seed(0), same=False)
    x = torch.randn(5, 7, *shape)
    batched = model.forward(theta, x)
    assert batched.shape == (5, 7, 10)
    for k in range(5):
        torch.testing.assert_close(batched[k], model.forward_single(theta[k], x[k]), rtol=1e-5, atol=1e-5)
    shared = model.forward(theta, x[0])
    for k in range(5):
        torch.testing.assert_close(shared[k], model.forward_single(theta[k], x[0]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,shape", CASES[:4])
def test_one_backward_gives_every_nodes_gradient(name, shape):
    model = build_model(name, shape, 10)
    theta = model.init(4, torch.Generator().manual_seed(1), same=False)
    x, y = torch.randn(4, 6, *shape), torch.randint(0, 10, (4, 6))
    grads = local_gradients(model, theta, x, y)
    for k in range(4):
        leaf = theta[k].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model.forward_single(leaf, x[k]), y[k]), leaf)
        torch.testing.assert_close(grads[k], g, rtol=1e-5, atol=1e-6)


def test_parameter_counts_and_init():
    assert build_model("logreg", (64,), 10).num_params == 650
    assert build_model("mlp", (64,), 10, hidden=(64,)).num_params == 64 * 64 + 64 + 64 * 10 + 10
    m = build_model("mlp", (64,), 10)
    same = m.init(3, torch.Generator().manual_seed(0), same=True)
    assert torch.equal(same[0], same[2])
    indep = m.init(3, torch.Generator().manual_seed(0), same=False)
    assert not torch.equal(indep[0], indep[2])
    bound = 1 / 8  # fan_in 64
    assert same[0, : 64 * 64].abs().max() <= bound


def test_bad_models():
    with pytest.raises(ConfigError, match="valid: cnn, logreg, mlp"):
        build_model("resnet", (64,), 10)
    with pytest.raises(ConfigError, match="needs image inputs"):
        build_model("cnn", (40,), 10)
    with pytest.raises(ConfigError, match="hidden sizes"):
        build_model("mlp", (64,), 10, hidden=(0,))


DENSE = [("logreg", ()), ("mlp", (64,)), ("mlp", (32, 16))]


def _dense_case(model, shared, seed):
    """Five nodes' float64 parameters and 7 samples each of 8x8 inputs (or 7 shared by all nodes)."""
    gen = torch.Generator().manual_seed(seed)
    theta = model.init(5, gen, same=False).double() * 3  # larger weights: more ReLUs switched off
    x = torch.randn(7, 8, 8, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (7,), generator=gen)
    if not shared:
        x, y = torch.randn(5, 7, 8, 8, generator=gen, dtype=torch.float64), torch.randint(0, 10, (5, 7), generator=gen)
    return gen, theta, x, y


@pytest.mark.parametrize("name,hidden", DENSE)
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("loss", ["cross_entropy", "squared", "linear"])
def test_hand_written_gradient_equals_autograd(name, hidden, shared, masked, loss):
    from robustbench_dice.functional import per_node_grad, per_node_grad_autograd

    model = build_model(name, (8, 8), 10, hidden=hidden or (64,))
    assert model.has_gradient
    gen, theta, x, y = _dense_case(model, shared, seed=3)
    mask = (torch.rand(5, 7, generator=gen) > 0.4) if masked else None
    if masked:
        mask[0] = False  # a node with no valid sample has a zero gradient
    fast = per_node_grad(model, theta, x, y, mask, loss)
    torch.testing.assert_close(fast, per_node_grad_autograd(model, theta, x, y, mask, loss), rtol=1e-12, atol=1e-14)
    if masked:
        assert not fast[0].any()


@pytest.mark.parametrize("name,hidden", DENSE)
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("loss", ["cross_entropy", "squared", "linear"])
def test_hand_written_hvp_equals_torch_func(name, hidden, shared, loss):
    """The dense models' R-operator against forward-over-reverse autograd, batched tangents and one."""
    from robustbench_dice.functional import per_node_hvp, per_node_hvp_autograd

    model = build_model(name, (8, 8), 10, hidden=hidden or (64,))
    assert model.has_hvp and not build_model("cnn", (1, 8, 8), 10).has_hvp
    gen, theta, x, y = _dense_case(model, shared, seed=5)
    for shape in ((3, 5, model.num_params), (5, model.num_params), (2, 2, 5, model.num_params)):
        tangents = torch.randn(*shape, generator=gen, dtype=torch.float64)
        fast = per_node_hvp(model, theta, x, y, tangents, loss)
        exact = per_node_hvp_autograd(model, theta, x, y, tangents, loss)
        assert fast.shape == shape
        torch.testing.assert_close(fast, exact, rtol=1e-12, atol=1e-13)
        if loss == "linear" and not hidden:  # linear in the parameters: no curvature at all
            assert not fast.any()


@pytest.mark.parametrize("name", ["logreg", "mlp", "cnn"])
def test_gradients_of_several_sample_sets_in_one_pass_equal_separate_calls(name):
    from robustbench_dice.functional import Samples, per_node_grad, per_node_grads

    model = build_model(name, (64,), 10)
    gen = torch.Generator().manual_seed(4)
    theta = model.init(6, gen, same=False)
    train = Samples(torch.randn(6, 9, 64, generator=gen), torch.randint(0, 10, (6, 9), generator=gen))
    val = Samples(torch.randn(6, 4, 64, generator=gen), torch.randint(0, 10, (6, 4), generator=gen))
    val = val._replace(mask=torch.rand(6, 4, generator=gen) > 0.3)
    joint = per_node_grads(model, theta, [train, val])
    assert len(joint) == 2
    for got, part in zip(joint, [train, val], strict=True):
        torch.testing.assert_close(got, per_node_grad(model, theta, *part), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["logreg", "mlp", "cnn"])
def test_per_node_primitives_name_misfitting_arguments(name):
    """Each misfit was a silent wrong result or one of torch's own messages before; now a ValueError names it."""
    from robustbench_dice import functional

    model = build_model(name, (64,), 10)
    gen = torch.Generator().manual_seed(0)
    theta = model.init(4, gen, same=False)
    x, y = torch.randn(4, 5, 64, generator=gen), torch.randint(0, 10, (4, 5), generator=gen)
    tangents = torch.randn(2, 4, model.num_params, generator=gen)
    calls = {
        "grad": lambda t, x, y, **kw: functional.per_node_grad(model, t, x, y, **kw),
        "grad_autograd": lambda t, x, y, **kw: functional.per_node_grad_autograd(model, t, x, y, **kw),
        "loss": lambda t, x, y, **kw: functional.per_node_loss(model, t, x, y, **kw),
        "grads": lambda t, x, y, **kw: functional.per_node_grads(
            model, t, [functional.Samples(x, y, kw.pop("mask", None))], **kw
        )[0],
        "hvp": lambda t, x, y, **kw: functional.per_node_hvp(model, t, x, y, kw.pop("tangents", tangents), **kw),
        "hvp_autograd": lambda t, x, y, **kw: functional.per_node_hvp_autograd(
            model, t, x, y, kw.pop("tangents", tangents), **kw
        ),
    }
    misfits = [
        ((theta, x, y), {"loss": "hinge"}, "loss must be one of 'cross_entropy', 'squared', 'linear', got 'hinge'"),
        ((theta[:, 1:], x, y), {}, rf"theta must be \(N, P\) = \(nodes, {model.num_params}\)"),
        ((theta[0], x, y), {}, r"theta must be \(N, P\)"),
        ((theta, x[:3], y[:3]), {}, r"x must be \(N, B, \*input_shape\) = \(4, B, 64\)"),
        ((theta, x[..., :63], y), {}, r"got \(4, 5, 63\)"),
        ((theta, x.double(), y), {}, "x must have theta's dtype"),
        ((theta, x, y.float()), {}, r"y must be integer class labels of shape \(4, 5\)"),
        ((theta, x, y[:, :4]), {}, r"y must be integer class labels of shape \(4, 5\), got torch.int64 \(4, 4\)"),
    ]
    for call_name, call in calls.items():
        for args, kwargs, message in misfits:
            with pytest.raises(ValueError, match=message):
                call(*args, **kwargs)
        if not call_name.startswith("hvp"):
            with pytest.raises(ValueError, match=r"mask must be \(N, B\) = \(4, 5\), got \(4, 6\)"):
                call(theta, x, y, mask=torch.ones(4, 6, dtype=torch.bool))
        else:
            for bad in (tangents[..., 1:], tangents.double(), tangents[0, 0]):
                with pytest.raises(ValueError, match=r"tangents must be \(\.\.\., N, P\)"):
                    call(theta, x, y, tangents=bad)
    # shared samples (B, *input_shape) with labels (B,) stay accepted, and per-node labels with per-node samples
    assert functional.per_node_loss(model, theta, x[0], y[0]).shape == (4,)
    assert functional.per_node_grad(model, theta, x, y[0]).shape == theta.shape
    for fn in (functional.per_sample_loss, functional.logit_grad):
        with pytest.raises(ValueError, match="got 'hinge'"):
            fn(torch.zeros(4, 5, 10), y, loss="hinge")
    with pytest.raises(ValueError, match="got 'hinge'"):
        functional.logit_hvp(torch.zeros(4, 5, 10), torch.zeros(4, 1, 5, 10), loss="hinge")
