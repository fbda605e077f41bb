"""torch.optim.NAdam: Dozat's momentum schedule with a running product."""

import jax.numpy as jnp

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.torch_compat._common import (
    coupled_decay,
    decoupled_decay,
    lerp,
    signed,
)


@rule(
    name="torch_nadam",
    slots={
        "exp_avg": Slot(),
        "exp_avg_sq": Slot(),
        "mu_product": Slot(init=1.0, shape=lambda shape: ()),
    },
    constraints={
        "lr": ">= 0",
        "beta1": "[0, 1)",
        "beta2": "[0, 1)",
        "eps": ">= 0",
        "weight_decay": ">= 0",
        "momentum_decay": ">= 0",
    },
    positional=(
        "lr",
        "betas",
        "eps",
        "weight_decay",
        "momentum_decay",
        "decoupled_weight_decay",
    ),
    grouped={"betas": ("beta1", "beta2")},
    ignored={"foreach": None, "capturable": False, "differentiable": False},
    keyword=("foreach", "maximize", "capturable", "differentiable"),
    storage_args=False,
)
def nadam(
    grad: Array,
    exp_avg: Array,
    exp_avg_sq: Array,
    mu_product: Array,
    param: Array,
    step: Array,
    *,
    lr: Scalar = 2e-3,
    beta1: Scalar = 0.9,
    beta2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 0.0,
    momentum_decay: Scalar = 4e-3,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
) -> tuple[Array, Array, Array, Array]:
    r"""``torch.optim.NAdam``: the same arguments, defaults and numbers.

    Update (``t`` counts from 1, ``psi = momentum_decay``)::

        g     = -g if maximize;  g = g + wd * p  (or p = p * (1 - lr * wd), decoupled)
        mu_t  = beta1 * (1 - 0.5 * 0.96**(t * psi));   P_t = mu_1 * ... * mu_t
        m     = lerp(m, g, 1 - beta1);   v = beta2 * v + (1 - beta2) * g**2
        r     = sqrt(v / (1 - beta2**t)) + eps
        p     = p - lr * (1 - mu_t) / (1 - P_t) * g / r
                  - lr * mu_{t+1} / (1 - P_t * mu_{t+1}) * m / r

    Where optax differs: ``optax.nadam`` is Adam with a Nesterov first moment
    and a constant ``beta1``; torch follows Dozat's schedule ``mu_t``.

    Args:
        lr: learning rate, a number or a schedule of the step count.
        betas: ``(beta1, beta2)``, the moments' decay rates.
        eps: added to the bias-corrected root of the second moment.
        weight_decay: L2 penalty (or decoupled decay, see below).
        momentum_decay: ``psi`` of the momentum schedule.
        decoupled_weight_decay: shrink the parameters (AdamW-style) instead.
        foreach: accepted and ignored (see ``jaxopt_rules.torch_compat``).
        maximize: maximise the objective instead of minimising it.
        capturable: accepted and ignored (see ``jaxopt_rules.torch_compat``).
        differentiable: accepted and ignored (see ``jaxopt_rules.torch_compat``).

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose state holds torch's
        ``exp_avg``, ``exp_avg_sq`` and ``mu_product`` (a scalar per leaf);
        ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> from jaxopt_rules import torch_compat
        >>> tx = torch_compat.nadam(lr=0.1)
        >>> params = {"w": jnp.array([1.0])}
        >>> state = tx.init(params)
        >>> float(state.mu_product["w"])
        1.0

    References:
        Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016
        workshop. Verified against ``torch.optim.NAdam`` (torch 2.13).
    """
    grad = signed(grad, maximize)
    bias_correction2 = 1 - beta2**step
    if not decoupled_weight_decay:
        grad = coupled_decay(grad, param, weight_decay)
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((step + 1) * momentum_decay))
    mu_product = mu_product * mu
    exp_avg = lerp(exp_avg, grad, 1 - beta1)
    exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * (grad * grad)
    denom = jnp.sqrt(exp_avg_sq / bias_correction2) + eps
    mu_product_next = mu_product * mu_next
    update = (-lr * (1.0 - mu) / (1.0 - mu_product)) * (grad / denom) + (
        (-lr * mu_next) / (1.0 - mu_product_next)
    ) * (exp_avg / denom)
    if decoupled_weight_decay:
        update = decoupled_decay(update, param, lr, weight_decay)
    return update, exp_avg, exp_avg_sq, mu_product
