"""torch.optim.Adadelta."""

import jax.numpy as jnp

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.torch_compat._common import (
    coupled_decay,
    signed,
)


@rule(
    name="torch_adadelta",
    slots={"square_avg": Slot(), "acc_delta": Slot()},
    constraints={"lr": ">= 0", "rho": "[0, 1]", "eps": ">= 0", "weight_decay": ">= 0"},
    positional=("lr", "rho", "eps", "weight_decay", "foreach"),
    ignored={"foreach": None, "capturable": False, "differentiable": False},
    keyword=("capturable", "maximize", "differentiable"),
    storage_args=False,
)
def adadelta(
    grad: Array,
    square_avg: Array,
    acc_delta: Array,
    param: Array,
    *,
    lr: Scalar = 1.0,
    rho: Scalar = 0.9,
    eps: Scalar = 1e-6,
    weight_decay: Scalar = 0.0,
    maximize: bool = False,
) -> tuple[Array, Array, Array]:
    r"""``torch.optim.Adadelta``: the same arguments, defaults and numbers.

    Update::

        g  = -g if maximize;  g = g + weight_decay * p
        s  = rho * s + (1 - rho) * g**2
        dx = sqrt(u + eps) / sqrt(s + eps) * g
        u  = rho * u + (1 - rho) * dx**2
        p  = p - lr * dx

    ``optax.adadelta`` gives the same numbers (without weight decay).

    Args:
        lr: scales the step (torch's default 1.0 is Zeiler's method).
        rho: decay of both running averages.
        eps: added inside both roots.
        weight_decay: L2 penalty added to the gradient.
        foreach: accepted and ignored (see ``jaxopt_rules.torch_compat``).
        capturable: accepted and ignored (see ``jaxopt_rules.torch_compat``).
        maximize: maximise the objective instead of minimising it.
        differentiable: accepted and ignored (see ``jaxopt_rules.torch_compat``).

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose state holds torch's
        ``square_avg`` and ``acc_delta``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_rules import torch_compat
        >>> tx = torch_compat.adadelta()
        >>> params = {"w": jnp.array([1.0])}
        >>> updates, _ = tx.update(params, tx.init(params), params)
        >>> bool(jnp.abs(updates["w"][0] + 0.0031622) < 1e-6)
        True

    References:
        Zeiler, "ADADELTA: An Adaptive Learning Rate Method", 2012. Verified
        against ``torch.optim.Adadelta`` (torch 2.13).
    """
    grad = coupled_decay(signed(grad, maximize), param, weight_decay)
    square_avg = rho * square_avg + (1 - rho) * (grad * grad)
    std = jnp.sqrt(square_avg + eps)
    delta = jnp.sqrt(acc_delta + eps) / std * grad
    acc_delta = rho * acc_delta + (1 - rho) * (delta * delta)
    return (-lr) * delta, square_avg, acc_delta
