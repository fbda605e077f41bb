"""Checks of hyperparameters: ``optax.inject_hyperparams`` and schedules."""

from typing import Any, cast

import jax
import optax

from jaxopt_rules.testing._checks._trees import assert_steps_close
from jaxopt_rules.testing._compare import assert_trees_close, fail
from jaxopt_rules.testing._programs import StepProgram, example_grads_jit
from jaxopt_rules.testing._subject import ATOL, RTOL, CheckSkipped, RuleUnderTest


def check_inject_hyperparams(rule: RuleUnderTest) -> None:
    """Under ``optax.inject_hyperparams`` every step computes the same update.

    Teacher-forced: at each of 4 steps both transforms get the same gradients,
    parameters and inner state (the plain run's), so the comparison measures
    the step's formula. (Free-running, a last-ulp difference between two
    compiled programs, such as XLA:CPU vectorising a fused ``cos`` of the
    gradient differently, grows over the steps on this problem: to 1.7e-6
    relative after 4 Adagrad steps at ``learning_rate=1.0``, for optax's own
    Adagrad too.)
    """
    params = rule.params()
    try:
        injected = rule.feed(
            rule.adapt(
                optax.inject_hyperparams(rule.factory, static_args=rule.static_args)(
                    **rule.hyperparams
                )
            )
        )
    except TypeError as error:
        raise fail("inject_hyperparams", f"wrapping failed: {error}") from None
    wrapped_update = jax.jit(injected.update)
    state = rule.tx.init(params)
    wrapped_state = cast(Any, injected.init(params))
    for i, (up, next_state, next_params) in enumerate(rule.trajectory(steps=4)):
        grads = example_grads_jit(params)
        uw, sw = wrapped_update(
            grads, wrapped_state._replace(inner_state=state), params
        )
        assert_trees_close(
            "inject_hyperparams", f"step {i + 1} updates", uw, up, rtol=RTOL, atol=ATOL
        )
        assert_trees_close(
            "inject_hyperparams",
            f"step {i + 1} inner state",
            sw.inner_state,
            next_state,
            rtol=RTOL,
            atol=ATOL,
        )
        params, state, wrapped_state = next_params, next_state, sw


def check_schedule(rule: RuleUnderTest) -> None:
    """A learning-rate schedule is accepted and evaluated at the right step.

    A constant schedule gives the numbers of the constant; a decaying schedule
    read by the rule itself and by ``optax.inject_hyperparams`` (which
    evaluates it independently at its own count) gives the same updates.
    """
    lr = rule.learning_rate
    name = rule.learning_rate_name
    if lr is None or callable(lr):
        raise CheckSkipped(
            f"needs a numeric {name!r} hyperparameter to build schedules from; "
            f"pass one in hyperparams (got {lr!r})"
        )
    params = rule.params()
    constant = StepProgram(rule.feed(rule.make(**{name: optax.constant_schedule(lr)})))
    assert_steps_close(
        "schedule",
        "constant schedule, ",
        constant.run(params, 3),
        rule.trajectory(steps=3),
    )
    schedule = optax.linear_schedule(lr, 0.1 * lr, transition_steps=4)
    direct = StepProgram(rule.feed(rule.make(**{name: schedule}))).run(params, 4)
    injected_tx = optax.inject_hyperparams(rule.factory, static_args=rule.static_args)(
        **{**rule.hyperparams, name: schedule}
    )
    injected = StepProgram(rule.feed(rule.adapt(injected_tx))).run(params, 4)
    assert_steps_close("schedule", "decaying schedule, ", direct, injected)
