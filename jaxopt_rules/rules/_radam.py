"""RAdam: Adam with its adaptive step rectified while the variance estimate is young."""

import jax.numpy as jnp
import optax

from jaxopt_rules._core import Array, Scalar, Slot, rule
from jaxopt_rules.rules._adam import ADAM_CONSTRAINTS, adam_moments
from jaxopt_rules.rules._spec import RuleSpec


@rule(
    name="radam",
    slots={"nu": Slot(square=True)},
    # Below 4 the rectification is the root of a negative number on the steps
    # where 2 < rho_t < 4: the update would be NaN.
    constraints={**ADAM_CONSTRAINTS, "threshold": ">= 4"},
    complex_params=True,
    positional=("learning_rate", "b1", "b2", "eps", "eps_root", "threshold"),
)
def radam(
    grad: Array,
    mu: Array,
    nu: Array,
    step: Array,
    *,
    learning_rate: Scalar,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    threshold: Scalar = 5.0,
    nesterov: bool = False,
) -> tuple[Array, Array, Array]:
    r"""RAdam: Adam whose adaptive scaling is rectified, or skipped, early on.

    A drop-in for ``optax.radam`` (same arguments, defaults and numbers), plus
    ``mu_dtype`` and ``nu_dtype`` for the two slots' storage. While the
    length ``rho_t`` of the approximated simple moving average is below
    ``threshold`` the step is momentum SGD on the bias-corrected first
    moment; afterwards it is Adam's step times the rectification ``r_t``.

    Update::

        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        v_t = b2 * v_{t-1} + (1 - b2) * |g_t|**2
        m_hat = m_t / (1 - b1**t)          (nesterov: b1 * m_t / (1 - b1**(t+1))
                                                      + (1 - b1) * g_t / (1 - b1**t))
        v_hat = v_t / (1 - b2**t)
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * t * b2**t / (1 - b2**t)
        r_t = sqrt((rho_t - 4) * (rho_t - 2) * rho_inf
                   / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        u_t = -lr_t * r_t * m_hat / (sqrt(v_hat + eps_root) + eps)
                                          if rho_t >= threshold, else
        u_t = -lr_t * m_hat

    Where optax (and this rule) differs from the paper's Algorithm 2: the
    paper rectifies when ``rho_t > 4``, optax when ``rho_t >= threshold``
    with ``threshold=5`` (as the authors' code does), so with ``b2=0.999``
    the first rectified step is the 6th instead of the 5th; the paper's
    adaptive factor ``sqrt((1 - b2**t) / v_t)`` has no ``eps`` or
    ``eps_root``; the Nesterov option is optax's.

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        b1: decay of the first-moment average, in [0, 1).
        b2: decay of the second-moment average, in [0, 1).
        eps: added to the root of the second moment (outside the square root).
        eps_root: added inside the square root (useful for meta-gradients).
        threshold: the smallest ``rho_t`` at which the adaptive, rectified
            step is taken; at least 4 (below, ``r_t`` is the root of a
            negative number on some early steps).
        nesterov: use the Nesterov (NAdam) form of the first moment.
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
        >>> tx = jr.radam(1e-1)
        >>> state = tx.init(params)
        >>> grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
        >>> updates, state = tx.update(grads, state)
        >>> updates["w"]  # not rectified yet: -lr * m_hat = -lr * g
        Array([-0.2,  0.4], dtype=float32)
        >>> jr.radam(1e-1, threshold=3.0)  # optax's 4th step would be NaN
        Traceback (most recent call last):
        ...
        ValueError: radam: threshold must be >= 4, got 3.0

    References:
        Liu et al., "On the Variance of the Adaptive Learning Rate and
        Beyond", ICLR 2020. Verified against ``optax.radam``.
    """
    mu, nu = adam_moments(grad, mu, nu, b1=b1, b2=b2)
    if nesterov:
        mu_hat = b1 * (mu / (1 - b1 ** (step + 1))) + (1 - b1) * (grad / (1 - b1**step))
    else:
        mu_hat = mu / (1 - b1**step)
    nu_hat = nu / (1 - b2**step)
    rho_inf = 2.0 / (1.0 - b2) - 1.0
    b2t = b2**step
    rho = rho_inf - 2 * step * b2t / (1 - b2t)
    r = jnp.sqrt(
        (rho - 4.0) * (rho - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho)
    )
    rectified = r * mu_hat / (jnp.sqrt(nu_hat + eps_root) + eps)
    direction = jnp.where(rho >= threshold, rectified, mu_hat)
    return -learning_rate * direction, mu, nu


SPEC = RuleSpec(
    name="radam",
    factory=radam,
    # At 1e-1 its quantized state (8 and 4 bits) diverges on Rosenbrock.
    hyperparams={"learning_rate": 5e-2},
    reference="optax.radam",
    reference_factory=optax.radam,
    reference_cases=(
        {"learning_rate": 1e-2},
        {"learning_rate": 1e-2, "b1": 0.8, "b2": 0.99, "eps": 1e-6, "eps_root": 1e-8},
        {"learning_rate": 1e-2, "threshold": 30.0},
        {"learning_rate": 1e-2, "nesterov": True},
    ),
)
