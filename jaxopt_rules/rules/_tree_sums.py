"""Pieces of the rules whose step size comes from sums over the whole tree."""

from typing import Any

import jax
import jax.numpy as jnp

from jaxopt_rules._core import Array, Scalar


def inner(a: Array, b: Array) -> Array:
    """``<a, b>`` of one leaf, contracted over every axis at full precision.

    The contraction optax's ``tree.vdot`` uses, so per-leaf sums round alike.
    With explicitly sharded axes the scalar result is replicated (the
    contraction over a sharded axis needs its output sharding named).
    """
    mesh = jax.typeof(a).sharding.mesh
    replicated = (
        jax.sharding.NamedSharding(mesh, jax.P())
        if mesh.are_all_axes_explicit and not mesh.empty
        else None
    )
    return jnp.tensordot(
        a, b, a.ndim, precision=jax.lax.Precision.HIGHEST, out_sharding=replicated
    )


def tree_sq_norm(params: Any) -> Array:
    """``sum |p|**2`` over the floating leaves of a tree."""
    leaves = [
        jnp.sum(jnp.abs(p) ** 2)
        for p in jax.tree.leaves(params)
        if jnp.issubdtype(jnp.result_type(p), jnp.inexact)
    ]
    return sum(leaves, jnp.zeros((), jnp.float32))


def decayed(grad: Array, param: Array, weight_decay: Scalar | None, mask: Any) -> Array:
    """``g + wd * theta`` where decayed (optax's ``add_decayed_weights``)."""
    return grad + weight_decay * param if weight_decay is not None and mask else grad


def distance_and_grad_sq_norms(
    grad: Array,
    param: Array,
    init_params: Array,
    *,
    weight_decay: Scalar | None,
    mask: Any,
) -> dict[str, Array]:
    """One leaf's ``|theta - theta_0|**2`` and ``|g + wd * theta|**2``.

    The ``global_stats`` of DoG and DoWG (summed over the tree).
    """
    g = decayed(grad, param, weight_decay, mask)
    return {
        "sq_dist": jnp.sum((init_params - param) ** 2),
        "sq_norm": jnp.sum(g * g),
    }


def estimated_step_size(
    estim_lr: Array, learning_rate: Scalar, step: Array, beta1: Scalar, beta2: Scalar
) -> Array:
    """``d * lr_t * sqrt(1 - b2**t) / (1 - b1**t)`` (Prodigy, D-Adaptation)."""
    return estim_lr * learning_rate * jnp.sqrt(1 - beta2**step) / (1 - beta1**step)
