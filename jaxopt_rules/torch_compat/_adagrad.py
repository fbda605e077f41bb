"""torch.optim.Adagrad: eps outside the root, lr_decay, initial accumulator."""

import jax.numpy as jnp

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.torch_compat._common import (
    coupled_decay,
    signed,
)


@rule(
    name="torch_adagrad",
    slots={"sum": Slot(init="initial_accumulator_value")},
    constraints={
        "lr": ">= 0",
        "lr_decay": ">= 0",
        "weight_decay": ">= 0",
        "initial_accumulator_value": ">= 0",
        "eps": ">= 0",
    },
    positional=(
        "lr",
        "lr_decay",
        "weight_decay",
        "initial_accumulator_value",
        "eps",
        "foreach",
    ),
    ignored={"foreach": None, "differentiable": False, "fused": None},
    keyword=("maximize", "differentiable", "fused"),
    storage_args=False,
)
def adagrad(
    grad: Array,
    sum: Array,
    param: Array,
    step: Array,
    *,
    lr: Scalar = 1e-2,
    lr_decay: Scalar = 0.0,
    weight_decay: Scalar = 0.0,
    initial_accumulator_value: Scalar = 0.0,
    eps: Scalar = 1e-10,
    maximize: bool = False,
) -> tuple[Array, Array]:
    r"""``torch.optim.Adagrad``: the same arguments, defaults and numbers.

    Update (``t`` counts from 1)::

        g   = -g if maximize;  g = g + weight_decay * p
        clr = lr / (1 + (t - 1) * lr_decay)
        s   = s + g**2,   s_0 = initial_accumulator_value
        p   = p - clr * g / (sqrt(s) + eps)

    Where optax differs: ``optax.adagrad`` starts the sum at 0.1, puts
    ``eps=1e-7`` inside the square root and has no ``lr_decay``.

    Args:
        lr: learning rate, a number or a schedule of the step count.
        lr_decay: harmonic decay of the learning rate.
        weight_decay: L2 penalty added to the gradient.
        initial_accumulator_value: starting value of the squared-gradient sum.
        eps: added to the root (outside it).
        foreach: accepted and ignored (see ``jaxopt_rules.torch_compat``).
        maximize: maximise the objective instead of minimising it.
        differentiable: accepted and ignored (see ``jaxopt_rules.torch_compat``).
        fused: accepted and ignored (see ``jaxopt_rules.torch_compat``).

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose state holds torch's
        ``sum``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> from jaxopt_rules import torch_compat
        >>> tx = torch_compat.adagrad(lr=0.5)
        >>> params = {"w": jnp.array([2.0])}
        >>> updates, _ = tx.update(params, tx.init(params), params)
        >>> optax.apply_updates(params, updates)["w"]  # 2 - 0.5 * 2 / 2
        Array([1.5], dtype=float32)

    References:
        Duchi, Hazan and Singer, "Adaptive Subgradient Methods for Online
        Learning and Stochastic Optimization", JMLR 2011. Verified against
        ``torch.optim.Adagrad`` (torch 2.13).
    """
    del initial_accumulator_value  # read by the slot's init
    grad = coupled_decay(signed(grad, maximize), param, weight_decay)
    clr = lr / (1 + (step - 1) * lr_decay)
    sum = sum + grad * grad
    return (-clr) * (grad / (jnp.sqrt(sum) + eps)), sum
