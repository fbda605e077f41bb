"""Naming a rule's internal quantities (a trust ratio, a clip fraction).

A rule calls :func:`report` on a scalar it computes. With nobody listening the
call does nothing: the value is left unused, so XLA removes the work that
produced it and the compiled step is the one without the call. A listener
(:func:`collecting`, which :func:`~jaxopt_rules.log_step` opens around the
inner ``update``) receives ``(name, value)`` pairs in call order.

Listeners nest: the innermost open one receives the values. The core opens one
while it traces a per-leaf rule function, so that a value reported there comes
back once per leaf, named with the leaf's path (``log_step`` records it as
``trust_ratio/dense/w``).
"""

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import jax.numpy as jnp


Reports = list[tuple[str, Any]]

_listeners: contextvars.ContextVar[tuple[Reports, ...]] = contextvars.ContextVar(
    "jaxopt_rules_report_listeners", default=()
)


def report(name: str, value: Any) -> None:
    """Names an internal scalar of an update so that step logging can show it.

    Call it inside a rule function (once per leaf: the record gets one entry
    per leaf, ``name`` followed by the leaf's path) or anywhere inside an optax
    transform's ``update`` (one entry, ``name``). Without
    :func:`~jaxopt_rules.log_step` around the transform it costs nothing: the
    value is unused and XLA drops its computation.

    Args:
        name: the statistic's name in the record.
        value: a scalar (any float or integer dtype; reported as float32).

    Raises:
        ValueError: ``name`` is empty or ``value`` is not a scalar.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> @jr.rule
        ... def clipped_sgd(grad, *, learning_rate, clip=1.0):
        ...     jr.report("clip_fraction", jnp.mean(jnp.abs(grad) > clip))
        ...     return -learning_rate * jnp.clip(grad, -clip, clip)
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"report: the name must be a non-empty string, got {name!r}")
    if jnp.ndim(value) != 0:
        raise ValueError(
            f"report: {name!r} must be a scalar, got shape {jnp.shape(value)}; "
            "reduce it first (jnp.mean, jnp.max, jnp.linalg.norm)"
        )
    listeners = _listeners.get()
    if listeners:
        listeners[-1].append((name, value))


@contextlib.contextmanager
def collecting() -> Iterator[Reports]:
    """Collects what :func:`report` receives inside the block, in call order."""
    reports: Reports = []
    token = _listeners.set((*_listeners.get(), reports))
    try:
        yield reports
    finally:
        _listeners.reset(token)
