"""Sharding helpers for rule functions whose per-leaf work is not elementwise."""

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
from jax.core import Tracer
from jax.sharding import AxisType, NamedSharding, PartitionSpec

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
    target = _owner_spec(x, batch_axes)
    if target is None:
        return x
    return jax.sharding.reshard(x, target)


def stacked_like(x: Array, like: Array, batch_axes: Sequence[int]) -> Array:
    """``x``, per-matrix state of the stack ``like``, laid out with its matrices.

    ``x``'s leading axes are ``like``'s ``batch_axes`` (in order); its other
    axes hold each matrix's state (a flat array of factors, say). They are
    sharded as :func:`whole_matrices` shards ``like``'s batch axes, the rest
    unsharded: the device that owns a matrix also stores its state, so the
    state per device divides like the stack. Off a mesh and on automatic
    axes, ``x`` is returned unchanged.

    Args:
        x: an array (or tracer) of shape ``[like.shape[a] for a in batch_axes]
            + per-matrix shape``.
        like: the stack of matrices (a parameter).
        batch_axes: the axes of ``like`` that index the stack.

    Returns:
        ``x`` laid out with ``like``'s owners.

    Example:
        Factors ``(16, q)`` of a ``(16, 256, 256)`` stack sharded
        ``P(None, 'x', None)`` over 8 devices are laid out ``P('x', None)``.
    """
    spec = _explicit_spec(like)
    if spec is None:
        return x
    owners = _owner_spec(like, batch_axes) or spec
    entries = list(owners) + [None] * (like.ndim - len(owners))
    lead = [entries[a] for a in batch_axes]
    target = PartitionSpec(*lead, *([None] * (x.ndim - len(lead))))
    if jax.typeof(x).sharding.spec == target:
        return x
    # A concrete array's own mesh (an eager init outside jax.set_mesh).
    sharding: Any = like.sharding if not isinstance(like, Tracer) else None
    mesh = (sharding or jax.typeof(like).sharding).mesh
    return jax.sharding.reshard(x, NamedSharding(mesh, target))


def each_matrix(fn: Callable[..., Any], *stacks: Array, shared: Any = None) -> Any:
    """``fn`` mapped over the leading axis of ``stacks``, each device on its own.

    ``fn(shared, *operands)`` gets one matrix's operands (the stacks without
    their leading axis) and ``shared``, a pytree of values every matrix
    shares (a step count, hyperparameters). Under explicit sharding with
    the stacks' leading axis sharded (as :func:`whole_matrices` and
    :func:`stacked_like` lay out a stack and its per-matrix state), the map
    runs under ``jax.shard_map`` over those mesh axes: each device maps
    ``fn`` over its own matrices as local arrays, with no layouts in the
    types (jax 0.10's QR of a stack sharded over explicit axes fails, for
    one); the stacks' other axes are gathered first and the arrays of
    ``shared`` replicated.
    Off a mesh, on automatic axes or with the leading axis unsharded, a
    plain ``jax.vmap``.

    Args:
        fn: ``fn(shared, *operands)``, returning arrays (or a tuple of them).
        *stacks: arrays sharing their leading axis.
        shared: a pytree passed whole to every call (arrays and Python
            values).

    Returns:
        ``fn``'s outputs, each with the stacks' leading axis, laid out like
        them.
    """
    leaves, treedef = jax.tree.flatten(shared)
    arrays = [i for i, leaf in enumerate(leaves) if isinstance(leaf, jax.Array)]

    def call(dynamic: Sequence[Any], *operands: Array) -> Any:
        full = list(leaves)
        for i, value in zip(arrays, dynamic, strict=True):
            full[i] = value
        return fn(jax.tree.unflatten(treedef, full), *operands)

    mapped = jax.vmap(call, in_axes=(None, *([0] * len(stacks))))
    dynamic = [leaves[i] for i in arrays]
    spec = _explicit_spec(stacks[0])
    entry = None if spec is None or not len(spec) else spec[0]
    if entry is None:
        return mapped(dynamic, *stacks)
    lead = PartitionSpec(entry)
    laid = [
        x
        if jax.typeof(x).sharding.spec == PartitionSpec(entry, *([None] * (x.ndim - 1)))
        else jax.sharding.reshard(x, lead)
        for x in stacks
    ]
    dynamic = [replicated(x) for x in dynamic]
    mesh = jax.typeof(stacks[0]).sharding.mesh
    return jax.shard_map(
        mapped,
        mesh=mesh,
        in_specs=([PartitionSpec() for _ in dynamic], *(lead for _ in laid)),
        out_specs=lead,
    )(dynamic, *laid)


def _owner_spec(x: Array, batch_axes: Sequence[int]) -> PartitionSpec | None:
    """The spec :func:`whole_matrices` moves ``x`` to; ``None``: no move."""
    spec = _explicit_spec(x)
    if spec is None:
        return None
    entries = list(spec) + [None] * (x.ndim - len(spec))
    names = [_axis_names(entry) for entry in entries]
    moving = [n for a in range(x.ndim) if a not in batch_axes for n in names[a]]
    if not moving:
        return None
    mesh_shape = jax.typeof(x).sharding.mesh.shape
    target: list[tuple[str, ...]] = [
        names[a] if a in batch_axes else () for a in range(x.ndim)
    ]
    for a in sorted(batch_axes, key=lambda a: -x.shape[a]):
        together = target[a] + tuple(moving)
        if x.shape[a] % math.prod(mesh_shape[n] for n in together) == 0:
            target[a] = together
            break
    return PartitionSpec(*(t[0] if len(t) == 1 else (t or None) for t in target))


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
