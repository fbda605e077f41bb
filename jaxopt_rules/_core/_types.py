"""Type aliases used by rule functions."""

from typing import TypeAlias

import jax


Array: TypeAlias = jax.Array
"""One leaf's array, in the compute dtype (at least float32)."""

Scalar: TypeAlias = jax.Array | float
"""A hyperparameter's value at this step: a Python number or a scalar array."""
