"""Optimistic Adam: Adam's direction extrapolated from its last change."""

import optax

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.rules._adam import ADAM_CONSTRAINTS, adam_direction, adam_moments
from jaxopt_rules.rules._optimistic_gradient_descent import optimistic_direction
from jaxopt_rules.rules._spec import RuleSpec


@rule(
    name="optimistic_adam_v2",
    slots={"nu": Slot(square=True), "previous_gradient": Slot()},
    constraints=ADAM_CONSTRAINTS,
    complex_params=True,
    positional=("learning_rate",),
    keyword=("alpha", "beta", "b1", "b2", "eps", "eps_root", "mu_dtype", "nesterov"),
)
def optimistic_adam_v2(
    grad: Array,
    mu: Array,
    nu: Array,
    previous_gradient: Array,
    step: Array,
    *,
    learning_rate: Scalar,
    alpha: Scalar = 1.0,
    beta: Scalar = 1.0,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    nesterov: bool = True,
) -> tuple[Array, Array, Array, Array]:
    r"""Optimistic Adam: optimistic gradient descent on Adam's direction.

    A drop-in for ``optax.optimistic_adam_v2`` (same arguments, defaults and
    numbers), plus ``nu_dtype`` and ``previous_gradient_dtype``. For min-max
    problems (GANs, bilinear games), where Adam cycles around the saddle
    point.

    Update::

        m_t, v_t, m_hat, v_hat as in adam   (nesterov: NAdam's m_hat, the default)
        r_t = m_hat / (sqrt(v_hat + eps_root) + eps)
        u_t = -lr_t * ((alpha + beta) * r_t - beta * r_{t-1}),    r_0 = r_1

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        alpha: weight of the current direction.
        beta: weight of the direction's change (the optimism).
        b1: decay of the first-moment average, in [0, 1).
        b2: decay of the second-moment average, in [0, 1).
        eps: added to the root of the second moment.
        eps_root: added inside the square root.
        mu_dtype: storage dtype of the first moment (default: the parameter's).
        nesterov: use the Nesterov (NAdam) form of the first moment.
        nu_dtype: storage dtype of the second moment (default: the parameter's).
        previous_gradient_dtype: storage dtype of ``r_{t-1}`` (default: the
            parameter's).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``. Its state keeps ``mu``,
        ``nu`` and ``previous_gradient`` (``r_{t-1}``); optax's also keeps an
        ``is_initial_step`` flag, which here is ``count == 0``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> tx = jr.optimistic_adam_v2(0.1, nesterov=False)
        >>> state = tx.init({"w": jnp.zeros(1)})
        >>> updates, state = tx.update({"w": jnp.array([2.0])}, state)
        >>> updates["w"]  # first step: alpha * r_1, and r_1 = 1
        Array([-0.1], dtype=float32)

    References:
        Daskalakis, Ilyas, Syrgkanis and Zeng, "Training GANs with Optimism",
        ICLR 2018. Verified against ``optax.optimistic_adam_v2``. The paper's
        Optimistic Adam steps by ``2 lr r_t - lr r_{t-1}`` (``alpha = beta =
        1``) with the plain Adam ratio; optax uses NAdam's first moment unless
        ``nesterov=False``, and takes ``r_1`` for the missing ``r_0``.
    """
    mu, nu = adam_moments(grad, mu, nu, b1=b1, b2=b2)
    direction = adam_direction(
        grad, mu, nu, step, b1=b1, b2=b2, eps=eps, eps_root=eps_root, nesterov=nesterov
    )
    optimistic = optimistic_direction(
        direction, previous_gradient, step, alpha=alpha, beta=beta
    )
    return -learning_rate * optimistic, mu, nu, direction


SPEC = RuleSpec(
    name="optimistic_adam_v2",
    factory=optimistic_adam_v2,
    hyperparams={"learning_rate": 1e-2},
    reference="optax.optimistic_adam_v2",
    reference_factory=optax.optimistic_adam_v2,
    reference_cases=(
        {"learning_rate": 1e-2},
        {"learning_rate": 1e-2, "alpha": 0.7, "beta": 0.3, "nesterov": False},
        {"learning_rate": 1e-2, "b1": 0.8, "b2": 0.99, "eps": 1e-6, "eps_root": 1e-8},
    ),
)
