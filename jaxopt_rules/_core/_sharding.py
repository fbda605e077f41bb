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
    spec = _explicit_spec(x)
    if spec is None or all(entry is None for entry in spec):
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
    spec = _explicit_spec(like)
    if spec is None or jax.typeof(x).sharding.spec == spec:
        return x
    return jax.sharding.reshard(x, spec)


def _explicit_spec(x: Array) -> PartitionSpec | None:
    """``x``'s partition spec when its mesh has ``Explicit`` axes, else ``None``."""
    sharding = jax.typeof(x).sharding
    mesh = getattr(sharding, "mesh", None)
    if mesh is None or mesh.empty:
        return None
    if not any(kind == AxisType.Explicit for kind in mesh.axis_types):
        return None
    return sharding.spec
