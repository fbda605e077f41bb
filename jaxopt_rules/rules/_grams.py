"""Grams: Adam's step sizes, the current gradient's signs."""

import jax.numpy as jnp

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.rules._spec import AuthorsReference, RuleSpec


@rule(
    name="grams",
    slots={"nu": Slot(square=True)},
    constraints={
        "learning_rate": ">= 0",
        "b1": "[0, 1)",
        "b2": "[0, 1)",
        "eps": ">= 0",
        "weight_decay": ">= 0",
    },
)
def grams(
    grad: Array,
    mu: Array,
    nu: Array,
    param: Array,
    step: Array,
    *,
    learning_rate: Scalar = 1e-3,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-6,
    weight_decay: Scalar = 0.0,
) -> tuple[Array, Array, Array]:
    r"""Grams: the magnitude of Adam's step in the direction of the gradient's signs.

    Adam's update, with each component's sign replaced by the current
    gradient's: the momentum sets how far, the gradient which way (a
    component whose gradient is 0 does not move). Weight decay is decoupled.

    Update::

        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        v_t = b2 * v_{t-1} + (1 - b2) * g_t**2
        a_t = |m_t / (1 - b1**t)| / (sqrt(v_t) / sqrt(1 - b2**t) + eps)
        u_t = -lr_t * (sign(g_t) * a_t + wd * theta_{t-1})

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        b1: decay of the first moment, in [0, 1).
        b2: decay of the second moment, in [0, 1).
        eps: added to the bias-corrected root of the second moment.
        weight_decay: decoupled decay rate, multiplied by the learning rate.
        mu_dtype: storage dtype of ``m`` (default: the parameter's).
        nu_dtype: storage dtype of ``v`` (likewise).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxopt_rules import grams
        >>> params = {"w": jnp.array([1.0, -2.0, 3.0])}
        >>> tx = grams(learning_rate=0.1)
        >>> grads = {"w": jnp.array([2.0, -0.5, 0.0])}
        >>> updates, _ = tx.update(grads, tx.init(params), params)
        >>> updates["w"]  # Adam's first step is lr * sign(g); 0 where g is 0
        Array([-0.09999996,  0.0999998 , -0.        ], dtype=float32)

    References:
        Cao, Li, Liu and Yin, "Grams: Gradient Descent with Adaptive Momentum
        Scaling", arXiv:2412.17107, 2024. Verified against
        ``pytorch_optimizer.Grams`` 4.1.0.
    """
    mu = (1 - b1) * grad + b1 * mu
    nu = (1 - b2) * (grad * grad) + b2 * nu
    denom = jnp.sqrt(nu) / jnp.sqrt(1 - b2**step) + eps
    size = jnp.abs(mu / (1 - b1**step)) / denom
    return -learning_rate * (jnp.sign(grad) * size + weight_decay * param), mu, nu


SPEC = RuleSpec(
    name="grams",
    factory=grams,
    hyperparams={"learning_rate": 1e-2},
    authors=AuthorsReference(
        requirement="pytorch-optimizer==4.1.0",
        optimizer="pytorch_optimizer.Grams",
        cases=(
            ({"learning_rate": 1e-2}, {"lr": 1e-2}),
            (
                {
                    "learning_rate": 1e-2,
                    "b1": 0.8,
                    "b2": 0.99,
                    "eps": 1e-8,
                    "weight_decay": 0.1,
                },
                {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-8, "weight_decay": 0.1},
            ),
        ),
    ),
)
