"""Models as pure functions of a flat parameter vector, batched over nodes.

Every model keeps N parameter sets stacked as rows of ``theta`` with shape
``(N, P)``. :meth:`Model.forward` evaluates all N models at once with batched
layers (``matmul`` over the node dimension, grouped convolutions), so one
autograd call yields every node's gradient. :meth:`Model.forward_single` is
the same network for one node written with plain ``torch.nn.functional``
calls; the per-node reference engine uses it, and tests check the two agree.
No BatchNorm: a node's output depends on its own parameters and inputs only.
A model of your own is a ``torch.nn.Module`` factory registered with
:func:`robustbench_dice.registry.register_model`; :class:`ModuleModel` batches
it over nodes with ``torch.func.vmap``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

from .errors import ConfigError, check_choice

MODELS = {  # name -> architecture
    "logreg": "multinomial logistic regression (one dense layer)",
    "mlp": "dense ReLU network  [hidden]",
    "cnn": "two 3x3 conv + ReLU + 2x2 max-pool blocks (16, 32 channels), then dense 64 -> classes",
}


@dataclass(frozen=True)
class ParamSpec:
    name: str
    shape: tuple[int, ...]
    fan_in: int

    @property
    def size(self) -> int:
        return math.prod(self.shape)


class Model:
    """Base class: subclasses set ``specs`` and implement the two forwards."""

    name = "model"
    has_gradient = False  # whether :meth:`gradient` is implemented
    has_hvp = False  # whether :meth:`hvp` is implemented

    def __init__(self, input_shape: tuple[int, ...], num_classes: int):
        self.input_shape = tuple(input_shape)
        self.num_classes = int(num_classes)
        self.specs: tuple[ParamSpec, ...] = ()

    @property
    def num_params(self) -> int:
        return sum(s.size for s in self.specs)

    @property
    def activation_width(self) -> int:
        """The largest activation of one sample (floats); evaluation sizes its node chunks by it."""
        return max([64, *getattr(self, "hidden", ())])

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of ``theta (..., P)`` as named tensors ``(..., *shape)``."""
        out, offset = {}, 0
        lead = theta.shape[:-1]
        for s in self.specs:
            out[s.name] = theta[..., offset : offset + s.size].reshape(*lead, *s.shape)
            offset += s.size
        return out

    def init(self, n_nodes: int, generator: torch.Generator, same: bool = True) -> torch.Tensor:
        """``(N, P)`` initial parameters, PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)) per tensor.

        ``same=True`` gives every node the same initial model (the usual
        decentralized-learning start); otherwise each node draws its own.
        """
        rows = 1 if same else n_nodes
        parts = []
        for s in self.specs:
            bound = 1.0 / math.sqrt(s.fan_in)
            parts.append((torch.rand(rows, s.size, generator=generator) * 2 - 1) * bound)
        theta = torch.cat(parts, dim=1)
        return theta.expand(n_nodes, -1).clone() if same else theta

    def forward(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, B, C)`` from ``theta (N, P)`` and ``x (N, B, *input_shape)`` or shared ``x (B, *input_shape)``."""
        return self.apply(self.unflatten(theta), x)

    def apply(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` on named parameters ``(N, *shape)`` (lets autograd skip the flat slices)."""
        raise NotImplementedError

    def forward_single(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, C)`` of one node: ``theta (P,)``, ``x (B, *input_shape)``."""
        raise NotImplementedError

    def gradient(
        self,
        theta: torch.Tensor,
        x: torch.Tensor,
        output_grad: Callable[[torch.Tensor], torch.Tensor],
        groups: Sequence[int] | None = None,
    ) -> list[torch.Tensor]:
        """Hand-written backward pass: ``(N, P)`` gradients of ``sum(output_grad(logits) * logits)``.

        ``output_grad`` maps the logits ``(N, B, C)`` to the derivative of the
        loss with respect to them (same shape). ``groups`` splits the B samples
        into consecutive groups of these sizes (default: one group) and the
        result has one gradient per group, each summed over its own samples
        only: several losses at the same parameters share one forward pass.
        Only models with ``has_gradient`` implement it; callers use autograd for the others.
        """
        raise NotImplementedError(f"model {self.name!r} has no hand-written backward pass")

    def hvp(
        self,
        theta: torch.Tensor,
        x: torch.Tensor,
        tangents: torch.Tensor,
        output_grad: Callable[[torch.Tensor], torch.Tensor],
        output_hvp: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """Hand-written Hessian-vector products: ``(S, N, P)``, row ``[s, k]`` is ``H_k tangents[s, k]``.

        ``H_k`` is the Hessian, at ``theta[k]``, of node k's loss whose derivative with respect to its logits
        ``(N, B, C)`` is ``output_grad(logits)``; ``output_hvp(logits, r)`` maps logit tangents ``r (N, S, B, C)``
        through that loss's Hessian with respect to the logits. ``tangents (S, N, P)``. Only models with
        ``has_hvp`` implement it; callers use ``torch.func`` for the others.
        """
        raise NotImplementedError(f"model {self.name!r} has no hand-written Hessian-vector product")


def _dense_specs(sizes: list[int]) -> tuple[ParamSpec, ...]:
    specs = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        specs += [ParamSpec(f"w{i}", (fan_out, fan_in), fan_in), ParamSpec(f"b{i}", (fan_out,), fan_in)]
    return tuple(specs)


def _dense_stack(
    params: dict[str, torch.Tensor], h: torch.Tensor, n_layers: int, inputs: list[torch.Tensor] | None = None
) -> torch.Tensor:
    """Batched dense layers with ReLU between; ``h (N, B, d)`` or shared ``(B, d)``.

    ``inputs``, when given, receives each layer's input (what its backward pass needs).
    """
    for i in range(n_layers):
        if inputs is not None:
            inputs.append(h)
        w, b = params[f"w{i}"], params[f"b{i}"]
        if h.dim() == 3 and w.dim() == 3:  # per-node inputs: one fused batched multiply-add
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        else:
            h = torch.matmul(h, w.transpose(-1, -2)) + b.unsqueeze(-2)
        if i < n_layers - 1:
            h = torch.relu(h)
    return h


def _dense_backward(
    params: dict[str, torch.Tensor], inputs: list[torch.Tensor], grad_out: torch.Tensor, groups: Sequence[int]
) -> list[list[torch.Tensor]]:
    """Per sample group, gradients ``[w0, b0, w1, b1, ...]`` of ``sum(grad_out * output)`` for :func:`_dense_stack`.

    ``inputs`` are the layer inputs it recorded; ``grad_out (N, B, C)``;
    ``groups`` sizes of consecutive sample groups (summing to B). A ReLU
    output is positive exactly where its input was, so the recorded inputs
    also give the ReLU masks (autograd uses the same rule).
    """
    bounds = [0, *itertools.accumulate(groups)]
    grads: list[list[torch.Tensor]] = [[] for _ in groups]
    g = grad_out
    for i in reversed(range(len(inputs))):
        h = inputs[i]
        for out, start, stop in zip(grads, bounds[:-1], bounds[1:], strict=True):
            g_part, h_part = g[:, start:stop], h[..., start:stop, :]  # h may be shared by all nodes, (B, in)
            out += [g_part.sum(1), torch.matmul(g_part.transpose(1, 2), h_part)]  # (N, out), (N, out, in)
        if i > 0:
            # ReLU's backward as autograd takes it (gradient where the output is > 0); g * (h > 0) is 5x slower
            g = torch.ops.aten.threshold_backward(torch.bmm(g, params[f"w{i}"]), h, 0.0)
    for out in grads:
        out.reverse()
    return grads


def _dense_hvp(
    params: dict[str, torch.Tensor],
    tangents: dict[str, torch.Tensor],
    inputs: list[torch.Tensor],
    grad_out: torch.Tensor,
    hvp_out: Callable[[torch.Tensor], torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Pearlmutter's R-operator through :func:`_dense_stack`: the directional derivative of its backward pass.

    ``params (N, *shape)``; ``tangents (S, N, *shape)``, the same names; ``inputs`` the layer inputs
    ``(N, B, in)`` the forward recorded; ``grad_out (N, B, C)`` the loss's derivative at the logits and
    ``hvp_out`` maps the logits' tangent ``(N, S, B, C)`` through the loss's Hessian. Returns, per name,
    ``(N, S, *shape)``. Tangent activations are kept ``(N, S, B, d)`` so that each product with a node's own
    weights or inputs is one batched multiply over the N nodes, the S tangents folded into a matrix side.
    """
    n, b = inputs[0].shape[:2]
    s = next(iter(tangents.values())).shape[0]
    tangent_inputs: list[torch.Tensor | None] = []
    tangent_h: torch.Tensor | None = None  # R(h_i); the network's input has none
    for i, h in enumerate(inputs):
        w, v, c = params[f"w{i}"], tangents[f"w{i}"], tangents[f"b{i}"]
        out, fan_in = w.shape[1:]
        # R(z_i) = h_i V_i^T + c_i + R(h_i) W_i^T
        rz = torch.bmm(h, v.permute(1, 3, 0, 2).reshape(n, fan_in, s * out)).view(n, b, s, out).transpose(1, 2)
        rz = rz + c.transpose(0, 1).unsqueeze(2)
        if tangent_h is not None:
            rz = rz + torch.bmm(tangent_h.reshape(n, s * b, fan_in), w.transpose(1, 2)).view(n, s, b, out)
        tangent_inputs.append(tangent_h)
        if i + 1 < len(inputs):
            tangent_h = rz * (inputs[i + 1] > 0).unsqueeze(1)  # ReLU: the next input is positive where z_i is
    g, rg = grad_out, hvp_out(rz)
    result: dict[str, torch.Tensor] = {}
    for i in reversed(range(len(inputs))):
        h, w, v = inputs[i], params[f"w{i}"], tangents[f"w{i}"]
        out, fan_in = w.shape[1:]
        # R(dW_i) = R(g_i)^T h_i + g_i^T R(h_i); R(db_i) = sum_b R(g_i)
        rdw = torch.bmm(rg.transpose(2, 3).reshape(n, s * out, b), h).view(n, s, out, fan_in)
        rh = tangent_inputs[i]
        if rh is not None:
            rdw = rdw + torch.bmm(g.transpose(1, 2), rh.transpose(1, 2).reshape(n, b, s * fan_in)).view(
                n, out, s, fan_in
            ).transpose(1, 2)
        result[f"w{i}"], result[f"b{i}"] = rdw, rg.sum(2)
        if i > 0:
            # g_{i-1} = (g_i W_i) * 1[h_i > 0], so R(g_{i-1}) = (R(g_i) W_i + g_i V_i) * 1[h_i > 0]
            from_v = torch.bmm(g, v.permute(1, 2, 0, 3).reshape(n, out, s * fan_in)).view(n, b, s, fan_in)
            rg = (torch.bmm(rg.reshape(n, s * b, out), w).view(n, s, b, fan_in) + from_v.transpose(1, 2)) * (
                h > 0
            ).unsqueeze(1)
            g = torch.ops.aten.threshold_backward(torch.bmm(g, w), h, 0.0)
    return result


