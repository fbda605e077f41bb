"""AdaBelief: Adam scaled by the variance of the gradient around its mean."""

import optax

from jaxopt_rules._core import Array, Scalar, Slot, abs_sq, rule
from jaxopt_rules.rules._adam import ADAM_CONSTRAINTS, adam_direction
from jaxopt_rules.rules._spec import RuleSpec


@rule(
    name="adabelief",
    slots={"nu": Slot(square=True)},
    constraints=ADAM_CONSTRAINTS,
    complex_params=True,
    positional=("learning_rate", "b1", "b2", "eps", "eps_root"),
)
def adabelief(
    grad: Array,
    mu: Array,
    nu: Array,
    step: Array,
    *,
    learning_rate: Scalar,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-16,
    eps_root: Scalar = 1e-16,
    nesterov: bool = False,
) -> tuple[Array, Array, Array]:
    r"""AdaBelief: steps scaled by the belief in the gradient's direction.

    A drop-in for ``optax.adabelief`` (same arguments, defaults and numbers),
    plus ``mu_dtype`` and ``nu_dtype`` for the two slots' storage. Where
    Adam divides by the root of the gradient's second moment, AdaBelief
    divides by the root of the squared *prediction error* ``g_t - m_t``:
    large steps where gradients agree with their average, small ones where
    they scatter.

    Update::

        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        s_t = b2 * s_{t-1} + (1 - b2) * |g_t - m_t|**2 + eps_root
        m_hat = m_t / (1 - b1**t)          (nesterov: b1 * m_t / (1 - b1**(t+1))
                                                      + (1 - b1) * g_t / (1 - b1**t))
        s_hat = s_t / (1 - b2**t)
        u_t = -lr_t * m_hat / (sqrt(s_hat) + eps)

    ``eps_root`` is added to ``s_t`` itself, so it is stored in the state
    (the slot ``nu``), accumulates with the average and is bias-corrected
    with it, as in the paper's Algorithm 2; ``eps`` is added outside the
    root. The paper uses one ``eps`` (1e-8 in its experiments) in both
    places; optax (and this rule) separates them, with 1e-16 for each by
    default. The Nesterov option is optax's.

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        b1: decay of the first-moment average, in [0, 1).
        b2: decay of the prediction error's second moment, in [0, 1).
        eps: added to the root of ``s_hat`` (outside the square root).
        eps_root: added to ``s_t`` at every step (inside the square root);
            must be non-zero to differentiate through the update.
        nesterov: use the Nesterov (NAdam) form of the first moment.
        mu_dtype: storage dtype of the first moment (default: the parameter's).
        nu_dtype: storage dtype of ``s`` (default: the parameter's).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> import jaxopt_rules as jr
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = jr.adabelief(1e-1)
        >>> state = tx.init(params)
        >>> grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
        >>> updates, state = tx.update(grads, state)
        >>> updates["w"].round(4)  # s_hat = (0.9 g)**2: the step is lr / 0.9
        Array([-0.1111,  0.1111], dtype=float32)

    References:
        Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the Belief
        in Observed Gradients", NeurIPS 2020. Verified against
        ``optax.adabelief``.
    """
    mu = (1 - b1) * grad + b1 * mu
    nu = (1 - b2) * abs_sq(grad - mu) + b2 * nu
    nu = nu + eps_root
    # eps_root is already inside nu: none is added under the root again.
    direction = adam_direction(
        grad, mu, nu, step, b1=b1, b2=b2, eps=eps, eps_root=0.0, nesterov=nesterov
    )
    return -learning_rate * direction, mu, nu


SPEC = RuleSpec(
    name="adabelief",
    factory=adabelief,
    hyperparams={"learning_rate": 1e-1},
    reference="optax.adabelief",
    reference_factory=optax.adabelief,
    reference_cases=(
        {"learning_rate": 1e-2},
        {"learning_rate": 1e-2, "b1": 0.8, "b2": 0.99, "eps": 1e-8, "eps_root": 0.0},
        {"learning_rate": 1e-2, "eps_root": 1e-8, "nesterov": True},
    ),
)
