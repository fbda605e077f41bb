"""Yogi: Adam with an additive, sign-controlled second-moment update."""

import jax.numpy as jnp
import optax

from jaxopt_rules._core import Array, Scalar, Slot, abs_sq, rule
from jaxopt_rules.rules._spec import RuleSpec


YOGI_INITIAL_VALUE = 1e-6
"""optax's starting value of both moments (``initial_accumulator_value``)."""


@rule(
    name="yogi",
    slots={
        "mu": Slot(init=YOGI_INITIAL_VALUE),
        "nu": Slot(init=YOGI_INITIAL_VALUE, square=True),
    },
    constraints={
        "learning_rate": ">= 0",
        "b1": "[0, 1)",
        "b2": "[0, 1)",
        "eps": ">= 0",
    },
    complex_params=True,
    positional=("learning_rate", "b1", "b2", "eps"),
)
def yogi(
    grad: Array,
    mu: Array,
    nu: Array,
    step: Array,
    *,
    learning_rate: Scalar,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-3,
) -> tuple[Array, Array, Array]:
    r"""Yogi: Adam whose second moment moves by at most ``(1 - b2) * g**2`` a step.

    A drop-in for ``optax.yogi`` (same arguments, defaults and numbers), plus
    ``mu_dtype`` and ``nu_dtype`` for the two slots' storage. Adam's second
    moment moves towards ``g**2`` by ``(1 - b2) * (g**2 - v)``; Yogi's by
    ``(1 - b2) * g**2`` in the direction of ``g**2``, so a run of small
    gradients cannot shrink it (and raise the effective step) quickly.

    Update::

        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        v_t = v_{t-1} - (1 - b2) * sign(v_{t-1} - |g_t|**2) * |g_t|**2
        m_hat = m_t / (1 - b1**t)
        v_hat = v_t / (1 - b2**t)
        u_t = -lr_t * m_hat / (sqrt(v_hat) + eps)

    with ``m_0 = v_0 = 1e-6``. Where optax (and this rule) differs from the
    paper's Algorithm 2: the paper starts from ``m_0 = v_0 = 0`` and
    corrects neither moment for bias; optax starts both at 1e-6 (its
    ``initial_accumulator_value``, fixed in ``optax.yogi``) and applies
    Adam's bias corrections.

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        b1: decay of the first-moment average, in [0, 1).
        b2: rate ``1 - b2`` of the second moment's additive steps, in [0, 1).
        eps: added to the root of the second moment (outside the square root).
        mu_dtype: storage dtype of the first moment (default: the parameter's).
        nu_dtype: storage dtype of the second moment (default: the parameter's).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> import jaxopt_rules as jr
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = jr.yogi(1e-1)
        >>> state = tx.init(params)
        >>> state.nu["w"]
        Array([1.e-06, 1.e-06], dtype=float32)
        >>> grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
        >>> updates, state = tx.update(grads, state)
        >>> updates["w"].round(3)  # about -lr * sign(g) on the first step
        Array([-0.1,  0.1], dtype=float32)

    References:
        Zaheer et al., "Adaptive Methods for Nonconvex Optimization",
        NeurIPS 2018. Verified against ``optax.yogi``.
    """
    mu = (1 - b1) * grad + b1 * mu
    g2 = abs_sq(grad)
    nu = nu - (1 - b2) * jnp.sign(nu - g2) * g2
    mu_hat = mu / (1 - b1**step)
    nu_hat = nu / (1 - b2**step)
    return -learning_rate * (mu_hat / (jnp.sqrt(nu_hat) + eps)), mu, nu


SPEC = RuleSpec(
    name="yogi",
    factory=yogi,
    hyperparams={"learning_rate": 1e-1},
    reference="optax.yogi",
    reference_factory=optax.yogi,
    reference_cases=(
        {"learning_rate": 1e-2},
        {"learning_rate": 1e-2, "b1": 0.8, "b2": 0.99, "eps": 1e-6},
    ),
)
