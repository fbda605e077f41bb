"""Checks of types: trees, shapes and dtypes of updates and state, traces, init."""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxopt_rules.testing._compare import (
    assert_same_shapes_and_dtypes,
    assert_trees_close,
    fail,
)
from jaxopt_rules.testing._programs import example_grads_jit
from jaxopt_rules.testing._subject import RuleUnderTest


def check_structure_and_dtypes(rule: RuleUnderTest) -> None:
    """Updates keep the gradients' tree, shapes and dtypes; state keeps its own.

    In float32 and bfloat16, after one jitted step from ``init``.
    """
    for dtype in (jnp.float32, jnp.bfloat16):
        params = rule.params(dtype)
        state = rule.tx.init(params)
        grads = example_grads_jit(params)
        updates, new_state, new_params = rule.trajectory(dtype, steps=1)[0]
        name = jnp.dtype(dtype).name
        assert_same_shapes_and_dtypes(
            "structure_and_dtypes", f"{name} updates", updates, grads
        )
        assert_same_shapes_and_dtypes(
            "structure_and_dtypes", f"{name} state", new_state, state
        )
        assert_same_shapes_and_dtypes(
            "structure_and_dtypes", f"{name} params", new_params, params
        )


def check_no_recompile(rule: RuleUnderTest) -> None:
    """A jitted, donated step is traced once and reused on later steps.

    Reads the trace log of the rule's shared step program (parameters and state
    donated) after three steps from ``init``: a state whose types change
    after the first step (a dtype, a weak type, a structure) retraces it.
    """
    params = rule.params()
    rule.trajectory(steps=3)
    traces = rule.program.traces_of(params)
    if traces != 1:
        kinds = sorted({str(state) for _, state in rule.program.traces})
        raise fail(
            "no_recompile",
            f"the step was traced {traces} times in 3 calls; the state's "
            f"types seen: {'; '.join(kinds)}",
        )


def check_cond_state_types(rule: RuleUnderTest) -> None:
    """``lax.cond`` between ``update`` and a no-op accepts identical state types.

    ``lax.cond`` compares the branches' output types when it is traced, so the
    check traces the program (``jax.eval_shape``) without compiling it.
    """
    tx = rule.tx
    for dtype in (jnp.float32, jnp.bfloat16):
        params = rule.params(dtype)
        state = tx.init(params)
        grads = example_grads_jit(params)

        def maybe_update(
            pred: jax.Array, grads: Any, state: Any, params: Any
        ) -> tuple[Any, Any]:
            return jax.lax.cond(
                pred,
                lambda: tx.update(grads, state, params),
                lambda: (grads, state),
            )

        try:
            jax.eval_shape(maybe_update, jnp.array(True), grads, state, params)
        except TypeError as error:
            raise fail(
                "cond_state_types",
                f"{jnp.dtype(dtype).name}: update changes the types of the updates "
                f"or the state (dtype, weak type or structure): {error}",
            ) from None


def check_init_abstract(rule: RuleUnderTest) -> None:
    """``init`` runs under ``jax.eval_shape`` on ``ShapeDtypeStruct`` trees."""
    params = rule.params()
    tx = rule.tx
    abstract = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)
    try:
        state_shape = jax.eval_shape(tx.init, abstract)
    except Exception as error:
        raise fail(
            "init_abstract",
            f"init failed on ShapeDtypeStruct leaves: {type(error).__name__}: {error}",
        ) from None
    assert_same_shapes_and_dtypes(
        "init_abstract", "abstract state", state_shape, tx.init(params)
    )
    try:
        direct = tx.init(abstract)
    except Exception as error:
        raise fail(
            "init_abstract",
            "init(ShapeDtypeStruct tree) failed outside eval_shape: "
            f"{type(error).__name__}: {error}",
        ) from None
    assert_same_shapes_and_dtypes(
        "init_abstract", "state of init(ShapeDtypeStruct tree)", direct, state_shape
    )


def check_tree_map_params(rule: RuleUnderTest) -> None:
    """``optax.tree_utils.tree_map_params`` finds the parameter-shaped state."""
    params = rule.params()
    tx = rule.tx
    state = tx.init(params)
    try:
        mapped = optax.tree_utils.tree_map_params(tx, lambda p: p, state)
    except Exception as error:
        raise fail("tree_map_params", f"{type(error).__name__}: {error}") from None
    assert_trees_close(
        "tree_map_params", "state after an identity map", mapped, state, rtol=0
    )
