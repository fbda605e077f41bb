"""Pytree helpers for the rule core: structure checks that name paths, and init.

Everything here runs at trace time on tree structure, shapes and dtypes, so it
adds nothing to the compiled step.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.tree_util import keystr


def is_hole(x: Any) -> bool:
    return x is None or isinstance(x, optax.MaskedNode)


def _paths(tree: Any) -> list[str]:
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_hole)[0]
    return [keystr(path) or "<root>" for path, _ in leaves]


def describe_mismatch(expected: Any, actual: Any) -> str:
    """Explains how the structure of ``actual`` differs from ``expected``."""
    want, got = _paths(expected), _paths(actual)
    missing = [p for p in want if p not in got]
    extra = [p for p in got if p not in want]
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing[:5])}")
    if extra:
        parts.append(f"unexpected {', '.join(extra[:5])}")
    if not parts:
        # Same leaf paths but different node types (a dict against a custom
        # node, a None against a MaskedNode...): show the first differing leaf.
        holes_want = jax.tree_util.tree_flatten_with_path(expected, is_leaf=is_hole)
        holes_got = jax.tree_util.tree_flatten_with_path(actual, is_leaf=is_hole)
        for (path, a), (_, b) in zip(holes_want[0], holes_got[0], strict=False):
            if type(a) is not type(b) and (is_hole(a) or is_hole(b)):
                parts.append(
                    f"at {keystr(path)}: expected {type(a).__name__}, "
                    f"got {type(b).__name__}"
                )
                break
        else:
            parts.append(f"expected {holes_want[1]}, got {holes_got[1]}")
    return "; ".join(parts)


def leaf_paths(tree: Any) -> list[str]:
    """The ``keystr`` path of every leaf of ``tree``, in flattening order."""
    return [
        keystr(path) or "<root>"
        for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]
    ]


def leaf_path(tree: Any, index: int) -> str:
    """The ``keystr`` path of the ``index``-th leaf of ``tree``."""
    return leaf_paths(tree)[index]


def fill_like(param: jax.Array, value: Any, dtype: Any) -> jax.Array:
    """An array shaped like ``param`` holding ``value``, sharded like ``param``.

    A plain ``jnp.full_like`` inside ``jax.jit`` does not depend on ``param``, so
    the compiler places it on one device even when ``param`` is sharded. Here
    the result depends on ``param`` (through ``|param| * 0``, which XLA may not
    fold because of NaN semantics), so the sharding propagates to the state.
    It costs one read of ``param`` at init and is exact for every input. The
    few operations are one compiled program, so an eager ``init`` compiles one
    small program per leaf type, not one per operation.
    """
    return _fill_like(param, value, np.dtype(dtype))


@functools.partial(jax.jit, static_argnums=2)
def _fill_like(param: jax.Array, value: Any, dtype: np.dtype) -> jax.Array:
    size = jnp.abs(param)  # real, also for complex parameters
    fill = jnp.asarray(value, dtype)
    zero = (size * 0).astype(dtype)
    return jnp.where(jnp.isfinite(size), zero + fill, fill)
