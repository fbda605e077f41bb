"""AMSGrad: Adam whose second-moment estimate never decreases."""

import jax.numpy as jnp
import optax

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.rules._adam import ADAM_CONSTRAINTS, adam_moments
from jaxopt_rules.rules._spec import RuleSpec


@rule(
    name="amsgrad",
    slots={"nu": Slot(square=True), "nu_max": Slot(square=True)},
    constraints=ADAM_CONSTRAINTS,
    complex_params=True,
    positional=(
        "learning_rate",
        "b1",
        "b2",
        "eps",
        "eps_root",
        "mu_dtype",
        "bias_correction_mu",
        "bias_correction_nu",
    ),
)
def amsgrad(
    grad: Array,
    mu: Array,
    nu: Array,
    nu_max: Array,
    step: Array,
    *,
    learning_rate: Scalar,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
) -> tuple[Array, Array, Array, Array]:
    r"""AMSGrad: Adam scaled by the running maximum of the second moment.

    A drop-in for ``optax.amsgrad`` (same arguments, defaults and numbers),
    plus ``nu_dtype`` and ``nu_max_dtype`` for the second moment and its
    running maximum. The state holds three parameter-sized slots: ``mu``,
    ``nu`` and ``nu_max``.

    Update::

        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        v_t = b2 * v_{t-1} + (1 - b2) * |g_t|**2
        m_hat = m_t / (1 - b1**t)          (m_t without bias_correction_mu)
        v_hat = v_t / (1 - b2**t)          (v_t without bias_correction_nu)
        v_max_t = max(v_max_{t-1}, v_hat)     (v_max_0 = 0)
        u_t = -lr_t * m_hat / (sqrt(v_max_t + eps_root) + eps)

    The paper's algorithm corrects neither moment for bias, has no ``eps``
    and takes the maximum of the raw ``v_t``; optax (and this rule) corrects
    both by default, the second one *before* the maximum, so ``nu_max`` holds
    the largest bias-corrected estimate. ``bias_correction_mu=False`` and
    ``bias_correction_nu=False`` give the paper's form (with ``eps``). The
    paper's decaying ``b1_t`` is a constant here.

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        b1: decay of the first-moment average, in [0, 1).
        b2: decay of the second-moment average, in [0, 1).
        eps: added to the root of the second moment (outside the square root).
        eps_root: added inside the square root (useful for meta-gradients).
        mu_dtype: storage dtype of the first moment (default: the parameter's).
        bias_correction_mu: divide the first moment by ``1 - b1**t``.
        bias_correction_nu: divide the second moment by ``1 - b2**t`` before
            taking the running maximum.
        nu_dtype: storage dtype of the second moment (default: the parameter's).
        nu_max_dtype: storage dtype of the running maximum (default: the
            parameter's).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> import jaxopt_rules as jr
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = jr.amsgrad(1e-1)
        >>> state = tx.init(params)
        >>> grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
        >>> updates, state = tx.update(grads, state)
        >>> optax.apply_updates(params, updates)["w"]
        Array([ 0.9, -1.9], dtype=float32)
        >>> state.nu_max["w"]  # the bias-corrected second moment, g**2
        Array([ 4., 16.], dtype=float32)

    References:
        Reddi, Kale and Kumar, "On the Convergence of Adam and Beyond",
        ICLR 2018. Verified against ``optax.amsgrad``.
    """
    mu, nu = adam_moments(grad, mu, nu, b1=b1, b2=b2)
    mu_hat = mu / (1 - b1**step) if bias_correction_mu else mu
    nu_hat = nu / (1 - b2**step) if bias_correction_nu else nu
    nu_max = jnp.maximum(nu_max, nu_hat)
    direction = mu_hat / (jnp.sqrt(nu_max + eps_root) + eps)
    return -learning_rate * direction, mu, nu, nu_max


SPEC = RuleSpec(
    name="amsgrad",
    factory=amsgrad,
    hyperparams={"learning_rate": 1e-1},
    reference="optax.amsgrad",
    reference_factory=optax.amsgrad,
    reference_cases=(
        {"learning_rate": 1e-2},
        {"learning_rate": 1e-2, "b1": 0.8, "b2": 0.99, "eps": 1e-6, "eps_root": 1e-8},
        {"learning_rate": 1e-2, "bias_correction_mu": False},
        {"learning_rate": 1e-2, "bias_correction_nu": False},
        {
            "learning_rate": 1e-2,
            "bias_correction_mu": False,
            "bias_correction_nu": False,
        },
    ),
)
