"""Memory accounting for pytrees of arrays (optimizer states, parameters)."""

from typing import Any

import jax
import jax.numpy as jnp
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
        # (A typed PRNG key's dtype is no NumPy dtype; its itemsize is its key
        # data's, 8 bytes for JAX's default threefry key.)
        itemsize = dtype.itemsize if _is_key(dtype) else np.dtype(dtype).itemsize
        total += int(np.prod(shape, dtype=np.int64)) * itemsize
    return total


def _is_key(dtype: Any) -> bool:
    return bool(jnp.issubdtype(dtype, jax.dtypes.prng_key))
