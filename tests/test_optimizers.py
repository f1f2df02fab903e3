"""Optimizers: each one's defining update on hand-computable problems, and where weight decay applies."""

from __future__ import annotations

import math

import torch
from torch import nn

import zoo
from zoo.core.build import build_optimizer, param_groups

G = torch.tensor([0.5, -2.0], dtype=torch.float64)  # a gradient with two very different scales


def build(spec, w: nn.Parameter) -> torch.optim.Optimizer:
    return zoo.optimizers.build(spec, "optimizer", params=[w])


def param(values=(1.0, -1.0)) -> nn.Parameter:
    return nn.Parameter(torch.tensor(values, dtype=torch.float64))


def steps_taken(spec, grads, start=(1.0, -1.0)) -> list[torch.Tensor]:
    """The change to the weights made by each step, fed the given gradients in turn."""
    w = param(start)
    opt = build(spec, w)
    moves = []
    for g in grads:
        before = w.detach().clone()
        w.grad = torch.as_tensor(g, dtype=torch.float64).clone()
        opt.step()
        moves.append(w.detach() - before)
    return moves


def close(a, b, rel=1e-9) -> bool:
    a, b = (torch.as_tensor(x, dtype=torch.float64) for x in (a, b))
    return torch.allclose(a, b, rtol=rel, atol=1e-12)


def test_the_classic_optimizers_are_registered():
    classics = {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"}
    assert classics <= set(zoo.optimizers.names())


def test_sgd_steps_minus_lr_times_gradient():
    moves = steps_taken({"name": "sgd", "lr": 0.3}, [G, 2 * G, -G])
    assert all(close(m, -0.3 * g) for m, g in zip(moves, [G, 2 * G, -G]))


def test_momentum_accumulates_velocity():
    beta, lr = 0.9, 0.1
    moves = steps_taken({"name": "momentum", "lr": lr, "momentum": beta}, [G, G, G])
    # v1 = g, v2 = beta g + g, v3 = beta v2 + g: the same gradient pushes harder each time.
    assert close(moves[0], -lr * G)
    assert close(moves[1], -lr * (1 + beta) * G)
    assert close(moves[2], -lr * (1 + beta + beta**2) * G)
    assert moves[1].abs().sum() > moves[0].abs().sum()


def test_nesterov_differs_from_heavy_ball_on_the_same_gradients():
    beta, lr = 0.9, 0.1
    heavy = steps_taken({"name": "momentum", "lr": lr, "momentum": beta}, [G, G])
    ahead = steps_taken({"name": "nesterov", "lr": lr, "momentum": beta}, [G, G])
    # torch's form: v = beta v + g, step = g + beta v, i.e. one velocity update further along.
    assert close(ahead[0], -lr * (1 + beta) * G)
    assert close(ahead[1], -lr * (1 + beta + beta**2) * G)
    assert not close(ahead[0], heavy[0])


def test_nesterov_follows_the_look_ahead_formula():
    """Sutskever et al. 2013: v' = mu v - lr grad(theta + mu v), theta' = theta + v.

    torch tracks the look-ahead point phi = theta + mu v instead of theta, so on a problem whose
    gradient depends on where it is taken (a quadratic) its weights must equal theta + mu v.
    """
    mu, lr = 0.9, 0.05
    curvature = torch.tensor([1.0, 4.0], dtype=torch.float64)  # f(w) = sum(curvature * w^2) / 2

    w = param((1.0, -1.0))
    opt = build({"name": "nesterov", "lr": lr, "momentum": mu}, w)
    theta, v = w.detach().clone(), torch.zeros(2, dtype=torch.float64)
    for _ in range(6):
        w.grad = curvature * w.detach()
        opt.step()
        v = mu * v - lr * curvature * (theta + mu * v)
        theta = theta + v
        assert close(w.detach(), theta + mu * v)
    # and it is not heavy-ball momentum, which takes the gradient at theta itself
    w2 = param((1.0, -1.0))
    opt2 = build({"name": "momentum", "lr": lr, "momentum": mu}, w2)
    for _ in range(6):
        w2.grad = curvature * w2.detach()
        opt2.step()
    assert not close(w2.detach(), w.detach(), rel=1e-3)


def test_adagrad_step_shrinks_as_squared_gradients_accumulate():
    lr = 0.1
    moves = steps_taken({"name": "adagrad", "lr": lr}, [G] * 4)
    # step k divides by sqrt(k g^2): lr, lr/sqrt 2, lr/sqrt 3, ... whatever the gradient's scale
    for k, move in enumerate(moves, start=1):
        assert close(move, -lr / math.sqrt(k) * torch.sign(G), rel=1e-6)


def test_rmsprop_divides_by_a_moving_average_of_squared_gradients():
    lr, alpha = 0.01, 0.9
    g1, g2 = torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.1])
    moves = steps_taken({"name": "rmsprop", "lr": lr, "alpha": alpha}, [g1, g2, g2])
    avg = (1 - alpha) * g1**2
    assert close(moves[0], -lr * g1 / avg.sqrt(), rel=1e-6)
    avg = alpha * avg + (1 - alpha) * g2**2
    assert close(moves[1], -lr * g2 / avg.sqrt(), rel=1e-6)
    avg = alpha * avg + (1 - alpha) * g2**2
    assert close(moves[2], -lr * g2 / avg.sqrt(), rel=1e-6)
    # Unlike adagrad the big first gradient fades: the small coordinate's step grows as it does.
    assert abs(moves[2][1]) > abs(moves[1][1])


