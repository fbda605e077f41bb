"""Sharding helpers for rule functions whose per-leaf work is not elementwise."""

import jax
from jax.sharding import AxisType, PartitionSpec

from jaxopt_rules._core._types import Array


def replicated(x: Array) -> Array:
    """``x`` unsharded when it is sharded over ``Explicit`` mesh axes; else ``x``.

    Under explicit sharding, the types of a leaf's derived arrays carry their
    layouts: the row maxima of a matrix sharded ``P('x', 'y')`` are sharded
    over ``'x'``, its column maxima over ``'y'``, and joining the two, or
    multiplying a sharded matrix by itself, has no layout the types imply.
    A rule that does such work on small or whole-matrix quantities
    replicates them first. Off a mesh, on automatic axes (XLA chooses the
    layout) and for arrays already replicated, ``x`` is returned unchanged.

    Args:
        x: an array (or tracer).

    Returns:
        ``x`` replicated over its mesh, or ``x`` itself.
    """
    sharding = jax.typeof(x).sharding
    mesh = getattr(sharding, "mesh", None)
    if mesh is None or mesh.empty:
        return x
    explicit = any(kind == AxisType.Explicit for kind in mesh.axis_types)
    if not explicit or all(entry is None for entry in sharding.spec):
        return x
    return jax.sharding.reshard(x, PartitionSpec())


def sharded_like(x: Array, like: Array) -> Array:
    """``x`` laid out like ``like`` when that is sharded over ``Explicit`` axes.

    The way back from :func:`replicated`: a rule that computed a leaf-shaped
    result on replicated operands (a rotation by whole-matrix eigenbases)
    returns it, and its leaf-shaped slots, sharded like the parameter.

    Args:
        x: an array (or tracer) of the shape of ``like``.
        like: the array whose layout to take.

    Returns:
        ``x`` resharded to ``like``'s explicit layout, or ``x`` itself.
    """
    sharding = jax.typeof(like).sharding
    mesh = getattr(sharding, "mesh", None)
    if mesh is None or mesh.empty:
        return x
    if not any(kind == AxisType.Explicit for kind in mesh.axis_types):
        return x
    if jax.typeof(x).sharding.spec == sharding.spec:
        return x
    return jax.sharding.reshard(x, sharding.spec)
