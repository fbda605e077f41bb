"""Checks under JAX's transformations: jit against eager, vmap, scan."""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxopt_rules.testing._checks._trees import assert_steps_close
from jaxopt_rules.testing._compare import assert_trees_close
from jaxopt_rules.testing._problems import example_grads
from jaxopt_rules.testing._programs import run_eager
from jaxopt_rules.testing._subject import ATOL, RTOL, RuleUnderTest


def check_jit_matches_eager(rule: RuleUnderTest) -> None:
    """Three jitted steps give the numbers of three eager steps."""
    eager = run_eager(rule.tx, rule.params(), 3)
    assert_steps_close(
        "jit_matches_eager", "", rule.trajectory(steps=3), eager, state=True
    )


def check_vmap(rule: RuleUnderTest) -> None:
    """``jax.vmap`` over a batch of parameter trees equals one run per tree.

    Two steps from ``init`` on three example trees (seeds 0, 1, 2), vmapped in
    one program (a two-step ``lax.scan``), against the rule's jitted step run
    on each tree.
    """
    batch = [rule.params(seed=s) for s in range(3)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batch)
    tx = rule.tx

    def two_steps(params: Any) -> tuple[Any, Any]:
        # The two steps run in a scan, so the program holds one copy of them.
        def step(carry: tuple[Any, Any], _: Any) -> tuple[tuple[Any, Any], None]:
            params, state = carry
            updates, state = tx.update(example_grads(params), state, params)
            return (optax.apply_updates(params, updates), state), None

        return jax.lax.scan(step, (params, tx.init(params)), length=2)[0]

    batched = jax.jit(jax.vmap(two_steps))(stacked)
    for i in range(len(batch)):
        _, state, params = rule.trajectory(seed=i, steps=2)[-1]
        assert_trees_close(
            "vmap",
            f"batch element {i}",
            jax.tree.map(lambda x, i=i: x[i], batched),
            (params, state),
            rtol=RTOL,
            atol=ATOL,
        )


def check_scan(rule: RuleUnderTest) -> None:
    """``lax.scan`` over steps equals a Python loop of jitted steps."""
    tx = rule.tx

    def step(carry: tuple[Any, Any], _: Any) -> tuple[tuple[Any, Any], None]:
        params, state = carry
        updates, state = tx.update(example_grads(params), state, params)
        return (optax.apply_updates(params, updates), state), None

    (scanned, _), _ = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), length=5))(
        rule.params()
    )
    looped = rule.trajectory(steps=5)[-1][2]
    assert_trees_close(
        "scan", "params after 5 steps", scanned, looped, rtol=RTOL, atol=ATOL
    )
