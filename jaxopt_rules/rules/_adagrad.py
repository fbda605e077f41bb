"""Adagrad: steps scaled by the root of the summed squared gradients."""

import jax
import jax.numpy as jnp
import optax

from jaxopt_rules._core import Array, Scalar, Slot, abs_sq, rule
from jaxopt_rules.rules._spec import RuleSpec


@rule(
    name="adagrad",
    slots={"sum_of_squares": Slot(init="initial_accumulator_value", square=True)},
    constraints={
        "learning_rate": ">= 0",
        "initial_accumulator_value": ">= 0",
        "eps": ">= 0",
    },
    complex_params=True,
    positional=("learning_rate", "initial_accumulator_value", "eps"),
)
def adagrad(
    grad: Array,
    sum_of_squares: Array,
    *,
    learning_rate: Scalar,
    initial_accumulator_value: Scalar = 0.1,
    eps: Scalar = 1e-7,
) -> tuple[Array, Array]:
    r"""Adagrad: per-coordinate steps shrinking with the gradients seen so far.

    A drop-in for ``optax.adagrad`` (same arguments, defaults and numbers),
    plus ``sum_of_squares_dtype``. Note optax's conventions, which differ from
    torch's: the accumulator starts at 0.1 and ``eps`` sits inside the root.

    Update::

        G_t = G_{t-1} + g_t**2,                      G_0 = initial_accumulator_value
        u_t = -lr_t * g_t / sqrt(G_t + eps)          (0 where G_t == 0)

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        initial_accumulator_value: starting value of the sum of squares.
        eps: added inside the square root.
        sum_of_squares_dtype: storage dtype of the accumulator.
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> tx = jr.adagrad(1.0, initial_accumulator_value=0.0, eps=0.0)
        >>> params = {"w": jnp.zeros(2)}
        >>> updates, _ = tx.update({"w": jnp.array([2.0, 0.0])}, tx.init(params))
        >>> updates["w"]
        Array([-1., -0.], dtype=float32)

    References:
        Duchi, Hazan and Singer, "Adaptive Subgradient Methods for Online
        Learning and Stochastic Optimization", JMLR 2011. Verified against
        ``optax.adagrad``.
    """
    sum_of_squares = abs_sq(grad) + sum_of_squares
    scale = jnp.where(sum_of_squares > 0, jax.lax.rsqrt(sum_of_squares + eps), 0.0)
    return -learning_rate * (scale * grad), sum_of_squares


SPEC = RuleSpec(
    name="adagrad",
    factory=adagrad,
    hyperparams={"learning_rate": 1.0},
    reference="optax.adagrad",
    reference_factory=optax.adagrad,
    reference_cases=(
        {"learning_rate": 0.1},
        {"learning_rate": 0.1, "initial_accumulator_value": 0.0, "eps": 1e-10},
    ),
)
