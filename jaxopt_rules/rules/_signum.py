"""Signum: sign descent on an exponential moving average of the gradient."""

import jax.numpy as jnp
import optax

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.rules._spec import RuleSpec


@rule(
    name="signum",
    slots={"ema": Slot(dtype_arg="accumulator_dtype")},
    constraints={"learning_rate": ">= 0", "beta": "[0, 1]"},
    positional=("learning_rate", "beta", "accumulator_dtype"),
)
def signum(
    grad: Array,
    ema: Array,
    *,
    learning_rate: Scalar,
    beta: Scalar = 0.9,
) -> tuple[Array, Array]:
    r"""Signum: every component moves by ``learning_rate`` against its momentum's sign.

    A drop-in for ``optax.signum`` (same arguments, defaults and numbers). The
    average is not bias-corrected: a positive factor does not change a sign.

    Update::

        m_t = beta * m_{t-1} + (1 - beta) * g_t,      m_0 = 0
        u_t = -lr_t * sign(m_t)                       (sign(0) = 0)

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        beta: decay of the moving average, in [0, 1].
        accumulator_dtype: storage dtype of the moving average (default: the
            parameter's). The sign is taken of the stored value, so a
            low-precision average can round a small value to zero; optax takes
            it before rounding.
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> tx = jr.signum(0.1, beta=0.5)
        >>> params = {"w": jnp.zeros(2)}
        >>> state = tx.init(params)
        >>> _, state = tx.update({"w": jnp.array([1.0, -1.0])}, state)
        >>> updates, state = tx.update({"w": jnp.array([-0.5, -0.5])}, state)
        >>> updates["w"], state.ema["w"]
        (Array([-0. ,  0.1], dtype=float32), Array([ 0. , -0.5], dtype=float32))

    References:
        Bernstein et al., "signSGD: Compressed Optimisation for Non-Convex
        Problems", ICML 2018 (Signum, without its optional weight decay).
        Zhao et al., "Deconstructing What Makes a Good Optimizer for Language
        Models", 2024. Verified against ``optax.signum``.
    """
    ema = (1 - beta) * grad + beta * ema
    return -learning_rate * jnp.sign(ema), ema


SPEC = RuleSpec(
    name="signum",
    factory=signum,
    hyperparams={"learning_rate": 2e-3, "beta": 0.99},
    reference="optax.signum",
    reference_factory=optax.signum,
    reference_cases=(
        {"learning_rate": 1e-2},
        {"learning_rate": 1e-2, "beta": 0.5},
    ),
)
