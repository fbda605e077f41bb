"""ACProp: the gradient scaled by the previous belief (prediction-error) moment."""

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import optax
import optax.contrib

from jaxopt_rules._core import Array, Scalar, Slot, abs_sq, rule
from jaxopt_rules.rules._spec import WEIGHT_DECAY_MASK, RuleSpec


@rule(
    name="acprop",
    slots={"nu": Slot(square=True)},
    per_leaf={"mask": True},
    complex_params=True,
    constraints={
        "learning_rate": ">= 0",
        "b1": "[0, 1)",
        "b2": "[0, 1)",
        "eps": ">= 0",
        "eps_root": ">= 0",
        "weight_decay": ">= 0",
    },
    positional=(
        "learning_rate",
        "b1",
        "b2",
        "eps",
        "eps_root",
        "weight_decay",
        "mask",
    ),
)
def acprop(
    grad: Array,
    mu: Array,
    nu: Array,
    param: Array,
    step: Array,
    *,
    learning_rate: Scalar,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-16,
    eps_root: Scalar = 1e-16,
    weight_decay: Scalar = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
) -> tuple[Array, Array, Array]:
    r"""ACProp: the gradient divided by the root of the previous belief moment.

    A drop-in for ``optax.contrib.acprop`` (same arguments, defaults and
    numbers), plus ``mu_dtype`` and ``nu_dtype`` for the storage of its
    slots. ``nu`` averages the squared prediction error ``g_t - m_{t-1}`` (as
    AdaBelief does); the step is scaled by the average *before* this
    gradient entered it (asynchronous scaling), so ``g_t`` and its scale are
    independent. The first step is plain gradient descent (``nu_hat = 1``).
    Where the gradient stops changing, the prediction error and so ``s``
    shrink toward ``eps_root`` and the step grows like ``g / (sqrt(eps_root)
    + eps)``: with the default 1e-16 values it can diverge (on Rosenbrock's
    valley, for instance); an ``eps`` near 1e-3 keeps it bounded.

    Update::

        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        s_t = b2 * s_{t-1} + (1 - b2) * |g_t - m_{t-1}|**2 + eps_root
        s_hat = 1 if t = 1, else s_{t-1} / (1 - b2**(t-1))
        u_t = -lr_t * (g_t / (sqrt(s_hat) + eps) + wd_t * theta_{t-1})

    where the ``wd_t * theta`` term applies only to leaves selected by ``mask``.

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        b1: decay of the gradient average (the belief), in [0, 1).
        b2: decay of the prediction-error average, in [0, 1).
        eps: added to the root of the second moment (outside the square root).
        eps_root: added to the second moment at every update.
        weight_decay: decay rate ``wd``, multiplied by the learning rate.
        mask: a pytree of booleans (a prefix of the params) or a function of
            the gradients returning one: which leaves are decayed. ``None``
            decays every leaf.
        mu_dtype: storage dtype of the gradient average (default: the
            parameter's).
        nu_dtype: storage dtype of the second moment (default: the parameter's).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> import jaxopt_rules as jr
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = jr.acprop(1e-1)
        >>> grads = {"w": jnp.array([3.0, -4.0])}
        >>> updates, _ = tx.update(grads, tx.init(params), params)
        >>> updates["w"]  # the first step: -lr * g
        Array([-0.3,  0.4], dtype=float32)

    References:
        Zhuang et al., "Momentum Centering and Asynchronous Update for
        Adaptive Gradient Methods", NeurIPS 2021. The paper's step is
        ``-lr * m_t / sqrt(s_{t-1})`` with the prediction error ``g_t - m_t``;
        optax (and this rule) divides the gradient ``g_t`` itself, with the
        error ``g_t - m_{t-1}``, so ``b1`` only shapes ``s``. Verified against
        ``optax.contrib.acprop``.
    """
    error = grad - mu
    mu = (1 - b1) * grad + b1 * mu
    first = step <= 1
    previous = jnp.where(first, step, step - 1)
    nu_hat = jnp.where(first, 1.0, nu / (1 - b2**previous))
    nu = (1 - b2) * abs_sq(error) + b2 * nu + eps_root
    direction = grad / (jnp.sqrt(nu_hat) + eps)
    if mask:
        direction = direction + weight_decay * param
    return -learning_rate * direction, mu, nu


SPEC = RuleSpec(
    name="acprop",
    factory=acprop,
    hyperparams={"learning_rate": 1e-3, "eps": 1e-3},
    reference="optax.contrib.acprop",
    reference_factory=optax.contrib.acprop,
    reference_cases=(
        {"learning_rate": 1e-2},
        {"learning_rate": 1e-2, "b1": 0.8, "b2": 0.99, "eps": 1e-8, "eps_root": 0.0},
        {"learning_rate": 1e-2, "weight_decay": 0.1, "mask": WEIGHT_DECAY_MASK},
    ),
)
