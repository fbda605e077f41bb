"""torch.optim.SGD: momentum with dampening, Nesterov, L2 weight decay."""

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.torch_compat._common import coupled_decay, has_momentum, signed


def _check_nesterov(hyper: Mapping[str, Any]) -> None:
    """Torch's rule: Nesterov momentum needs a momentum and no dampening."""
    if hyper["nesterov"] and (not has_momentum(hyper) or hyper["dampening"] != 0):
        raise ValueError(
            "torch_sgd: Nesterov momentum requires a momentum and zero "
            f"dampening (got momentum={hyper['momentum']!r}, "
            f"dampening={hyper['dampening']!r})"
        )


@rule(
    name="torch_sgd",
    slots={"momentum_buffer": Slot(when=has_momentum)},
    # Structural, as in torch (momentum 0 keeps no buffer): not injectable.
    static=("momentum",),
    constraints={"lr": ">= 0", "momentum": ">= 0", "weight_decay": ">= 0"},
    positional=("lr", "momentum", "dampening", "weight_decay", "nesterov"),
    ignored={"foreach": None, "differentiable": False, "fused": None},
    keyword=("maximize", "foreach", "differentiable", "fused"),
    storage_args=False,
    check=_check_nesterov,
)
def sgd(
    grad: Array,
    momentum_buffer: Array | None,
    param: Array,
    step: Array,
    *,
    lr: Scalar = 1e-3,
    momentum: Scalar = 0.0,
    dampening: Scalar = 0.0,
    weight_decay: Scalar = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
) -> tuple[Array, Array | None]:
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
    grad = coupled_decay(signed(grad, maximize), param, weight_decay)
    if momentum_buffer is not None:
        # torch starts the buffer at the gradient itself (no dampening).
        momentum_buffer = jnp.where(
            step == 1, grad, momentum * momentum_buffer + (1 - dampening) * grad
        )
        grad = grad + momentum * momentum_buffer if nesterov else momentum_buffer
    return (-lr) * grad, momentum_buffer
