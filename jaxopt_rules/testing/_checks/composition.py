"""Checks of composition with optax's wrappers: chain, masked, partition, ..."""

from typing import Any, cast

import jax
import jax.numpy as jnp
import optax

from jaxopt_rules.testing._checks._trees import (
    OTHERS,
    SELECTED,
    assert_parts,
    assert_steps_close,
    only,
)
from jaxopt_rules.testing._compare import (
    assert_all_zero,
    assert_same_shapes_and_dtypes,
    assert_trees_close,
)
from jaxopt_rules.testing._problems import example_loss
from jaxopt_rules.testing._programs import (
    StepProgram,
    example_grads_jit,
    sgd,
    sgd_program,
)
from jaxopt_rules.testing._subject import ATOL, RTOL, RuleUnderTest


def _subtree_run(rule: RuleUnderTest, steps: int) -> list[Any]:
    """The rule alone on the selected leaves of the example tree (shared)."""
    return rule.shared(
        ("subtree", steps),
        lambda: rule.program.run(only(rule.params(), SELECTED), steps),
    )


def _selected_loss(params: Any) -> Any:
    """The example loss of the selected leaves: what the rule alone minimises there.

    The example loss is a sum over leaves, so for a rule that reads the loss
    value this is the value its run on the selected leaves alone sees.
    """
    return example_loss(only(params, SELECTED))


def check_chain(rule: RuleUnderTest) -> None:
    """Inside ``optax.chain`` the rule gives the same trajectory as alone."""
    chained = StepProgram(
        rule.feed(optax.chain(optax.identity(), rule.make(), optax.scale(1.0)))
    )
    assert_steps_close(
        "chain", "", chained.run(rule.params(), 3), rule.trajectory(steps=3)
    )


def check_masked(rule: RuleUnderTest) -> None:
    """``optax.masked`` applies the rule to the selected leaves only."""
    params = rule.params()
    mask = jax.tree.map_with_path(
        lambda path, _: jax.tree_util.keystr(path) in SELECTED, params
    )
    # The rule's update arguments are computed inside the mask, where a
    # training loop computes them for that rule: its ``grad`` has the masked
    # tree's structure, its ``value_fn`` takes the masked parameters.
    tx = optax.with_extra_args_support(
        optax.masked(rule.feed(rule.make(), _selected_loss), mask)
    )
    grads = example_grads_jit(params)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    # Expected: the rule alone on the selected leaves; the rest passed through.
    sub_updates = _subtree_run(rule, 3)[0][0]
    assert_parts("masked", "updates", updates, sub_updates, grads, other_rtol=0)


def check_partition(rule: RuleUnderTest) -> None:
    """In ``optax.partition`` the rule's leaves follow the rule, the others SGD."""
    params = rule.params()
    labels = jax.tree.map_with_path(
        lambda path, _: "rule" if jax.tree_util.keystr(path) in SELECTED else "sgd",
        params,
    )
    # The rule's update arguments are computed for its part (see check_masked).
    tx = optax.partition(
        {"rule": rule.feed(rule.make(), _selected_loss), "sgd": sgd()}, labels
    )
    joint = StepProgram(optax.with_extra_args_support(tx)).run(params, 3)
    # The example loss is separable, so each part evolves on its own.
    rule_part = _subtree_run(rule, 3)
    sgd_part = sgd_program().run(only(params, OTHERS), 3)
    for i in range(3):
        assert_parts(
            "partition",
            f"step {i + 1} updates",
            joint[i][0],
            rule_part[i][0],
            sgd_part[i][0],
            other_rtol=RTOL,
        )


def check_multi_steps(rule: RuleUnderTest) -> None:
    """``optax.MultiSteps``: zero updates until the k-th, then the mean's update.

    In float32 the three updates run: the first two must be exactly zero, the
    third the rule's own step on the mean gradient from ``init``. In bfloat16
    the same three updates are traced (``jax.eval_shape``) and must keep the
    gradients' types: a rule can only break ``MultiSteps`` in bfloat16 through
    types (its ``lax.cond`` between accumulating and stepping rejects a state
    whose types change), since the accumulating steps return optax's zeros
    whatever the rule computes, and the rule's bfloat16 step itself is
    compiled and run by the ``structure_and_dtypes`` check.
    """
    k = 3
    params = rule.params()
    multi = optax.MultiSteps(rule.make(), every_k_schedule=k)
    # MultiSteps.update passes extra arguments on (gradient_transformation()
    # would hide them behind a plain GradientTransformation).
    multi_update = cast(Any, multi.update)
    tx = rule.feed(optax.GradientTransformationExtraArgs(multi.init, multi_update))
    state = tx.init(params)
    update = jax.jit(tx.update)
    base = example_grads_jit(params)
    grads = [jax.tree.map(lambda g, i=i: g * (1.0 + 0.5 * i), base) for i in range(k)]
    for i in range(k - 1):
        updates, state = update(grads[i], state, params)
        assert_all_zero("multi_steps", f"float32 update {i + 1}", updates)
    updates, state = update(grads[-1], state, params)
    mean = jax.tree.map(lambda *g: sum(g) / k, *grads)
    expected, _, _ = rule.program(mean, rule.tx.init(params), params)
    assert_trees_close(
        "multi_steps",
        f"update {k} (mean of {k} gradients)",
        updates,
        expected,
        rtol=1e-5,
        atol=1e-6,
    )

    half = rule.params(jnp.bfloat16)
    half_grads = example_grads_jit(half)

    def three_updates(grads: Any, params: Any) -> list[Any]:
        state = tx.init(params)
        out = []
        for i in range(k):
            updates, state = tx.update(
                jax.tree.map(lambda g, i=i: g * (1.0 + 0.5 * i), grads), state, params
            )
            out.append(updates)
        return out

    for i, updates in enumerate(jax.eval_shape(three_updates, half_grads, half)):
        assert_same_shapes_and_dtypes(
            "multi_steps", f"bfloat16 update {i + 1}", updates, half_grads
        )


def check_apply_if_finite(rule: RuleUnderTest) -> None:
    """``optax.apply_if_finite`` rejects a NaN step and keeps the inner state."""
    params = rule.params()
    tx = rule.feed(optax.apply_if_finite(rule.make(), max_consecutive_errors=3))
    state: Any = tx.init(params)
    grads = example_grads_jit(params)
    bad = {**grads, "scale": jnp.full_like(grads["scale"], jnp.nan)}
    update = jax.jit(tx.update)
    updates, new_state = update(bad, state, params)
    new_state = cast(Any, new_state)
    assert_all_zero("apply_if_finite", "update after a NaN gradient", updates)
    assert_trees_close(
        "apply_if_finite",
        "inner state after a NaN gradient",
        new_state.inner_state,
        state.inner_state,
        rtol=0,
    )
    updates, _ = update(grads, new_state, params)
    expected = rule.trajectory(steps=1)[0][0]
    assert_trees_close(
        "apply_if_finite",
        "first finite update",
        updates,
        expected,
        rtol=RTOL,
        atol=ATOL,
    )


def check_extra_args(rule: RuleUnderTest) -> None:
    """Unknown keyword arguments to ``update`` are accepted and ignored."""
    extra = StepProgram(
        rule.tx, {"unexpected_extra_arg_the_rule_does_not_know": jnp.ones(3)}
    ).run(rule.params(), 2)
    assert_steps_close("extra_args", "", extra, rule.trajectory(steps=2))
