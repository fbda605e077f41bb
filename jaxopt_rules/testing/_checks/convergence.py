"""Checks that a rule minimises: a parabola and Rosenbrock's valley.

Both problems run in one compiled program (two ``lax.scan`` loops of
``steps`` steps), so the pair costs one compilation. Each step also records
the objective, so that a failure says where the run started, what it reached
and whether it diverged.
"""

from collections.abc import Callable
from typing import Any, cast

import jax
import numpy as np
import optax

from jaxopt_rules.testing._compare import ConformanceError, assert_trees_close, fail
from jaxopt_rules.testing._problems import Problem, parabola, rosenbrock
from jaxopt_rules.testing._subject import RuleUnderTest


CONVERGENCE_TOLERANCE = 3e-2
"""rtol and atol of the solution reached against the problem's minimum."""


def solve(
    tx: optax.GradientTransformationExtraArgs,
    objective: Callable[[jax.Array], jax.Array],
    start: jax.Array,
    steps: int,
    *,
    conjugate: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """``steps`` steps of ``tx`` on ``objective`` from ``start`` (traceable).

    Args:
        tx: the transform.
        objective: the loss of one array.
        start: the starting point.
        steps: the number of steps.
        conjugate: step along ``conj(grad)`` (complex parameters, optax's
            convention for a real loss of complex parameters).

    Returns:
        The last iterate and the objective after each step.
    """

    def step(carry: tuple[Any, Any], _: Any) -> tuple[tuple[Any, Any], jax.Array]:
        x, state = carry
        grads = jax.grad(objective)(x)
        if conjugate:
            grads = grads.conj()
        updates, state = tx.update(grads, state, x)
        x = cast(jax.Array, optax.apply_updates(x, updates))
        return (x, state), objective(x)

    (x, _), losses = jax.lax.scan(step, (start, tx.init(start)), length=steps)
    return x, losses


def explain_failure(
    rule: RuleUnderTest,
    problem: Problem,
    x: Any,
    losses: Any,
) -> str:
    """Where the run started, what it reached, and what to change."""
    start, solution, objective = problem
    start_loss = float(objective(start))
    losses = np.asarray(losses, np.float64)
    final_x = np.asarray(x)
    steps = len(losses)
    name, lr = rule.learning_rate_name, rule.learning_rate
    lr_text = f"{name}={lr!r}"
    where = (
        f"started at x0={np.asarray(start).ravel().tolist()} (loss "
        f"{start_loss:.4g}) toward the minimum "
        f"x*={np.asarray(solution).ravel().tolist()} (loss 0); after {steps} steps "
        f"at {lr_text} it reached "
    )
    if not np.all(np.isfinite(losses)):
        first = int(np.argmin(np.isfinite(losses))) + 1
        return (
            where + f"a non-finite loss at step {first} (diverged: "
            f"{float(losses[first - 1])}); lower {name} (now {lr!r})"
        )
    distance = float(np.linalg.norm((final_x - np.asarray(solution)).ravel()))
    reached = (
        f"x={np.round(final_x.ravel(), 4).tolist()} (loss {losses[-1]:.4g}, "
        f"distance {distance:.4g} to x*)"
    )
    best = int(np.argmin(losses))
    if losses[-1] > start_loss:
        return (
            where + reached + f": the loss grew from {start_loss:.4g} (diverged or "
            f"stepping uphill); check the update's sign, or lower {name} (now {lr!r})"
        )
    if losses[-1] > 10 * losses[best] and losses[best] < 1e-3 * start_loss:
        return (
            where + reached + f": the loss was {losses[best]:.4g} at step {best + 1} "
            f"and rose again (unstable near the minimum); lower {name} (now {lr!r})"
        )
    return (
        where + reached + f": the loss fell from {start_loss:.4g} but not to the "
        f"minimum; raise {name} (now {lr!r}) or allow more steps "
        f"(steps={2 * steps} in check_rule or run_check)"
    )


def assert_converged(
    check: str, rule: RuleUnderTest, problem: Problem, x: Any, losses: Any
) -> None:
    """Fails, with :func:`explain_failure`, unless ``x`` is within the tolerance."""
    try:
        assert_trees_close(
            check,
            f"solution after {len(losses)} steps",
            x,
            problem[1],
            rtol=CONVERGENCE_TOLERANCE,
            atol=CONVERGENCE_TOLERANCE,
        )
    except ConformanceError as error:
        detail = str(error).removeprefix(f"[{check}] ")
        raise fail(
            check, f"{explain_failure(rule, problem, x, losses)}.\n    ({detail})"
        ) from None


_PROBLEMS = {"converges_parabola": parabola, "converges_rosenbrock": rosenbrock}


def _solutions(rule: RuleUnderTest) -> dict[str, tuple[jax.Array, jax.Array]]:
    """Both problems solved in one compiled program, once per rule."""

    def build() -> dict[str, tuple[jax.Array, jax.Array]]:
        problems = {k: rule.problem(make) for k, make in _PROBLEMS.items()}
        raw = rule.make()

        def both(starts: dict[str, jax.Array]) -> dict[str, Any]:
            return {
                k: solve(rule.feed(raw, loss), loss, starts[k], rule.steps)
                for k, (_, _, loss) in problems.items()
            }

        return jax.jit(both)({k: p[0] for k, p in problems.items()})

    return rule.shared("convergence", build)


def _converges(check: str, rule: RuleUnderTest) -> None:
    x, losses = _solutions(rule)[check]
    assert_converged(check, rule, rule.problem(_PROBLEMS[check]), x, losses)


def check_converges_parabola(rule: RuleUnderTest) -> None:
    """Reaches the minimum of a 3-d parabola (within 3e-2)."""
    _converges("converges_parabola", rule)


def check_converges_rosenbrock(rule: RuleUnderTest) -> None:
    """Reaches the minimum of Rosenbrock's valley (within 3e-2)."""
    _converges("converges_rosenbrock", rule)
