"""Optimistic gradient descent: a step extrapolated from the last two gradients."""

import jax.numpy as jnp
import optax

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.rules._spec import RuleSpec


def optimistic_direction(
    current: Array, previous: Array, step: Array, *, alpha: Scalar, beta: Scalar
) -> Array:
    """``(alpha + beta) * current - beta * previous``, as in optax.

    On the first step (``step == 1``) there is no previous value: ``current``
    stands for it, so the direction is ``alpha * current``.
    """
    previous = jnp.where(step == 1, current, previous)
    return (alpha + beta) * current - beta * previous


@rule(
    name="optimistic_gradient_descent",
    slots={"previous_gradient": Slot()},
    complex_params=True,
    constraints={"learning_rate": ">= 0"},
    positional=("learning_rate", "alpha", "beta"),
)
def optimistic_gradient_descent(
    grad: Array,
    previous_gradient: Array,
    step: Array,
    *,
    learning_rate: Scalar,
    alpha: Scalar = 1.0,
    beta: Scalar = 1.0,
) -> tuple[Array, Array]:
    r"""Optimistic gradient descent: the gradient plus its last change.

    A drop-in for ``optax.optimistic_gradient_descent`` (same arguments,
    defaults and numbers), plus ``previous_gradient_dtype``. It converges in
    min-max games (bilinear saddle points) where gradient descent cycles or
    diverges.

    Update::

        u_t = -lr_t * ((alpha + beta) * g_t - beta * g_{t-1}),    g_0 = g_1

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        alpha: weight of the current gradient (``alpha = beta = 1`` is the
            paper's ``2 g_t - g_{t-1}``).
        beta: weight of the gradient's change (negative momentum).
        previous_gradient_dtype: storage dtype of the previous gradient
            (default: the parameter's).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``. Its state keeps the
        previous gradient; optax's also keeps an ``is_initial_step`` flag,
        which here is ``count == 0``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> tx = jr.optimistic_gradient_descent(0.1)
        >>> state = tx.init({"w": jnp.zeros(1)})
        >>> updates, state = tx.update({"w": jnp.array([1.0])}, state)
        >>> updates["w"]  # first step: alpha * g
        Array([-0.1], dtype=float32)
        >>> updates, state = tx.update({"w": jnp.array([2.0])}, state)
        >>> updates["w"]  # 2 * 2 - 1
        Array([-0.3], dtype=float32)

    References:
        Mokhtari, Ozdaglar and Pattathil, "A Unified Analysis of Extra-gradient
        and Optimistic Gradient Methods for Saddle Point Problems: Proximal
        Point Approach", AISTATS 2020. Verified against
        ``optax.optimistic_gradient_descent``.
    """
    direction = optimistic_direction(
        grad, previous_gradient, step, alpha=alpha, beta=beta
    )
    return -learning_rate * direction, grad


SPEC = RuleSpec(
    name="optimistic_gradient_descent",
    factory=optimistic_gradient_descent,
    hyperparams={"learning_rate": 1.7e-3, "alpha": 1.0, "beta": 0.1},
    reference="optax.optimistic_gradient_descent",
    reference_factory=optax.optimistic_gradient_descent,
    reference_cases=(
        {"learning_rate": 1e-2},
        {"learning_rate": 1e-2, "alpha": 0.7, "beta": 0.1},
    ),
)
