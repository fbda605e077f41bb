"""torch.optim.RMSprop: eps outside the root, torch's alpha, momentum on the ratio."""

import jax.numpy as jnp

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.torch_compat._common import (
    coupled_decay,
    has_momentum,
    lerp,
    signed,
)


@rule(
    name="torch_rmsprop",
    slots={
        "square_avg": Slot(),
        "momentum_buffer": Slot(when=has_momentum),
        "grad_avg": Slot(when="centered"),
    },
    # Structural, as in torch (momentum 0 keeps no buffer): not injectable.
    static=("momentum",),
    constraints={
        "lr": ">= 0",
        "alpha": ">= 0",
        "eps": ">= 0",
        "momentum": ">= 0",
        "weight_decay": ">= 0",
    },
    positional=(
        "lr",
        "alpha",
        "eps",
        "weight_decay",
        "momentum",
        "centered",
        "capturable",
        "foreach",
        "maximize",
        "differentiable",
    ),
    ignored={"capturable": False, "foreach": None, "differentiable": False},
    storage_args=False,
)
def rmsprop(
    grad: Array,
    square_avg: Array,
    momentum_buffer: Array | None,
    grad_avg: Array | None,
    param: Array,
    *,
    lr: Scalar = 1e-2,
    alpha: Scalar = 0.99,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 0.0,
    momentum: Scalar = 0.0,
    centered: bool = False,
    maximize: bool = False,
) -> tuple[Array, Array, Array | None, Array | None]:
    r"""``torch.optim.RMSprop``: the same arguments, defaults and numbers.

    Update::

        g = -g if maximize;  g = g + weight_decay * p
        s = alpha * s + (1 - alpha) * g**2
        a = lerp(a, g, 1 - alpha)                 (centered)
        r = sqrt(s - a**2) + eps                  (centered; else sqrt(s) + eps)
        b = momentum * b + g / r;  p = p - lr * b (momentum > 0)
        p = p - lr * g / r                        (otherwise)

    Where optax differs: ``optax.rmsprop`` defaults to ``decay=0.9`` and puts
    ``eps`` inside the square root; its momentum is applied after the
    learning rate. ``optax.rmsprop(decay=0.99, eps_in_sqrt=False)`` matches
    without weight decay.

    Args:
        lr: learning rate, a number or a schedule of the step count.
        alpha: smoothing constant of the squared-gradient average.
        eps: added to the root (outside it).
        weight_decay: L2 penalty added to the gradient.
        momentum: momentum factor on ``g / r``; 0 keeps no buffer.
        centered: divide by the estimated standard deviation instead.
        capturable: accepted and ignored (see ``jaxopt_rules.torch_compat``).
        foreach: accepted and ignored (see ``jaxopt_rules.torch_compat``).
        maximize: maximise the objective instead of minimising it.
        differentiable: accepted and ignored (see ``jaxopt_rules.torch_compat``).

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose state holds torch's
        ``square_avg`` (and ``momentum_buffer``, ``grad_avg``); ``update``
        needs ``params``.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> from jaxopt_rules import torch_compat
        >>> tx = torch_compat.rmsprop(lr=0.01)
        >>> params = {"w": jnp.array([1.0])}
        >>> updates, _ = tx.update(params, tx.init(params), params)
        >>> optax.apply_updates(params, updates)["w"]  # 1 - 0.01 / sqrt(0.01)
        Array([0.9], dtype=float32)

    References:
        Hinton, "Neural Networks for Machine Learning", lecture 6e (2012);
        Graves, "Generating Sequences With Recurrent Neural Networks", 2013
        (centered). Verified against ``torch.optim.RMSprop`` (torch 2.13).
    """
    grad = coupled_decay(signed(grad, maximize), param, weight_decay)
    square_avg = alpha * square_avg + (1 - alpha) * (grad * grad)
    if grad_avg is not None:
        grad_avg = lerp(grad_avg, grad, 1 - alpha)
        avg = jnp.sqrt(square_avg - grad_avg * grad_avg)
    else:
        avg = jnp.sqrt(square_avg)
    avg = avg + eps
    if momentum_buffer is not None:
        momentum_buffer = momentum * momentum_buffer + grad / avg
        update = (-lr) * momentum_buffer
    else:
        update = (-lr) * (grad / avg)
    return update, square_avg, momentum_buffer, grad_avg
