"""Stochastic rounding of float32 values to bfloat16 storage.

A float32 ``x`` lies between two neighbouring bfloat16 numbers ``lo <= x < hi``;
stochastic rounding stores ``hi`` with probability ``(x - lo) / (hi - lo)`` and
``lo`` otherwise, so the stored value is ``x`` on average and small updates to a
low-precision accumulator are not lost to round-to-nearest (Zamirai et al.,
"Revisiting BFloat16 Training", 2020; Gupta et al., "Deep Learning with Limited
Numerical Precision", ICML 2015). On the bits: add a uniform 16-bit integer to
the low half of the float32 pattern and truncate it.

The random bits are a hash of each element's row-major index and a 32-bit key
drawn from the rule's state key, the step and the (leaf, slot) number: a
handful of integer operations that XLA fuses into the rule's arithmetic
(``jax.random.bits`` costs a threefry evaluation per element), the same on any
device and under any sharding.
"""

import jax
import jax.numpy as jnp
import numpy as np


def _mix(x: jax.Array) -> jax.Array:
    """A 32-bit integer hash with good avalanche ("lowbias32", C. Wellons)."""
    x = x ^ (x >> 16)
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> 16)


def element_bits(shape: tuple[int, ...], key: jax.Array) -> jax.Array:
    """Pseudo-random uint32 per element of ``shape``, from a uint32 key.

    The key is a scalar, or an array of ``shape`` (one key per element).
    """
    index = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(len(shape))):
        index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * np.uint32(
            stride
        )
        stride *= shape[axis]
    return _mix(index ^ key)


def stochastic_round_bf16(x: jax.Array, key: jax.Array) -> jax.Array:
    """``x`` rounded stochastically to a bfloat16 value, returned in ``x.dtype``.

    Args:
        x: float32 (or float64, first rounded to float32) values.
        key: a uint32 scalar; each key gives independent rounding decisions.

    Returns:
        Values exactly representable in bfloat16; non-finite values unchanged.
    """
    x32 = x.astype(jnp.float32)
    noise = element_bits(x32.shape, key) & np.uint32(0xFFFF)
    pattern = jax.lax.bitcast_convert_type(x32, jnp.uint32)
    rounded = (pattern + noise) & np.uint32(0xFFFF0000)
    y = jax.lax.bitcast_convert_type(rounded, jnp.float32)
    return jnp.where(jnp.isfinite(x32), y, x32).astype(x.dtype)


def slot_keys(
    state_key: jax.Array, count: jax.Array, n_leaves: int, n_slots: int
) -> jax.Array:
    """One uint32 key per (leaf, slot) for the update taken at ``count``.

    Args:
        state_key: the raw key data kept in the rule's state.
        count: the step count before the update.
        n_leaves: leaves in the tree.
        n_slots: slots per leaf.

    Returns:
        A ``(n_leaves, n_slots)`` uint32 array.
    """
    key = jax.random.fold_in(jax.random.wrap_key_data(state_key), count)
    return jax.random.bits(key, (n_leaves, max(n_slots, 1)), jnp.uint32)


def new_state_key(seed: int | jax.Array) -> jax.Array:
    """The raw (uint32) key data that a rule's state carries for ``seed``."""
    return jax.random.key_data(jax.random.key(seed))


def round_to_bf16(x: jax.Array) -> jax.Array:
    """``x`` rounded to nearest bfloat16, kept in its own dtype.

    For emulating arithmetic done on bfloat16 tensors (a reference's
    Newton-Schulz iteration): ``lax.reduce_precision`` is kept by XLA, where a
    plain ``astype(bfloat16)`` round trip may be dropped inside a jit
    (XLA:CPU computes bfloat16 arithmetic in float32).
    """
    return jax.lax.reduce_precision(x, exponent_bits=8, mantissa_bits=7)
