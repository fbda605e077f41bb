"""torch.optim.ASGD: SGD with Polyak averaging of the iterates."""

import jax.numpy as jnp

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.torch_compat._common import (
    coupled_decay,
    signed,
)


@rule(
    name="torch_asgd",
    slots={"ax": Slot()},
    constraints={"lr": ">= 0", "lambd": ">= 0", "weight_decay": ">= 0"},
    positional=(
        "lr",
        "lambd",
        "alpha",
        "t0",
        "weight_decay",
        "foreach",
        "maximize",
        "differentiable",
        "capturable",
    ),
    ignored={"foreach": None, "differentiable": False, "capturable": False},
    storage_args=False,
)
def asgd(
    grad: Array,
    ax: Array,
    param: Array,
    step: Array,
    *,
    lr: Scalar = 1e-2,
    lambd: Scalar = 1e-4,
    alpha: Scalar = 0.75,
    t0: Scalar = 1e6,
    weight_decay: Scalar = 0.0,
    maximize: bool = False,
) -> tuple[Array, Array]:
    r"""``torch.optim.ASGD``: the same arguments, defaults and numbers.

    The parameters follow SGD with a decaying step; the average of the
    iterates, the method's output, is ``state.ax`` (the same tree as the
    params).

    Update (``t`` counts from 1)::

        g     = -g if maximize;  g = g + weight_decay * p
        eta_t = lr / (1 + lambd * lr * (t - 1))**alpha
        mu_t  = 1 / max(1, t - 1 - t0)
        p     = p * (1 - lambd * eta_t) - eta_t * g
        ax    = p if mu_t == 1 else ax + mu_t * (p - ax)

    Args:
        lr: learning rate, a number or a schedule of the step count.
        lambd: decay term of the step size (and of the parameters).
        alpha: power of the step-size decay.
        t0: step after which averaging starts.
        weight_decay: L2 penalty added to the gradient.
        foreach: accepted and ignored (see ``jaxopt_rules.torch_compat``).
        maximize: maximise the objective instead of minimising it.
        differentiable: accepted and ignored (see ``jaxopt_rules.torch_compat``).
        capturable: accepted and ignored (see ``jaxopt_rules.torch_compat``).

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose state holds torch's
        averaged parameters ``ax``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> from jaxopt_rules import torch_compat
        >>> tx = torch_compat.asgd(lr=0.1, lambd=0.0)
        >>> params = {"w": jnp.array([1.0])}
        >>> updates, state = tx.update(params, tx.init(params), params)
        >>> state.ax["w"]  # the average of the iterates so far
        Array([0.9], dtype=float32)

    References:
        Polyak and Juditsky, "Acceleration of Stochastic Approximation by
        Averaging", SIAM J. Control Optim. 1992. Verified against
        ``torch.optim.ASGD`` (torch 2.13).
    """
    grad = coupled_decay(signed(grad, maximize), param, weight_decay)
    previous = step - 1  # torch computes eta and mu after the previous step
    eta = jnp.where(step == 1, lr, lr / (1 + lambd * lr * previous) ** alpha)
    mu = jnp.where(step == 1, 1.0, 1 / jnp.maximum(1.0, previous - t0))
    # The average follows torch's new parameters; the update is written
    # directly (not new - old, which loses the update's low bits).
    new_param = param * (1 - lambd * eta) + (-eta) * grad
    ax = jnp.where(mu == 1, new_param, ax + (new_param - ax) * mu)
    return (-lambd * eta) * param + (-eta) * grad, ax
