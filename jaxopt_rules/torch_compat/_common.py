"""What torch_compat rules share: torch's lerp, decay, maximize, momentum test."""

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from jaxopt_rules._core import Array, Scalar


def lerp(start: Array, end: Array, weight: Scalar) -> Array:
    """``torch.lerp``: ``start + weight * (end - start)``, torch's two-branch form.

    torch evaluates ``end - (end - start) * (1 - weight)`` when ``weight >= 0.5``
    (exact at ``weight = 1``); matching it keeps float32 trajectories together.
    """
    diff = end - start
    return jnp.where(weight < 0.5, start + weight * diff, end - diff * (1 - weight))


def has_momentum(hyper: Mapping[str, Any]) -> bool:
    """Slot condition: torch keeps a momentum buffer only for momentum != 0."""
    return hyper["momentum"] != 0


def coupled_decay(grad: Array, param: Array, weight_decay: Scalar) -> Array:
    """Torch's L2 weight decay: ``grad + weight_decay * param`` (skipped at 0)."""
    return jnp.where(weight_decay != 0, grad + weight_decay * param, grad)


def signed(grad: Array, maximize: bool) -> Array:
    """Torch's ``maximize``: ascend instead of descend."""
    return -grad if maximize else grad


def decoupled_decay(
    update: Array, param: Array, lr: Scalar, weight_decay: Scalar
) -> Array:
    """Adds torch's decoupled decay ``p <- p * (1 - lr * wd)`` to an update."""
    return jnp.where(weight_decay != 0, update + (-lr * weight_decay) * param, update)
