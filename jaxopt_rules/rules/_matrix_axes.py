"""Leaves seen as matrices: optax's dimension numbers, and scanned layers.

Both of optax's ``GaLoreDimensionNumbers`` and ``MuonDimensionNumbers`` name
a leaf's reduction axes (the matrix's rows) and output axes (its columns);
the remaining axes are batch axes. They are given per leaf: one for every
leaf, a tree of them (``None``: a leaf that is not a matrix), or a function
of the params returning such a tree. ``scanned_layers`` (psgd-jax's option,
SOAP's and PSGD Kron's) marks leaves whose first axis indexes layers, each
preconditioned on its own; it is given per leaf likewise, as booleans.
"""

from collections.abc import Callable
from typing import Any

import jax
import numpy as np


def is_flag(x: Any) -> bool:
    """A leaf's value of ``scanned_layers``: a bool (or ``None``: not scanned)."""
    return x is None or isinstance(x, bool | np.bool_)


def layer_shape(rule: str, shape: tuple[int, ...], scanned: Any) -> tuple[int, ...]:
    """The shape one preconditioner sees: a scanned leaf's layer, else the leaf.

    Raises:
        ValueError: a scalar leaf is marked scanned.
    """
    if not scanned:
        return tuple(shape)
    if not shape:
        raise ValueError(
            f"{rule}: scanned_layers marks a scalar leaf; a scanned leaf's "
            "first axis indexes its layers, so it needs at least one axis"
        )
    return tuple(shape[1:])


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
