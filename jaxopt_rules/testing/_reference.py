"""Comparing a rule with an independent reference implementation.

Two measurements, on the kit's example loss (2-d, 1-d, 4-d and scalar leaves):

* :func:`teacher_forced_errors`: at every step both implementations get the
  same gradients, parameters and state (the reference's), so each step's
  formula is compared on its own, without the dynamics amplifying rounding;
* :func:`free_running_error`: each implementation follows its own trajectory.

Errors are relative in the max norm over the whole tree, and infinite if a
value is not finite (so a comparison never passes on NaNs).
"""

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_rules.testing._problems import example_grads, example_params


Factory = Callable[..., optax.GradientTransformation]


def relative_error(actual: Any, expected: Any) -> float:
    """``max |a - e| / max |e|`` over all leaves; inf if any value is not finite."""
    pairs = [
        (np.asarray(a, np.float64), np.asarray(e, np.float64))
        for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True)
    ]
    if not pairs:
        return 0.0
    if not all(np.isfinite(a).all() and np.isfinite(e).all() for a, e in pairs):
        return float("inf")
    diff = max(float(np.max(np.abs(a - e))) for a, e in pairs)
    scale = max(float(np.max(np.abs(e))) for _, e in pairs)
    return diff / scale if scale > 0 else diff


def reference_arguments(
    factory: Factory,
    reference: Factory,
    hyperparams: Mapping[str, Any],
    dtype: Any | None = None,
) -> dict[str, Any]:
    """All of ``factory``'s arguments (defaults applied) that ``reference`` takes.

    With ``dtype``, every Python float becomes a scalar of that dtype, so both
    implementations compute with the same rounded hyperparameter values.
    """
    bound = inspect.signature(factory).bind(**hyperparams)
    bound.apply_defaults()
    accepted = inspect.signature(reference).parameters
    scalar = np.dtype(dtype).type if dtype is not None else None
    return {
        k: scalar(v) if scalar is not None and isinstance(v, float) else v
        for k, v in bound.arguments.items()
        if k in accepted
    }


def teacher_forced_errors(
    factory: Factory,
    reference: Factory,
    hyperparams: Mapping[str, Any],
    *,
    steps: int = 100,
    dtype: Any = jnp.float32,
) -> dict[str, float]:
    """Worst relative error of the updates and of each state slot, per step.

    ``factory`` must build this package's rules (a NamedTuple state of
    ``count`` and named slots); the reference's slots are found by name with
    ``optax.tree.get``, so they must share the names (``mu``, ``nu``, ...).

    Returns:
        ``{"updates": err, <slot>: err, ...}``, the worst over ``steps`` steps.
    """
    ours, ref = factory(**hyperparams), reference(**hyperparams)
    params = example_params(dtype)
    ref_state = ref.init(params)
    our_state: Any = ours.init(params)
    slots = our_state._fields[1:]
    our_update, ref_update = jax.jit(ours.update), jax.jit(ref.update)
    worst = {"updates": 0.0} | dict.fromkeys(slots, 0.0)
    for step in range(steps):
        grads = example_grads(params)
        forced = our_state._replace(
            count=jnp.asarray(step, jnp.int32),
            **{slot: optax.tree.get(ref_state, slot) for slot in slots},
        )
        updates, new_state = our_update(grads, forced, params)
        expected, ref_state = ref_update(grads, ref_state, params)
        worst["updates"] = max(worst["updates"], relative_error(updates, expected))
        for slot in slots:
            error = relative_error(
                getattr(new_state, slot), optax.tree.get(ref_state, slot)
            )
            worst[slot] = max(worst[slot], error)
        params = optax.apply_updates(params, expected)
    return worst


def free_run(tx: optax.GradientTransformation, dtype: Any, steps: int = 100) -> Any:
    """The parameters after ``steps`` jitted steps on the example loss."""
    params = example_params(dtype)
    state = tx.init(params)

    @jax.jit
    def step(params: Any, state: Any) -> tuple[Any, Any]:
        updates, state = tx.update(example_grads(params), state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(steps):
        params, state = step(params, state)
    return params


def free_running_error(
    factory: Factory,
    reference: Factory,
    hyperparams: Mapping[str, Any],
    *,
    dtype: Any = jnp.float32,
    steps: int = 100,
) -> float:
    """Relative error of the parameters after ``steps`` free-running steps.

    For float64, call it inside ``jax.enable_x64(True)``.
    """
    return relative_error(
        free_run(factory(**hyperparams), dtype, steps),
        free_run(reference(**hyperparams), dtype, steps),
    )
