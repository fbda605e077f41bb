"""Hyperparameter constraints: parsed once, checked on concrete values only.

A rule declares constraints as short strings (``"[0, 1)"``, ``">= 0"``) or as
predicates. They are checked when the factory is called with a concrete number;
traced values (inside ``optax.inject_hyperparams`` or a ``vmap`` over
hyperparameters) and schedules are never branched on.
"""

import dataclasses
import math
import operator
import re
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.core import Tracer


_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}
_INTERVAL = re.compile(r"^\s*([\[(])\s*([^,]+?)\s*,\s*([^\])]+?)\s*([\])])\s*$")
_COMPARISON = re.compile(r"^\s*(>=|>|<=|<)\s*(\S+)\s*$")


@dataclasses.dataclass(frozen=True)
class Constraint:
    """A named predicate on one concrete scalar hyperparameter."""

    description: str
    predicate: Callable[[float], bool]

    def violation(self, name: str, value: float) -> str | None:
        """Returns an error message if ``value`` breaks the constraint."""
        try:
            ok = bool(self.predicate(value))
        except (TypeError, ValueError):
            ok = False
        if ok:
            return None
        return f"{name} must be {self.description}, got {value!r}"


def _parse_bound(text: str) -> float:
    text = text.strip()
    if text in ("inf", "+inf"):
        return math.inf
    if text == "-inf":
        return -math.inf
    return float(text)


def parse_constraint(spec: "str | Constraint | Callable[[float], bool]") -> Constraint:
    """Turns ``"[0, 1)"``, ``"> 0"`` or a predicate into a :class:`Constraint`."""
    if isinstance(spec, Constraint):
        return spec
    if callable(spec):
        name = getattr(spec, "__name__", "a valid value")
        return Constraint(f"accepted by {name}", spec)
    match = _INTERVAL.match(spec)
    if match:
        left, lo_text, hi_text, right = match.groups()
        lo, hi = _parse_bound(lo_text), _parse_bound(hi_text)
        lo_op = operator.ge if left == "[" else operator.gt
        hi_op = operator.le if right == "]" else operator.lt

        def in_interval(v: float) -> bool:
            return lo_op(v, lo) and hi_op(v, hi)

        return Constraint(f"in {spec.strip()}", in_interval)
    match = _COMPARISON.match(spec)
    if match:
        op_text, bound_text = match.groups()
        op, bound = _COMPARISONS[op_text], _parse_bound(bound_text)
        return Constraint(f"{op_text} {bound_text}", lambda v: op(v, bound))
    raise ValueError(
        f"cannot parse constraint {spec!r}; use an interval such as '[0, 1)' "
        "or a comparison such as '>= 0'"
    )


def concrete_scalar(value: Any) -> float | None:
    """Returns ``value`` as a float if it is a concrete real scalar, else None.

    Tracers, schedules, ``None`` and non-numeric values give None: they are not
    checked here (a traced value cannot be branched on without breaking
    ``optax.inject_hyperparams``).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, Tracer):
        return None
    if isinstance(value, jax.Array | np.ndarray | np.generic):
        if np.shape(value) != () or not np.issubdtype(value.dtype, np.number):
            return None
        if np.iscomplexobj(value):
            return None
        return float(value)
    return None
