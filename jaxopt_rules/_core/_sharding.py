"""Sharding helpers for rule functions whose per-leaf work is not elementwise."""

import math
from collections.abc import Sequence
from typing import Any

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


def whole_matrices(x: Array, batch_axes: Sequence[int]) -> Array:
    """``x``, a stack of matrices, laid out so that each device holds whole ones.

    Under explicit sharding, the mesh axes that shard a matrix's own axes
    (every axis not in ``batch_axes``) are moved onto a batch axis that
    their size divides (the longest such): each device then owns whole
    matrices of the stack and does their whole-matrix work (Newton-Schulz,
    eigendecompositions) alone, and the exchange is one all-to-all each way
    instead of an all-gather. Where no batch axis can take them, the matrix
    axes are gathered (every device computes every matrix, as
    :func:`replicated`). Batch axes keep their own sharding. Off a mesh, on
    automatic axes, and for stacks whose matrices are already whole, ``x``
    is returned unchanged. The way back is :func:`sharded_like`.

    Args:
        x: an array (or tracer) whose non-batch axes form each matrix.
        batch_axes: the axes that index the stack.

    Returns:
        ``x`` with its matrix axes unsharded.

    Example:
        A ``(16, 256, 256)`` stack sharded ``P(None, 'x', None)`` over 8
        devices becomes ``P('x', None, None)``: two whole matrices per device.
    """
    spec = _explicit_spec(x)
    if spec is None:
        return x
    entries = list(spec) + [None] * (x.ndim - len(spec))
    names = [_axis_names(entry) for entry in entries]
    moving = [n for a in range(x.ndim) if a not in batch_axes for n in names[a]]
    if not moving:
        return x
    mesh_shape = jax.typeof(x).sharding.mesh.shape
    target: list[tuple[str, ...]] = [
        names[a] if a in batch_axes else () for a in range(x.ndim)
    ]
    for a in sorted(batch_axes, key=lambda a: -x.shape[a]):
        together = target[a] + tuple(moving)
        if x.shape[a] % math.prod(mesh_shape[n] for n in together) == 0:
            target[a] = together
            break
    return jax.sharding.reshard(
        x, PartitionSpec(*(t[0] if len(t) == 1 else (t or None) for t in target))
    )


def spread(x: Array, axis: int = 0) -> Array:
    """``x`` sharded along ``axis`` over every mesh axis that divides it.

    For a stack of independent pieces of work (a leaf's Shampoo blocks, their
    factors) held whole by every device under explicit sharding: sharded
    along the stack's axis, each device does the work of its own part of
    the stack; :func:`replicated` gathers the results. The mesh axes are
    taken in the mesh's order while the axis's length stays divisible by
    their product; axes that already shard ``x`` are left where they are.
    Off a mesh and on automatic axes, ``x`` is returned unchanged.

    Args:
        x: an array (or tracer).
        axis: the stack's axis.

    Returns:
        ``x``, sharded along ``axis`` where the mesh allows it.
    """
    spec = _explicit_spec(x)
    if spec is None:
        return x
    entries = list(spec) + [None] * (x.ndim - len(spec))
    used = {n for entry in entries for n in _axis_names(entry)}
    mesh = jax.typeof(x).sharding.mesh
    chosen = _axis_names(entries[axis])
    for name in mesh.axis_names:
        size = math.prod(mesh.shape[n] for n in (*chosen, name))
        if name not in used and x.shape[axis] % size == 0:
            chosen = (*chosen, name)
    if chosen == _axis_names(entries[axis]):
        return x
    entries[axis] = chosen[0] if len(chosen) == 1 else chosen
    return jax.sharding.reshard(x, PartitionSpec(*entries))


def _axis_names(entry: Any) -> tuple[str, ...]:
    if entry is None:
        return ()
    return tuple(entry) if isinstance(entry, tuple) else (entry,)


def _explicit_spec(x: Array) -> PartitionSpec | None:
    """``x``'s partition spec when its mesh has ``Explicit`` axes, else ``None``."""
    sharding = jax.typeof(x).sharding
    mesh = getattr(sharding, "mesh", None)
    if mesh is None or mesh.empty:
        return None
    if not any(kind == AxisType.Explicit for kind in mesh.axis_types):
        return None
    return sharding.spec
