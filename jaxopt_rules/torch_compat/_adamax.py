"""torch.optim.Adamax: Adam with an infinity-norm second moment."""

import jax.numpy as jnp

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.torch_compat._common import (
    coupled_decay,
    lerp,
    signed,
)


@rule(
    name="torch_adamax",
    slots={"exp_avg": Slot(), "exp_inf": Slot()},
    constraints={
        "lr": ">= 0",
        "beta1": "[0, 1)",
        "beta2": "[0, 1)",
        "eps": ">= 0",
        "weight_decay": ">= 0",
    },
    positional=("lr", "betas", "eps", "weight_decay", "foreach"),
    grouped={"betas": ("beta1", "beta2")},
    ignored={"foreach": None, "differentiable": False, "capturable": False},
    keyword=("maximize", "differentiable", "capturable"),
    storage_args=False,
)
def adamax(
    grad: Array,
    exp_avg: Array,
    exp_inf: Array,
    param: Array,
    step: Array,
    *,
    lr: Scalar = 2e-3,
    beta1: Scalar = 0.9,
    beta2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 0.0,
    maximize: bool = False,
) -> tuple[Array, Array, Array]:
    r"""``torch.optim.Adamax``: the same arguments, defaults and numbers.

    Update (``t`` counts from 1)::

        g = -g if maximize;  g = g + weight_decay * p
        m = lerp(m, g, 1 - beta1)
        u = max(beta2 * u, |g| + eps)
        p = p - lr / (1 - beta1**t) * m / u

    ``optax.adamax`` gives the same numbers (without weight decay).

    Args:
        lr: learning rate, a number or a schedule of the step count.
        betas: ``(beta1, beta2)``: decay of the mean and of the infinity norm.
        eps: added to ``|g|`` before the maximum.
        weight_decay: L2 penalty added to the gradient.
        foreach: accepted and ignored (see ``jaxopt_rules.torch_compat``).
        maximize: maximise the objective instead of minimising it.
        differentiable: accepted and ignored (see ``jaxopt_rules.torch_compat``).
        capturable: accepted and ignored (see ``jaxopt_rules.torch_compat``).

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose state holds torch's
        ``exp_avg`` and ``exp_inf``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> from jaxopt_rules import torch_compat
        >>> tx = torch_compat.adamax(lr=0.1)
        >>> params = {"w": jnp.array([1.0])}
        >>> updates, _ = tx.update(params, tx.init(params), params)
        >>> optax.apply_updates(params, updates)["w"]
        Array([0.9], dtype=float32)

    References:
        Kingma and Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015,
        section 7.1. Verified against ``torch.optim.Adamax`` (torch 2.13).
    """
    grad = coupled_decay(signed(grad, maximize), param, weight_decay)
    exp_avg = lerp(exp_avg, grad, 1 - beta1)
    exp_inf = jnp.maximum(exp_inf * beta2, jnp.abs(grad) + eps)
    clr = lr / (1 - beta1**step)
    return (-clr) * (exp_avg / exp_inf), exp_avg, exp_inf
