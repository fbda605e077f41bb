"""torch.optim.Rprop: sign steps with per-element adaptive sizes."""

import jax.numpy as jnp

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.torch_compat._common import (
    signed,
)


@rule(
    name="torch_rprop",
    slots={"prev": Slot(), "step_size": Slot(init="lr")},
    constraints={
        "lr": ">= 0",
        "etaminus": "(0, 1)",
        "etaplus": "> 1",
        "step_size_min": ">= 0",
        "step_size_max": ">= 0",
    },
    positional=("lr", "etas", "step_sizes"),
    grouped={
        "etas": ("etaminus", "etaplus"),
        "step_sizes": ("step_size_min", "step_size_max"),
    },
    ignored={"capturable": False, "foreach": None, "differentiable": False},
    keyword=("capturable", "foreach", "maximize", "differentiable"),
    storage_args=False,
)
def rprop(
    grad: Array,
    prev: Array,
    step_size: Array,
    *,
    lr: Scalar = 1e-2,
    etaminus: Scalar = 0.5,
    etaplus: Scalar = 1.2,
    step_size_min: Scalar = 1e-6,
    step_size_max: Scalar = 50,
    maximize: bool = False,
) -> tuple[Array, Array, Array]:
    r"""``torch.optim.Rprop``: the same arguments, defaults and numbers.

    Update (elementwise; ``s_0 = lr``, ``g_prev_0 = 0``)::

        g = -g if maximize
        f = etaplus if g * g_prev > 0, etaminus if < 0, else 1
        s = clip(s * f, step_size_min, step_size_max)
        g = 0 where f == etaminus          (no step after a sign change)
        p = p - sign(g) * s;   g_prev = g

    Where optax differs: ``optax.rprop`` returns the previous step's update
    (its first update is zero); torch moves on the first step.

    Args:
        lr: the initial step size of every element (only read at ``init``;
            a schedule is read at step 0).
        etas: ``(etaminus, etaplus)``: shrink and growth factors.
        step_sizes: ``(step_size_min, step_size_max)``: bounds of the step size.
        capturable: accepted and ignored (see ``jaxopt_rules.torch_compat``).
        foreach: accepted and ignored (see ``jaxopt_rules.torch_compat``).
        maximize: maximise the objective instead of minimising it.
        differentiable: accepted and ignored (see ``jaxopt_rules.torch_compat``).

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose state holds torch's
        ``prev`` and ``step_size``.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> from jaxopt_rules import torch_compat
        >>> tx = torch_compat.rprop(lr=0.1)
        >>> params = {"w": jnp.array([1.0, -1.0])}
        >>> updates, _ = tx.update(params, tx.init(params), params)
        >>> updates["w"]
        Array([-0.1,  0.1], dtype=float32)

    References:
        Riedmiller and Braun, "A Direct Adaptive Method for Faster
        Backpropagation Learning: The RPROP Algorithm", ICNN 1993. Verified
        against ``torch.optim.Rprop`` (torch 2.13).
    """
    del lr  # only the initial step size (the slot's init)
    grad = signed(grad, maximize)
    agreement = jnp.sign(grad * prev)
    factor = jnp.where(
        agreement > 0, etaplus, jnp.where(agreement < 0, etaminus, 1.0)
    ).astype(grad.dtype)
    step_size = jnp.clip(step_size * factor, step_size_min, step_size_max)
    grad = jnp.where(factor == etaminus, jnp.zeros_like(grad), grad)
    return -(jnp.sign(grad) * step_size), grad, step_size
