"""The statistics log_step computes on device, as a table: name -> small function.

Each global statistic is one :class:`Statistic` entry in :data:`STATISTICS`:
what it needs (the updates, the parameters) and a function of the step's
:class:`Totals` (sums of squares computed once, shared by every entry).
Adding a statistic is adding an entry. ``nonfinite`` (a per-leaf list, not a
scalar) is computed beside the table, from the same per-leaf sums.

All values are float32 scalars.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class Totals(NamedTuple):
    """What the statistics of one step are computed from.

    ``update_sq`` is None unless a wanted statistic needs ``"updates"``;
    ``param_sq`` is None unless one needs ``"params"`` and the step received
    parameters.
    """

    grad_sq: jax.Array  # sum of squares of the gradient (all shards)
    update_sq: jax.Array | None  # of the updates the inner transform returned
    param_sq: jax.Array | None  # of the parameters
    inner_state: Any  # the inner transform's state before the step


class Statistic(NamedTuple):
    """One entry of the table.

    ``value`` runs only when every input in ``needs`` (``"updates"``,
    ``"params"``) is available; it returns a float32 scalar, or None when the
    statistic does not apply to this transform (no learning rate to read).
    """

    needs: frozenset[str]
    value: Callable[[Totals], jax.Array | None]


def find_learning_rate(state: Any) -> jax.Array | None:
    """``learning_rate`` from an ``optax.inject_hyperparams`` state inside ``state``."""
    found: list[Any] = []

    def visit(node: Any) -> None:
        hyper = getattr(node, "hyperparams", None)
        if isinstance(hyper, Mapping) and "learning_rate" in hyper:
            found.append(hyper["learning_rate"])
            return
        if isinstance(node, tuple | list):
            for child in node:
                visit(child)

    visit(state)
    return jnp.asarray(found[0], jnp.float32) if found else None


def _sqrt(x: jax.Array | None) -> jax.Array:
    assert x is not None  # guaranteed by Statistic.needs
    return jnp.sqrt(x)


STATISTICS: dict[str, Statistic] = {
    "grad_norm": Statistic(frozenset(), lambda t: jnp.sqrt(t.grad_sq)),
    "update_norm": Statistic(frozenset({"updates"}), lambda t: _sqrt(t.update_sq)),
    "param_norm": Statistic(frozenset({"params"}), lambda t: _sqrt(t.param_sq)),
    "update_param_ratio": Statistic(
        frozenset({"updates", "params"}),
        lambda t: _sqrt(t.update_sq) / _sqrt(t.param_sq),
    ),
    "learning_rate": Statistic(
        frozenset(), lambda t: find_learning_rate(t.inner_state)
    ),
}
"""Global statistics by name: global L2 norms of the gradient, the updates and
the parameters, their ratio, and the injected learning rate."""


def needed(names: Sequence[str]) -> frozenset[str]:
    """The inputs (``"updates"``, ``"params"``) that the statistics ``names`` need."""
    return frozenset().union(*(STATISTICS[n].needs for n in names if n in STATISTICS))


def evaluate(names: Sequence[str], totals: Totals) -> tuple[list[str], list[jax.Array]]:
    """The statistics ``names`` that apply this step, in order, with their values."""
    available = {"updates"} if totals.update_sq is not None else set()
    if totals.param_sq is not None:
        available.add("params")
    kept_names: list[str] = []
    values: list[jax.Array] = []
    for name in names:
        entry = STATISTICS.get(name)
        if entry is None or not entry.needs <= available:
            continue
        value = entry.value(totals)
        if value is not None:
            kept_names.append(name)
            values.append(value)
    return kept_names, values


def sum_squares(leaves: Sequence[Any]) -> jax.Array:
    """Sum of squares over leaves, in float32.

    Written ``abs(x) * abs(x)`` (two ``abs``) on purpose: XLA:CPU turns a
    reduction of ``y * y`` into one that needs ``y * y`` materialised, a
    parameter-sized temporary (page-faulted every step); the product of two
    distinct ``abs`` (the same bits) fuses into the reduction and reads ``x``
    in place (``benchmarks/logging_overhead.py``).
    """
    total = jnp.zeros((), jnp.float32)
    for leaf in leaves:
        x = jnp.asarray(leaf)
        if x.dtype == jax.dtypes.float0:
            continue  # gradients of integer leaves: no values
        if not jnp.iscomplexobj(x):  # complex: abs is the magnitude
            x = x.astype(jnp.float32)
        size = jnp.abs(x).astype(jnp.float32)
        total = total + jnp.sum(size * jnp.abs(x).astype(jnp.float32))
    return total


def nonfinite_flag(leaf: Any, sum_sq: jax.Array) -> jax.Array:
    """1.0 if ``leaf`` holds a NaN or an infinity, else 0.0 (float32).

    Read from the leaf's sum of squares, which the norms compute anyway: it is
    finite whenever every element is, unless the squares overflow (elements
    beyond about 1e19), and only then is the leaf itself scanned, inside a
    ``cond``. A separate ``max(|g|)`` beside the norm's ``|g| * |g|`` made XLA
    share ``|g|`` between the two reductions and materialise it: a
    parameter-sized temporary every step.
    """

    def scan(leaf: Any, sum_sq: jax.Array) -> jax.Array:
        # Not max(|x|): on XLA:CPU a max over 4096 or more elements can drop
        # a NaN. isfinite per element, then a logical reduction, cannot.
        x = jnp.asarray(leaf)
        if not jnp.issubdtype(x.dtype, jnp.inexact):
            return sum_sq * 0.0  # integers are always finite
        bad = jnp.any(~jnp.isfinite(x))
        return bad.astype(jnp.float32)

    def finite(leaf: Any, sum_sq: jax.Array) -> jax.Array:
        return sum_sq * 0.0  # zero, typed like the value (shard_map)

    return jax.lax.cond(jnp.isfinite(sum_sq), finite, scan, leaf, sum_sq)
