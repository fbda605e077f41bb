"""Adam: bias-corrected first and second moment estimates."""

import jax.numpy as jnp
import optax

from jaxopt_rules._core import Array, Scalar, Slot, abs_sq, rule
from jaxopt_rules.rules._spec import RuleSpec


ADAM_CONSTRAINTS = {
    "learning_rate": ">= 0",
    "b1": "[0, 1)",
    "b2": "[0, 1)",
    "eps": ">= 0",
    "eps_root": ">= 0",
}


def adam_moments(
    grad: Array, mu: Array, nu: Array, *, b1: Scalar, b2: Scalar
) -> tuple[Array, Array]:
    """The exponential moving averages of ``g`` and ``|g|**2``."""
    return (1 - b1) * grad + b1 * mu, (1 - b2) * abs_sq(grad) + b2 * nu


def adam_direction(
    grad: Array,
    mu: Array,
    nu: Array,
    step: Array,
    *,
    b1: Scalar,
    b2: Scalar,
    eps: Scalar,
    eps_root: Scalar,
    nesterov: bool,
) -> Array:
    """``m_hat / (sqrt(v_hat + eps_root) + eps)`` from updated moments ``mu, nu``.

    With ``nesterov`` the first moment looks one step ahead, as in optax's
    NAdam: ``b1 * m_t / (1 - b1**(t+1)) + (1 - b1) * g_t / (1 - b1**t)``.
    """
    if nesterov:
        mu_hat = b1 * (mu / (1 - b1 ** (step + 1))) + (1 - b1) * (grad / (1 - b1**step))
    else:
        mu_hat = mu / (1 - b1**step)
    nu_hat = nu / (1 - b2**step)
    return mu_hat / (jnp.sqrt(nu_hat + eps_root) + eps)


@rule(
    name="adam",
    slots={"nu": Slot(square=True)},
    constraints=ADAM_CONSTRAINTS,
    complex_params=True,
    positional=("learning_rate", "b1", "b2", "eps", "eps_root", "mu_dtype"),
)
def adam(
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
    nesterov: bool = False,
) -> tuple[Array, Array, Array]:
    r"""Adam: steps scaled by bias-corrected estimates of the gradient's moments.

    A drop-in for ``optax.adam`` (same arguments, defaults and numbers), plus
    ``nu_dtype`` for the second moment's storage.

    Update::

        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        v_t = b2 * v_{t-1} + (1 - b2) * g_t**2
        m_hat = m_t / (1 - b1**t)          (nesterov: b1 * m_t / (1 - b1**(t+1))
                                                      + (1 - b1) * g_t / (1 - b1**t))
        v_hat = v_t / (1 - b2**t)
        u_t = -lr_t * m_hat / (sqrt(v_hat + eps_root) + eps)

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        b1: decay of the first-moment average, in [0, 1).
        b2: decay of the second-moment average, in [0, 1).
        eps: added to the root of the second moment (outside the square root).
        eps_root: added inside the square root (useful for meta-gradients).
        mu_dtype: storage dtype of the first moment (default: the parameter's).
        nesterov: use the Nesterov (NAdam) form of the first moment.
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
        >>> tx = jr.adam(1e-1)
        >>> state = tx.init(params)
        >>> grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
        >>> updates, state = tx.update(grads, state)
        >>> optax.apply_updates(params, updates)["w"]
        Array([ 0.9, -1.9], dtype=float32)

    References:
        Kingma and Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
        Dozat, "Incorporating Nesterov Momentum into Adam", ICLR workshop 2016.
        Verified against ``optax.adam``.
    """
    mu, nu = adam_moments(grad, mu, nu, b1=b1, b2=b2)
    direction = adam_direction(
        grad, mu, nu, step, b1=b1, b2=b2, eps=eps, eps_root=eps_root, nesterov=nesterov
    )
    return -learning_rate * direction, mu, nu


SPEC = RuleSpec(
    name="adam",
    factory=adam,
    hyperparams={"learning_rate": 1e-1},
    reference="optax.adam",
    reference_factory=optax.adam,
    reference_cases=(
        {"learning_rate": 1e-2},
        {"learning_rate": 1e-2, "b1": 0.8, "b2": 0.99, "eps": 1e-6},
        {"learning_rate": 1e-2, "eps_root": 1e-8, "nesterov": True},
        {"learning_rate": 1e-2, "b1": 0.0},
    ),
)
