"""AdaMax: Adam with the infinity norm in place of the second moment."""

import jax.numpy as jnp
import optax

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.rules._spec import RuleSpec


ADAMAX_CONSTRAINTS = {
    "learning_rate": ">= 0",
    "b1": "[0, 1)",
    "b2": "[0, 1]",
    "eps": ">= 0",
}

# ``nu`` holds magnitudes |g| + eps: ``square=True`` stores it real for complex
# parameters, and in float32 for float16 ones (where eps=1e-8 rounds to zero and
# a zero gradient would divide 0 by 0).
ADAMAX_SLOTS = {"nu": Slot(square=True)}


def adamax_direction(
    grad: Array,
    mu: Array,
    nu: Array,
    step: Array,
    *,
    b1: Scalar,
    b2: Scalar,
    eps: Scalar,
) -> tuple[Array, Array, Array]:
    """AdaMax's direction ``m_hat / u`` and its updated moments ``mu, nu``."""
    mu = (1 - b1) * grad + b1 * mu
    nu = jnp.maximum(jnp.abs(grad) + eps, b2 * nu)
    # One division: XLA rewrites (m / c) / u as m / (c * u) in some programs
    # and not others, which would make results depend on the leaf layout.
    return mu / ((1 - b1**step) * nu), mu, nu


@rule(
    name="adamax",
    slots=ADAMAX_SLOTS,
    constraints=ADAMAX_CONSTRAINTS,
    complex_params=True,
    positional=("learning_rate", "b1", "b2", "eps"),
)
def adamax(
    grad: Array,
    mu: Array,
    nu: Array,
    step: Array,
    *,
    learning_rate: Scalar,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
) -> tuple[Array, Array, Array]:
    r"""AdaMax: Adam scaled by an exponentially weighted infinity norm.

    A drop-in for ``optax.adamax`` (same arguments, defaults and numbers),
    plus ``mu_dtype`` and ``nu_dtype`` for the two slots' storage. For
    complex parameters ``|g|`` is the modulus and ``nu`` is stored real.

    Update::

        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        u_t = max(|g_t| + eps, b2 * u_{t-1})
        u_t' = -lr_t * (m_t / (1 - b1**t)) / u_t

    The paper has no ``eps`` (``u_t = max(b2 * u_{t-1}, |g_t|)``); optax (and
    this rule) adds it to ``|g_t|`` inside the maximum, not to the
    denominator, so ``u_t >= eps``. The infinity norm needs no bias
    correction.

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        b1: decay of the first-moment average, in [0, 1).
        b2: decay of the infinity norm, in [0, 1].
        eps: added to ``|g_t|`` so that the norm is never zero.
        mu_dtype: storage dtype of the first moment (default: the parameter's).
        nu_dtype: storage dtype of the infinity norm (default: the
            parameter's; float32 for float16 parameters).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> import jaxopt_rules as jr
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = jr.adamax(1e-1)
        >>> state = tx.init(params)
        >>> grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
        >>> updates, state = tx.update(grads, state)
        >>> optax.apply_updates(params, updates)["w"]
        Array([ 0.9, -1.9], dtype=float32)
        >>> state.nu["w"]  # |g|
        Array([2., 4.], dtype=float32)

    References:
        Kingma and Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015,
        section 7.1. Verified against ``optax.adamax``.
    """
    direction, mu, nu = adamax_direction(grad, mu, nu, step, b1=b1, b2=b2, eps=eps)
    return -learning_rate * direction, mu, nu


SPEC = RuleSpec(
    name="adamax",
    factory=adamax,
    hyperparams={"learning_rate": 1e-1},
    reference="optax.adamax",
    reference_factory=optax.adamax,
    reference_cases=(
        {"learning_rate": 1e-2},
        {"learning_rate": 1e-2, "b1": 0.8, "b2": 0.99, "eps": 1e-6},
        {"learning_rate": 1e-2, "b1": 0.0, "b2": 1.0},
    ),
)
