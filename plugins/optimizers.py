"""Optimizers from torch.optim, each with the defaults practitioners start from."""

from __future__ import annotations

import torch
from pydantic import Field
from typing_extensions import Annotated

from zoo import optimizers

LR = Annotated[float, Field(gt=0, description="learning rate")]
Decay = Annotated[float, Field(ge=0, description="weight decay")]
Beta = Annotated[float, Field(ge=0, lt=1)]
Eps = Annotated[float, Field(ge=0)]


@optimizers.register("sgd")
def sgd(params, *, lr: LR = 0.1, momentum: Beta = 0.0, nesterov: bool = False, weight_decay: Decay = 0.0):
    """Stochastic gradient descent, optionally with momentum (``nesterov``: Nesterov's)."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)


@optimizers.register("momentum")
def momentum(params, *, lr: LR = 0.1, momentum: Beta = 0.9, weight_decay: Decay = 0.0):
    """SGD with heavy-ball momentum: v = beta v + grad, w -= lr v."""
    return sgd(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


@optimizers.register("nesterov")
def nesterov(params, *, lr: LR = 0.1, momentum: Beta = 0.9, weight_decay: Decay = 0.0):
    """SGD with Nesterov momentum: the gradient is taken at the look-ahead point."""
    return sgd(params, lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)


@optimizers.register("adagrad")
def adagrad(params, *, lr: LR = 0.01, weight_decay: Decay = 0.0, eps: Eps = 1e-10):
    """Adagrad: divides by the root of all past squared gradients, so the step size decays towards zero.

    ``eps`` is added to that root.
    """
    return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay, eps=eps)


@optimizers.register("rmsprop")
def rmsprop(params, *, lr: LR = 0.001, alpha: Beta = 0.99, momentum: Beta = 0.0, weight_decay: Decay = 0.0, eps: Eps = 1e-8):
    """RMSProp: divides by a moving average of squared gradients (Hinton's lecture 6e).

    ``alpha`` is the average's decay, ``eps`` is added to its root, ``momentum`` adds heavy-ball momentum.
    """
    return torch.optim.RMSprop(params, lr=lr, alpha=alpha, momentum=momentum, weight_decay=weight_decay, eps=eps)


@optimizers.register("adam")
def adam(params, *, lr: LR = 0.001, beta1: Beta = 0.9, beta2: Beta = 0.999, weight_decay: Decay = 0.0, eps: Eps = 1e-8):
    """Adam (Kingma & Ba 2015): bias-corrected first and second moments; L2 decay added to the gradient.

    ``beta1`` and ``beta2`` are the decays of the two moment averages, ``eps`` is added to the root of the second.
    """
    return torch.optim.Adam(params, lr=lr, betas=(beta1, beta2), weight_decay=weight_decay, eps=eps)


@optimizers.register("adamw")
def adamw(params, *, lr: LR = 0.001, beta1: Beta = 0.9, beta2: Beta = 0.999, weight_decay: Decay = 0.01, eps: Eps = 1e-8):
    """AdamW (Loshchilov & Hutter 2019): Adam with weight decay applied to the weights, not the gradient.

    ``beta1`` and ``beta2`` are the decays of the two moment averages, ``eps`` is added to the root of the second.
    """
    return torch.optim.AdamW(params, lr=lr, betas=(beta1, beta2), weight_decay=weight_decay, eps=eps)
