"""Checks of unusual input: bad leaves named by path, integer and complex leaves."""

from collections.abc import Callable
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_rules._core import abs_sq
from jaxopt_rules.testing._checks.convergence import assert_converged, solve
from jaxopt_rules.testing._compare import fail
from jaxopt_rules.testing._problems import Problem
from jaxopt_rules.testing._programs import example_grads_jit
from jaxopt_rules.testing._subject import RuleUnderTest


def check_names_bad_leaves(rule: RuleUnderTest) -> None:
    """Bad leaves raise errors naming the leaf; integer leaves are left alone.

    A gradient tree missing a leaf and a non-array leaf must raise errors that
    name the leaf's path. Integer leaves (step counters, integer buffers) are
    initialised and get a zero update, as in optax.
    """
    params = rule.params()
    tx = rule.tx
    state = tx.init(params)
    grads = example_grads_jit(params)
    wrong = {**grads, "dense": {"w": grads["dense"]["w"]}}
    try:
        tx.update(wrong, state, params)
    except Exception as error:  # any exception type, but the path must be named
        if "['dense']['b']" not in str(error):
            raise fail(
                "names_bad_leaves",
                "a gradient tree missing ['dense']['b'] "
                f"raised an error that does not name it: {error}",
            ) from None
    else:
        raise fail(
            "names_bad_leaves", "a gradient tree missing ['dense']['b'] was accepted"
        )
    bad_params = {**params, "scale": "0.5"}
    try:
        tx.init(bad_params)
    except Exception as error:
        if "['scale']" not in str(error):
            raise fail(
                "names_bad_leaves",
                "a string parameter leaf raised an error that "
                f"does not name its path ['scale']: {error}",
            ) from None
    else:
        raise fail("names_bad_leaves", "a string parameter leaf was accepted")
    int_params = {**params, "scale": jnp.array(3, jnp.int32)}
    try:
        int_state = tx.init(int_params)
        int_grads = {**grads, "scale": jnp.zeros((), jnp.int32)}
        updates = cast(Any, tx.update(int_grads, int_state, int_params)[0])
    except Exception as error:
        raise fail(
            "names_bad_leaves",
            "an int32 parameter leaf (a step counter in the parameter tree) was "
            f"refused, where optax leaves it untouched: {type(error).__name__}: "
            f"{error}",
        ) from None
    if np.any(np.asarray(updates["scale"]) != 0):
        raise fail(
            "names_bad_leaves",
            f"the int32 leaf ['scale'] got a non-zero update {updates['scale']}",
        )


def complex_parabola(*, matrices_only: bool = False) -> Problem:
    """``sum |z - z*|**2`` over 3 complex64 numbers (a ``(3, 1)`` column if asked)."""
    target = jnp.array([1 - 1j, -1 + 1j, 1 + 1j], jnp.complex64)
    start = jnp.array([-1 + 1j, 10 - 2j, 1 + 0j], jnp.complex64)

    def objective(z: jax.Array) -> jax.Array:
        return jnp.sum(abs_sq(z - target))

    if not matrices_only:
        return start, target, objective

    def column_objective(z: jax.Array) -> jax.Array:
        return objective(z[:, 0])

    return start[:, None], target[:, None], column_objective


def check_complex_params(rule: RuleUnderTest) -> None:
    """Complex parameters: supported and converging, or refused by name.

    On ``sum |z - z*|**2`` over 3 complex numbers, stepping along
    ``conj(grad)`` (optax's convention: the steepest descent direction of a
    real loss of complex parameters), a rule that accepts complex parameters
    keeps updates and state complex where they should be, and reaches the
    minimum (within 3e-2); a rule that does not must raise a ``TypeError``
    that says ``complex``.
    """
    problem = rule.problem(complex_parabola)
    start, _, objective = problem
    tx = rule.feed(rule.make(), objective)
    try:
        state = tx.init(start)
    except TypeError as error:
        if "complex" not in str(error):
            raise fail(
                "complex_params",
                f"complex parameters were refused without saying so: {error}",
            ) from None
        return
    first = cast(
        jax.Array,
        jax.eval_shape(
            lambda z, state: tx.update(jnp.conj(jax.grad(objective)(z)), state, z),
            start,
            state,
        )[0],
    )
    if first.dtype != start.dtype:
        raise fail(
            "complex_params",
            f"updates of complex64 parameters have dtype {first.dtype}",
        )
    run: Callable[[jax.Array], tuple[jax.Array, jax.Array]] = jax.jit(
        lambda z: solve(tx, objective, z, rule.steps, conjugate=True)
    )
    z, losses = run(start)
    assert_converged("complex_params", rule, problem, z, losses)
