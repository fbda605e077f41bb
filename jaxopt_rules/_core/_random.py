"""Random numbers in rules: the state's key, and one key per leaf per update.

A rule function that takes the reserved positional ``key`` gets a typed PRNG
key of its own leaf for the current update. The state keeps the key as raw
``uint32`` key data in a field named ``rng_key`` (as optax's noise states
name theirs), so checkpoints, tree maps and comparisons see an ordinary
array; :func:`initial_key` makes it from the factory's seed argument
(:func:`check_seed` refuses other values when the factory is called).

How the state's key becomes the next state key and the leaves' keys is the
rule's ``key_split``; the two that optax uses are here, so that a drop-in
draws the very numbers optax draws.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


KeySplit = Callable[[jax.Array, int], tuple[jax.Array, jax.Array]]
"""``split(state_key, n_leaves) -> (next_state_key, leaf_keys)``, typed keys."""


def check_seed(rule: str, arg: str, seed: Any) -> None:
    """Refuses a seed argument that is not ``None``, an integer or one key.

    Accepted: ``None`` (seed 0), an integer, a typed key (``jax.random.key``)
    or raw key data (``jax.random.PRNGKey``).
    """
    if seed is None or (
        isinstance(seed, int | np.integer) and not isinstance(seed, bool)
    ):
        return
    if isinstance(seed, jax.Array | np.ndarray):
        if jnp.issubdtype(seed.dtype, jax.dtypes.prng_key):
            if seed.shape == ():
                return
            raise ValueError(
                f"{rule}: {arg} must be one key, got an array of keys of shape "
                f"{seed.shape}"
            )
        if np.ndim(seed) == 0 and jnp.issubdtype(seed.dtype, jnp.integer):
            return
        raw_shape = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))
        if seed.dtype == np.uint32 and tuple(seed.shape) == raw_shape.shape:
            return
    raise TypeError(
        f"{rule}: {arg} must be an integer, a key (jax.random.key) or raw key "
        f"data (jax.random.PRNGKey), got {seed!r}"
    )


def initial_key(seed: Any) -> jax.Array:
    """The raw ``uint32`` key data a rule's state starts from.

    ``seed`` is checked by :func:`check_seed`; the key is of JAX's default PRNG
    implementation, as optax's ``jax.random.key(seed)``.
    """
    if seed is None:
        seed = 0
    if isinstance(seed, jax.Array) and jnp.issubdtype(seed.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(seed)
    if np.ndim(seed) == 0:
        return jax.random.key_data(jax.random.key(seed))
    return jnp.asarray(seed)


def split_then_per_leaf(state_key: jax.Array, n_leaves: int) -> tuple[Any, Any]:
    """The split of optax's ``add_noise`` and Hutchinson estimator.

    ``next, sample = split(key)``, then ``split(sample, n_leaves)``: one key
    per leaf, in leaf order.
    """
    next_key, sample = jax.random.split(state_key)
    return next_key, jax.random.split(sample, n_leaves)


def split_with_leaves(state_key: jax.Array, n_leaves: int) -> tuple[Any, Any]:
    """The split of optax's ``differentially_private_aggregate``.

    ``next, *per_leaf = split(key, n_leaves + 1)``.
    """
    keys = jax.random.split(state_key, n_leaves + 1)
    return keys[0], keys[1:]


def random_like(
    key: jax.Array,
    x: jax.Array,
    sampler: Callable[..., jax.Array] = jax.random.normal,
) -> jax.Array:
    """Random numbers shaped, typed and sharded like ``x``.

    ``sampler(key, x.shape, x.dtype, out_sharding=...)``, the sharding being
    ``x``'s (as ``optax.tree.random_like`` draws them), so that a rule's noise
    is sharded like its gradient under an explicit mesh.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> random_like(jax.random.key(0), jnp.zeros((2, 3))).shape
        (2, 3)
    """
    return sampler(key, x.shape, x.dtype, out_sharding=jax.typeof(x).sharding)
