"""torch.optim.RAdam: Adam with the variance rectification of Liu et al."""

import jax.numpy as jnp

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.torch_compat._common import (
    coupled_decay,
    decoupled_decay,
    lerp,
    signed,
)


@rule(
    name="torch_radam",
    slots={"exp_avg": Slot(), "exp_avg_sq": Slot()},
    constraints={
        "lr": ">= 0",
        "beta1": "[0, 1)",
        "beta2": "[0, 1)",
        "eps": ">= 0",
        "weight_decay": ">= 0",
    },
    positional=("lr", "betas", "eps", "weight_decay", "decoupled_weight_decay"),
    grouped={"betas": ("beta1", "beta2")},
    ignored={"foreach": None, "capturable": False, "differentiable": False},
    keyword=("foreach", "maximize", "capturable", "differentiable"),
    storage_args=False,
)
def radam(
    grad: Array,
    exp_avg: Array,
    exp_avg_sq: Array,
    param: Array,
    step: Array,
    *,
    lr: Scalar = 1e-3,
    beta1: Scalar = 0.9,
    beta2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 0.0,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
) -> tuple[Array, Array, Array]:
    r"""``torch.optim.RAdam``: the same arguments, defaults and numbers.

    Update (``t`` counts from 1)::

        g     = -g if maximize;  g = g + wd * p  (or p = p * (1 - lr * wd), decoupled)
        m     = lerp(m, g, 1 - beta1);   v = beta2 * v + (1 - beta2) * g**2
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 t beta2**t / (1 - beta2**t)
        r_t   = sqrt((rho_t - 4) (rho_t - 2) rho_inf
                     / ((rho_inf - 4) (rho_inf - 2) rho_t))
        p     = p - lr * m / (1 - beta1**t) * sqrt(1 - beta2**t) / (sqrt(v) + eps) * r_t
                                                            (rho_t > 5)
        p     = p - lr * m / (1 - beta1**t)                  (otherwise)

    Where optax differs: ``optax.radam`` adds ``eps`` to the bias-corrected
    root and rectifies from ``rho_t >= 5``; torch adds it to the raw root and
    rectifies from ``rho_t > 5``.

    Args:
        lr: learning rate, a number or a schedule of the step count.
        betas: ``(beta1, beta2)``, the moments' decay rates.
        eps: added to the raw root of the second moment.
        weight_decay: L2 penalty (or decoupled decay, see below).
        decoupled_weight_decay: shrink the parameters (AdamW-style) instead.
        foreach: accepted and ignored (see ``jaxopt_rules.torch_compat``).
        maximize: maximise the objective instead of minimising it.
        capturable: accepted and ignored (see ``jaxopt_rules.torch_compat``).
        differentiable: accepted and ignored (see ``jaxopt_rules.torch_compat``).

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose state holds torch's
        ``exp_avg`` and ``exp_avg_sq``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> from jaxopt_rules import torch_compat
        >>> tx = torch_compat.radam(lr=0.1)
        >>> params = {"w": jnp.array([1.0])}
        >>> updates, _ = tx.update(params, tx.init(params), params)
        >>> optax.apply_updates(params, updates)["w"]  # unrectified first step
        Array([0.9], dtype=float32)

    References:
        Liu et al., "On the Variance of the Adaptive Learning Rate and
        Beyond", ICLR 2020. Verified against ``torch.optim.RAdam`` (torch 2.13).
    """
    grad = signed(grad, maximize)
    if not decoupled_weight_decay:
        grad = coupled_decay(grad, param, weight_decay)
    exp_avg = lerp(exp_avg, grad, 1 - beta1)
    exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * (grad * grad)
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    corrected = exp_avg / bias_correction1
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * (beta2**step) / bias_correction2
    # Rectification only when rho_t > 5 (guarded so the other branch of the
    # where never takes the root of a negative number).
    rectified = rho_t > 5.0
    safe_rho = jnp.where(rectified, rho_t, 6.0)
    rect = jnp.sqrt(
        (safe_rho - 4)
        * (safe_rho - 2)
        * rho_inf
        / ((rho_inf - 4) * (rho_inf - 2) * safe_rho)
    )
    adaptive_lr = jnp.sqrt(bias_correction2) / (jnp.sqrt(exp_avg_sq) + eps)
    step_rectified = corrected * lr * adaptive_lr * rect
    step_plain = corrected * lr
    update = -jnp.where(rectified, step_rectified, step_plain)
    if decoupled_weight_decay:
        update = decoupled_decay(update, param, lr, weight_decay)
    return update, exp_avg, exp_avg_sq