def _dense_single(params: dict[str, torch.Tensor], h: torch.Tensor, n_layers: int) -> torch.Tensor:
    for i in range(n_layers):
        h = F.linear(h, params[f"w{i}"], params[f"b{i}"])
        if i < n_layers - 1:
            h = F.relu(h)
    return h


class MLP(Model):
    """Fully connected ReLU network; ``hidden=()`` is multinomial logistic regression."""

    name = "mlp"
    has_gradient = True
    has_hvp = True

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...] = (64,)):
        super().__init__(input_shape, num_classes)
        self.hidden = tuple(hidden)
        self.specs = _dense_specs([math.prod(self.input_shape), *self.hidden, num_classes])
        self.n_layers = len(self.hidden) + 1

    def _flatten(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(*x.shape[: x.dim() - len(self.input_shape)], -1)

    def apply(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return _dense_stack(params, self._flatten(x), self.n_layers)

    def forward_single(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return _dense_single(self.unflatten(theta), self._flatten(x), self.n_layers)

    def gradient(
        self,
        theta: torch.Tensor,
        x: torch.Tensor,
        output_grad: Callable[[torch.Tensor], torch.Tensor],
        groups: Sequence[int] | None = None,
    ) -> list[torch.Tensor]:
        # on these small per-node tensors autograd's bookkeeping costs as much as the arithmetic
        params = self.unflatten(theta)
        inputs: list[torch.Tensor] = []
        h = self._flatten(x)
        logits = _dense_stack(params, h, self.n_layers, inputs)
        grads = _dense_backward(params, inputs, output_grad(logits), groups or (h.shape[-2],))
        n = theta.shape[0]
        return [torch.cat([g.reshape(n, -1) for g in group], dim=1) for group in grads]

    def hvp(
        self,
        theta: torch.Tensor,
        x: torch.Tensor,
        tangents: torch.Tensor,
        output_grad: Callable[[torch.Tensor], torch.Tensor],
        output_hvp: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        # torch.func's forward-over-reverse re-traces the network per call and moves S x N x P tensors through
        # generic batching rules; the R-operator by hand is a few batched products (benchmarks/influence.py)
        params = self.unflatten(theta)
        h = self._flatten(x)
        if h.dim() == 2:  # inputs shared by every node, e.g. the probe set
            h = h.expand(theta.shape[0], *h.shape)
        inputs: list[torch.Tensor] = []
        logits = _dense_stack(params, h, self.n_layers, inputs)
        rows = _dense_hvp(params, self.unflatten(tangents), inputs, output_grad(logits), partial(output_hvp, logits))
        s, n = tangents.shape[:2]
        return torch.cat([rows[spec.name].transpose(0, 1).reshape(s, n, -1) for spec in self.specs], dim=-1)


class LogisticRegression(MLP):
    name = "logreg"

    def __init__(self, input_shape: tuple[int, ...], num_classes: int):
        super().__init__(input_shape, num_classes, hidden=())


class CNN(Model):
    """Two 3x3 conv + ReLU + 2x2 max-pool blocks (16, 32 channels), then dense 64 -> classes.

    Works on any image ``(C, H, W)`` with H, W >= 4: 28x28 (MNIST), 32x32
    (CIFAR-10), 8x8 (digits). Batched over nodes with grouped convolutions.
    """

    name = "cnn"
    channels = (16, 32)
    dense = 64

    def __init__(self, input_shape: tuple[int, ...], num_classes: int):
        super().__init__(input_shape, num_classes)
        if len(self.input_shape) == 1 and math.isqrt(self.input_shape[0]) ** 2 == self.input_shape[0]:
            side = math.isqrt(self.input_shape[0])  # flat square images (digits) are viewed as 1 x side x side
            self.image_shape = (1, side, side)
        elif len(self.input_shape) == 3:
            self.image_shape = self.input_shape
        else:
            raise ConfigError(
                f"model 'cnn' needs image inputs (C, H, W) or flat square images; got input shape {self.input_shape}"
            )
        c, h, w = self.image_shape
        if h < 4 or w < 4:
            raise ConfigError(f"model 'cnn' needs images of at least 4x4, got {h}x{w}")
        c1, c2 = self.channels
        flat = c2 * (h // 4) * (w // 4)
        self.specs = (
            ParamSpec("conv0", (c1, c, 3, 3), c * 9),
            ParamSpec("cb0", (c1,), c * 9),
            ParamSpec("conv1", (c2, c1, 3, 3), c1 * 9),
            ParamSpec("cb1", (c2,), c1 * 9),
            *_dense_specs([flat, self.dense, num_classes]),
        )

    @property
    def activation_width(self) -> int:
        c, h, w = self.image_shape
        return self.channels[0] * h * w

    def apply(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        p = params
        n = p["cb0"].shape[0]
        c, h, w = self.image_shape
        if x.dim() == len(self.input_shape) + 1:  # one input batch shared by all nodes: N x C_out filters
            b = x.shape[0]
            z = F.conv2d(x.reshape(b, c, h, w), p["conv0"].flatten(0, 1), p["cb0"].flatten(), padding=1)
        else:  # per-node inputs: nodes become channel groups
            b = x.shape[1]
            z = x.reshape(n, b, c, h, w).transpose(0, 1).reshape(b, n * c, h, w)
            z = F.conv2d(z, p["conv0"].flatten(0, 1), p["cb0"].flatten(), padding=1, groups=n)
        z = F.max_pool2d(F.relu(z), 2)
        z = F.conv2d(z, p["conv1"].flatten(0, 1), p["cb1"].flatten(), padding=1, groups=n)
        z = F.max_pool2d(F.relu(z), 2)
        z = z.reshape(b, n, -1).transpose(0, 1)  # (N, B, features)
        return _dense_stack(p, z, 2)

    def forward_single(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        p = self.unflatten(theta)
        z = x.reshape(x.shape[0], *self.image_shape)
        z = F.max_pool2d(F.relu(F.conv2d(z, p["conv0"], p["cb0"], padding=1)), 2)
        z = F.max_pool2d(F.relu(F.conv2d(z, p["conv1"], p["cb1"], padding=1)), 2)
        return _dense_single(p, z.flatten(1), 2)


ModuleFactory = Callable[[tuple[int, ...], int], torch.nn.Module]
PLUGIN_MODELS: dict[str, ModuleFactory] = {}  # registered by plugins (registry.register_model); not built-ins


class ModuleModel(Model):
    """A ``torch.nn.Module`` from a plugin's factory, run for N nodes at once.

    The module is built once and called with each node's parameters by
    ``torch.func.functional_call``, batched over nodes with ``torch.func.vmap``;
    gradients come from autograd and Hessian-vector products from
    forward-over-reverse, as for the CNN. It runs in eval mode (dropout off)
    and may hold no buffers: BatchNorm's running statistics would be state
    outside the node's parameter vector. Initial parameters are the module's
    own initialisation, drawn under a seed taken from the run's generator.
    """

    def __init__(self, name: str, factory: ModuleFactory, input_shape: tuple[int, ...], num_classes: int):
        super().__init__(input_shape, num_classes)
        self.name, self.factory = name, factory
        self.module = self._build()
        buffers = [n for n, _ in self.module.named_buffers()]
        if buffers:
            raise ConfigError(
                f"model {name!r}: the module has buffers ({', '.join(buffers)}), state outside its parameters that"
                " the engine cannot keep per node (BatchNorm's running statistics: use GroupNorm or LayerNorm)"
            )
        # layers whose training behaviour eval mode turns off, for `check` to say so
        self.train_only_layers = tuple(
            n for n, m in self.module.named_modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)
        )
        self.specs = tuple(ParamSpec(n, tuple(p.shape), 0) for n, p in self.module.named_parameters())
        if not self.specs:
            raise ConfigError(f"model {name!r}: the module has no parameters")
        self._activation_width = self._check_output()

    def _build(self) -> torch.nn.Module:
        module = self.factory(self.input_shape, self.num_classes)
        if not isinstance(module, torch.nn.Module):
            raise ConfigError(f"model {self.name!r}: the factory must return a torch.nn.Module, got {type(module)}")
        return module.eval()

    def _check_output(self) -> int:
        """Run a batch of two zero inputs; return the widest activation per sample. ConfigError on a wrong output."""
        widths = [math.prod(self.input_shape)]

        def record(_module: torch.nn.Module, _inputs: object, output: object) -> None:
            if isinstance(output, torch.Tensor) and output.dim() > 0 and output.shape[0] == 2:
                widths.append(output[0].numel())

        hooks = [m.register_forward_hook(record) for m in self.module.modules()]
        try:
            with torch.no_grad():
                logits = self.module(torch.zeros(2, *self.input_shape))
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(f"model {self.name!r} cannot take inputs of shape {self.input_shape}: {exc}") from exc
        finally:
            for hook in hooks:
                hook.remove()
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (2, self.num_classes):
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
            raise ConfigError(
                f"model {self.name!r} maps a batch of shape (2, *{self.input_shape}) to {got}; it must return logits"
                f" of shape (2, {self.num_classes})"
            )
        return max(widths)

    @property
    def activation_width(self) -> int:
        return self._activation_width

    def init(self, n_nodes: int, generator: torch.Generator, same: bool = True) -> torch.Tensor:
        rows = []
        for _ in range(1 if same else n_nodes):
            seed = int(torch.randint(0, 2**62, (1,), generator=generator))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                module = self._build()
            rows.append(torch.cat([p.detach().reshape(-1).float() for p in module.parameters()]))
        theta = torch.stack(rows)
        return theta.expand(n_nodes, -1).clone() if same else theta

    def _call(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self.module, params, (x,))

    def apply(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        shared = x.dim() == len(self.input_shape) + 1
        return torch.func.vmap(self._call, in_dims=(0, None if shared else 0))(params, x)

    def forward_single(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self._call(self.unflatten(theta), x)


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...] = (64,)) -> Model:
    check_choice("model", name, MODELS)
    if name in PLUGIN_MODELS:
        return ModuleModel(name, PLUGIN_MODELS[name], input_shape, num_classes)
    if name == "logreg":
        return LogisticRegression(input_shape, num_classes)
    if name == "mlp":
        if not hidden or any(int(h) < 1 for h in hidden):
            raise ConfigError(f"mlp hidden sizes must be positive integers, got {hidden}")
        return MLP(input_shape, num_classes, tuple(int(h) for h in hidden))
    return CNN(input_shape, num_classes)
