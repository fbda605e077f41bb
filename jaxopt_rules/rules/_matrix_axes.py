"""Leaves seen as matrices: optax's dimension numbers (GaLore's and Muon's).

Both of optax's ``GaLoreDimensionNumbers`` and ``MuonDimensionNumbers`` name
a leaf's reduction axes (the matrix's rows) and output axes (its columns);
the remaining axes are batch axes. They are given per leaf: one for every
leaf, a tree of them (``None``: a leaf that is not a matrix), or a function
of the params returning such a tree.
"""

from collections.abc import Callable
from typing import Any

import jax


def split_axes(
    rule: str, shape: tuple[int, ...], dims: Any
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """``(batch, rows, cols)`` axes of a leaf of ``shape``, negatives resolved.

    Raises:
        ValueError: reduction and output axes overlap.
    """
    ndim = len(shape)

    def axes(axis: Any) -> tuple[int, ...]:
        return (
            (axis % ndim,) if isinstance(axis, int) else tuple(a % ndim for a in axis)
        )

    rows, cols = axes(dims.reduction_axis), axes(dims.output_axis)
    if set(rows) & set(cols):
        raise ValueError(
            f"{rule}: reduction axes {rows} and output axes {cols} overlap for a "
            f"leaf of shape {shape} ({dims})"
        )
    batch = tuple(sorted(set(range(ndim)) - set(rows) - set(cols)))
    return batch, rows, cols


def check_dimension_numbers(
    rule: str, arg: str, value: Any, is_dims: Callable[[Any], bool], what: str
) -> None:
    """Refuses a value that is not dimension numbers, a tree or a function.

    A tree's entries may be ``None``; ``what`` names the type and what
    ``None`` means, for the message.
    """
    if callable(value):
        return
    for leaf in jax.tree.leaves(value, is_leaf=is_dims):
        if not is_dims(leaf):
            raise TypeError(
                f"{rule}: {arg} must be None, {what} or a function of the params "
                f"returning such a tree; got {leaf!r} ({type(leaf).__name__}) in it"
            )