def test_adam_first_step_is_lr_whatever_the_gradient_scale():
    lr = 0.01
    moves = steps_taken({"name": "adam", "lr": lr}, [torch.tensor([1e-3, 50.0])])
    # bias correction makes m/sqrt(v) = g/|g| on the first step
    assert close(moves[0], [-lr, -lr], rel=1e-4)


def test_adamw_decays_weights_directly_and_adam_through_the_moments():
    lr, wd = 0.1, 0.01
    zero = torch.zeros(2)
    start = (2.0, -3.0)
    decoupled = steps_taken({"name": "adamw", "lr": lr, "weight_decay": wd}, [zero], start)
    # AdamW: w <- w - lr wd w before the Adam step, which is nothing for a zero gradient.
    assert close(decoupled[0], [-lr * wd * 2.0, lr * wd * 3.0])
    coupled = steps_taken({"name": "adam", "lr": lr, "weight_decay": wd}, [zero], start)
    # Adam: wd w joins the gradient, whose first normalized step is lr in size, not lr wd w.
    assert close(coupled[0], [-lr, lr], rel=1e-4)


# --- which parameters are decayed --------------------------------------------------------------


def small_net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim == 1:
                p.fill_(0.5)  # nonzero so that decay would show
    return net


def step_with_zero_gradients(net: nn.Module, decay_norm_and_bias: bool) -> dict[str, torch.Tensor]:
    """The ratio new/old of each parameter after one AdamW step with zero gradients."""
    opt = build_optimizer({"name": "adamw", "lr": 0.1, "weight_decay": 0.1}, net, decay_norm_and_bias)
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    return {name: p.detach() / before[name] for name, p in net.named_parameters()}


def test_param_groups_put_biases_and_norm_scales_in_an_undecayed_group():
    net = small_net()
    groups = param_groups(net)
    assert len(groups) == 2 and groups[1]["weight_decay"] == 0.0
    undecayed = {id(p) for p in groups[1]["params"]}
    one_d = {name for name, p in net.named_parameters() if id(p) in undecayed}
    assert one_d == {"0.bias", "1.weight", "1.bias", "2.bias"}
    assert len(param_groups(net, decay_norm_and_bias=True)) == 1


def test_weight_decay_shrinks_only_matrices_by_default():
    ratios = step_with_zero_gradients(small_net(), decay_norm_and_bias=False)
    shrink = 1 - 0.1 * 0.1
    for name, ratio in ratios.items():
        expected = shrink if name in ("0.weight", "2.weight") else 1.0
        assert torch.allclose(ratio, torch.full_like(ratio, expected)), name


def test_decay_norm_and_bias_decays_everything():
    ratios = step_with_zero_gradients(small_net(), decay_norm_and_bias=True)
    for name, ratio in ratios.items():
        assert torch.allclose(ratio, torch.full_like(ratio, 1 - 0.1 * 0.1)), name
