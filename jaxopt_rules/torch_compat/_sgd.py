"""torch.optim.SGD: momentum with dampening, Nesterov, L2 weight decay."""

from typing import Any

import jax.numpy as jnp
import optax

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.torch_compat._common import (
    catalog_entry,
    check_execution_flags,
    coupled_decay,
    has_momentum,
    signed,
)


@rule(
    name="torch_sgd",
    slots={"momentum_buffer": Slot(when=has_momentum)},
    # Structural, as in torch (momentum 0 keeps no buffer): not injectable.
    static=("momentum",),
    constraints={"lr": ">= 0", "momentum": ">= 0", "weight_decay": ">= 0"},
)
def _sgd_rule(
    grad: Array,
    momentum_buffer: Array | None,
    param: Array,
    step: Array,
    *,
    lr: Scalar,
    momentum: Scalar,
    dampening: Scalar,
    weight_decay: Scalar,
    nesterov: bool,
    maximize: bool,
) -> tuple[Array, Array | None]:
    """One leaf of torch's single-tensor SGD."""
    grad = coupled_decay(signed(grad, maximize), param, weight_decay)
    if momentum_buffer is not None:
        # torch starts the buffer at the gradient itself (no dampening).
        momentum_buffer = jnp.where(
            step == 1, grad, momentum * momentum_buffer + (1 - dampening) * grad
        )
        grad = grad + momentum * momentum_buffer if nesterov else momentum_buffer
    return (-lr) * grad, momentum_buffer


@catalog_entry(_sgd_rule)
def sgd(
    lr: optax.ScalarOrSchedule = 1e-3,
    momentum: Any = 0.0,
    dampening: Any = 0.0,
    weight_decay: Any = 0.0,
    nesterov: bool = False,
    *,
    maximize: bool = False,
    foreach: bool | None = None,
    differentiable: bool = False,
    fused: bool | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""``torch.optim.SGD``: the same arguments, defaults and numbers.

    Update (``t`` counts from 1)::

        g = -g if maximize;  g = g + weight_decay * p
        b = g                                      (t = 1)
        b = momentum * b + (1 - dampening) * g     (t > 1)
        d = g + momentum * b if nesterov else b    (d = g without momentum)
        p = p - lr * d

    Where optax differs: ``optax.sgd`` has no dampening and no weight decay,
    and starts its trace at zero (the same numbers without dampening).

    Args:
        lr: learning rate, a number or a schedule of the step count.
        momentum: momentum factor; 0 keeps no buffer.
        dampening: damps the gradient's share of the buffer from step 2 on.
        weight_decay: L2 penalty added to the gradient.
        nesterov: Nesterov momentum (needs momentum > 0 and no dampening).
        maximize: maximise the objective instead of minimising it.
        foreach: accepted and ignored (see ``jaxopt_rules.torch_compat``).
        differentiable: accepted and ignored (see ``jaxopt_rules.torch_compat``).
        fused: accepted and ignored (see ``jaxopt_rules.torch_compat``).

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose state holds torch's
        ``momentum_buffer``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> from jaxopt_rules import torch_compat
        >>> tx = torch_compat.sgd(lr=0.1, momentum=0.9)
        >>> params = {"w": jnp.array([1.0])}
        >>> updates, _ = tx.update(params, tx.init(params), params)
        >>> optax.apply_updates(params, updates)["w"]
        Array([0.9], dtype=float32)

    References:
        Sutskever et al., "On the importance of initialization and momentum in
        deep learning", ICML 2013. Verified against ``torch.optim.SGD``
        (torch 2.13).
    """
    check_execution_flags(
        "torch_compat.sgd", foreach=foreach, differentiable=differentiable, fused=fused
    )
    if nesterov and (not has_momentum({"momentum": momentum}) or dampening != 0):
        raise ValueError(
            "torch_compat.sgd: Nesterov momentum requires a momentum and zero "
            f"dampening (got momentum={momentum!r}, dampening={dampening!r})"
        )
    return _sgd_rule(
        lr=lr,
        momentum=momentum,
        dampening=dampening,
        weight_decay=weight_decay,
        nesterov=nesterov,
        maximize=maximize,
    )
