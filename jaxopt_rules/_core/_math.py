"""Elementwise helpers for rule functions that also hold for complex arrays."""

import jax.numpy as jnp

from jaxopt_rules._core._types import Array


def abs_sq(x: Array) -> Array:
    """``|x|**2``, real: ``x * x`` for real arrays, ``re**2 + im**2`` for complex.

    Second moments of complex gradients are moments of their squared
    magnitude (as in optax), so a rule that supports complex parameters writes
    ``abs_sq(grad)`` where a real-only rule would write ``grad**2``.

    Args:
        x: an array, real or complex.

    Returns:
        A real array shaped like ``x``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> jr.abs_sq(jnp.array([3 + 4j, -2j]))
        Array([25.,  4.], dtype=float32)
    """
    if jnp.iscomplexobj(x):
        return jnp.real(x) ** 2 + jnp.imag(x) ** 2
    return x * x
