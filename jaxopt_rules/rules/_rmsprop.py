"""RMSProp: steps scaled by a running root mean square of the gradients."""

import jax
import jax.numpy as jnp
import optax

from jaxopt_rules._core import Array, Scalar, Slot, abs_sq, rule
from jaxopt_rules.rules._spec import RuleSpec


@rule(
    name="rmsprop",
    slots={
        "nu": Slot(init="initial_scale", square=True),
        "mu": Slot(when="centered"),
        "trace": Slot(when="momentum"),
    },
    constraints={
        "learning_rate": ">= 0",
        "decay": "[0, 1]",
        "eps": ">= 0",
        "initial_scale": ">= 0",
        "momentum": ">= 0",
    },
    complex_params=True,
    positional=(
        "learning_rate",
        "decay",
        "eps",
        "initial_scale",
        "eps_in_sqrt",
        "centered",
        "momentum",
        "nesterov",
        "bias_correction",
    ),
)
def rmsprop(
    grad: Array,
    nu: Array,
    mu: Array | None,
    trace: Array | None,
    step: Array,
    *,
    learning_rate: Scalar,
    decay: Scalar = 0.9,
    eps: Scalar = 1e-8,
    initial_scale: Scalar = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: Scalar | None = None,
    nesterov: bool = False,
    bias_correction: bool = False,
) -> tuple[Array, Array, Array | None, Array | None]:
    r"""RMSProp: steps scaled by a running root mean square of the gradients.

    A drop-in for ``optax.rmsprop`` (same arguments, defaults and numbers),
    plus a storage dtype per slot. Note optax's conventions, which this keeps
    and torch does not share: ``decay=0.9``, ``eps`` inside the square root by
    default, and momentum applied *after* the learning rate.

    Update::

        v_t = decay * v_{t-1} + (1 - decay) * g_t**2,        v_0 = initial_scale
        s_t = v_t / c_t                   (c_t = 1 - decay**t with bias_correction)
        centered: m_t = decay * m_{t-1} + (1 - decay) * g_t;  s_t -= (m_t / c_t)**2
        d_t = g_t / sqrt(s_t + eps)       (eps_in_sqrt)
        d_t = g_t / (sqrt(s_t) + eps)     (otherwise)
        u_t = -lr_t * d_t
        momentum: b_t = u_t + momentum * b_{t-1}
                  u_t = b_t                       (nesterov: u_t + momentum * b_t)

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        decay: decay of the squared-gradient average.
        eps: regulariser of the denominator.
        initial_scale: initial value of the squared-gradient average.
        eps_in_sqrt: put ``eps`` inside the square root.
        centered: divide by an estimate of the variance instead of the second
            moment (keeps a first-moment slot ``mu``).
        momentum: decay of a momentum trace of the scaled updates; ``None``
            keeps none.
        nesterov: Nesterov form of that momentum.
        bias_correction: divide the averages by ``1 - decay**t``.
        nu_dtype: storage dtype of the squared-gradient average.
        mu_dtype: storage dtype of the gradient average (``centered``).
        trace_dtype: storage dtype of the momentum trace.
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> tx = jr.rmsprop(0.01, decay=0.5)
        >>> params = {"w": jnp.zeros(2)}
        >>> updates, _ = tx.update({"w": jnp.array([1.0, -1.0])}, tx.init(params))
        >>> updates["w"]
        Array([-0.01414214,  0.01414214], dtype=float32)

    References:
        Hinton, Srivastava and Swersky, "Neural Networks for Machine Learning",
        lecture 6e, 2012. Graves, "Generating Sequences With Recurrent Neural
        Networks", 2013 (the centered form). Verified against ``optax.rmsprop``.
    """
    nu = (1 - decay) * abs_sq(grad) + decay * nu
    correction = 1 - decay**step if bias_correction else 1.0
    var = nu / correction
    if mu is not None:
        mu = (1 - decay) * grad + decay * mu
        var = var - abs_sq(mu / correction)
    scale = jax.lax.rsqrt(var + eps) if eps_in_sqrt else 1 / (jnp.sqrt(var) + eps)
    update = -learning_rate * (scale * grad)
    if momentum is not None and trace is not None:
        trace = update + momentum * trace
        update = update + momentum * trace if nesterov else trace
    return update, nu, mu, trace


SPEC = RuleSpec(
    name="rmsprop",
    factory=rmsprop,
    hyperparams={"learning_rate": 5e-3},
    reference="optax.rmsprop",
    reference_factory=optax.rmsprop,
    reference_cases=(
        {"learning_rate": 1e-2},
        {
            "learning_rate": 1e-2,
            "decay": 0.99,
            "eps_in_sqrt": False,
            "initial_scale": 0.1,
        },
        {
            "learning_rate": 1e-2,
            "centered": True,
            "bias_correction": True,
            "eps": 1e-4,
        },
        {"learning_rate": 1e-3, "momentum": 0.9, "nesterov": True},
        {
            "learning_rate": 1e-3,
            "centered": True,
            "momentum": 0.5,
            "eps_in_sqrt": False,
            "eps": 1e-2,
        },
    ),
)
