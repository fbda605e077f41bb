"""Memory accounting for pytrees of arrays (optimizer states, parameters)."""

from typing import Any

import jax
import numpy as np


def tree_bytes(tree: Any) -> int:
    """The number of bytes the array leaves of a pytree occupy.

    Counts every leaf with a ``dtype`` and a ``shape`` (``jax.Array``,
    ``numpy.ndarray``, ``jax.ShapeDtypeStruct``), by its global shape: a sharded
    array counts once, not once per device. Other leaves (Python numbers,
    ``None`` holes, ``optax.MaskedNode``) count zero.

    Args:
        tree: any pytree, e.g. an optimizer state or ``jax.eval_shape(tx.init,
            params)``.

    Returns:
        The total size in bytes.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> tx = jr.adam(1e-3)
        >>> jr.tree_bytes(tx.init({"w": jnp.zeros((1000,))}))  # mu, nu, count
        8004
    """
    total = 0
    for leaf in jax.tree.leaves(tree):
        dtype = getattr(leaf, "dtype", None)
        shape = getattr(leaf, "shape", None)
        if dtype is None or shape is None:
            continue
        total += int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    return total
