"""Simplified AdEMAMix: one undamped momentum mixed with the current gradient."""

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import optax
import optax.contrib

from jaxopt_rules._core import Array, Scalar, rule
from jaxopt_rules.rules._spec import WEIGHT_DECAY_MASK, RuleSpec


@rule(
    name="simplified_ademamix",
    per_leaf={"mask": True},
    constraints={
        "learning_rate": ">= 0",
        "b1": "[0, 1)",
        "b2": "[0, 1)",
        "alpha": ">= 0",
        "eps": ">= 0",
        "eps_root": ">= 0",
        "weight_decay": ">= 0",
    },
    positional=(
        "learning_rate",
        "b1",
        "b2",
        "alpha",
        "eps",
        "eps_root",
        "weight_decay",
        "mask",
    ),
)
def simplified_ademamix(
    grad: Array,
    m: Array,
    n: Array,
    param: Array,
    step: Array,
    *,
    learning_rate: Scalar,
    b1: Scalar = 0.99,
    b2: Scalar = 0.95,
    alpha: Scalar = 0.0,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    weight_decay: Scalar = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
) -> tuple[Array, Array, Array]:
    r"""Simplified AdEMAMix: an undamped momentum plus ``alpha`` times the gradient.

    A drop-in for ``optax.contrib.simplified_ademamix`` (same arguments,
    defaults and numbers), plus ``m_dtype`` and ``n_dtype`` for the storage
    of its two slots. The momentum ``m`` is a sum (``b1 * m + g``, no
    ``1 - b1`` factor), so it is about ``1 / (1 - b1)`` times the gradient
    and the learning rate is correspondingly smaller than Adam's; with
    ``alpha = 0`` the rule is Adam with its learning rate and ``b1`` rescaled.

    Update::

        m_t = b1 * m_{t-1} + g_t
        n_t = g_t**2 + b2 * (n_{t-1} - g_t**2)      (= b2 * n_{t-1} + (1 - b2) * g_t**2)
        n_hat = n_t / (1 - b2**t)
        u_t = -lr_t * ((m_t + alpha_t * g_t) / (sqrt(n_hat + eps_root) + eps)
                       + wd_t * theta_{t-1})

    where the ``wd_t * theta`` term applies only to leaves selected by ``mask``.

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        b1: decay of the momentum sum, in [0, 1).
        b2: decay of the second-moment average, in [0, 1).
        alpha: weight of the current gradient, a number or a schedule.
        eps: added to the root of the second moment (outside the square root).
        eps_root: added inside the square root.
        weight_decay: decay rate ``wd``, multiplied by the learning rate.
        mask: a pytree of booleans (a prefix of the params) or a function of
            the gradients returning one: which leaves are decayed. ``None``
            decays every leaf.
        m_dtype: storage dtype of the momentum (default: the parameter's).
        n_dtype: storage dtype of the second moment (default: the parameter's).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> import jaxopt_rules as jr
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> tx = jr.simplified_ademamix(1e-2, alpha=1.0)
        >>> grads = {"w": jnp.array([1.0, -1.0])}
        >>> updates, _ = tx.update(grads, tx.init(params), params)
        >>> updates["w"]  # (m + alpha * g) / sqrt(n_hat) = 2, times -lr
        Array([-0.02,  0.02], dtype=float32)

    References:
        Morwani et al., "Connections between Schedule-Free Optimizers,
        AdEMAMix, and Accelerated SGD Variants", 2025. Verified against
        ``optax.contrib.simplified_ademamix``. Only the second moment is
        bias-corrected, as in optax.
    """
    m = grad + b1 * m
    square = grad * grad
    n = square + b2 * (n - square)
    n_hat = n / (1 - b2**step)
    direction = (m + alpha * grad) / (jnp.sqrt(n_hat + eps_root) + eps)
    if mask:
        direction = direction + weight_decay * param
    return -learning_rate * direction, m, n


SPEC = RuleSpec(
    name="simplified_ademamix",
    factory=simplified_ademamix,
    hyperparams={"learning_rate": 1e-3, "b1": 0.9, "alpha": 1.0},
    reference="optax.contrib.simplified_ademamix",
    reference_factory=optax.contrib.simplified_ademamix,
    reference_cases=(
        {"learning_rate": 1e-3},
        {"learning_rate": 1e-3, "b1": 0.9, "b2": 0.99, "alpha": 2.0, "eps": 1e-6},
        {
            "learning_rate": 1e-3,
            "alpha": optax.linear_schedule(0.0, 5.0, 50),
            "eps_root": 1e-8,
        },
        {"learning_rate": 1e-3, "weight_decay": 0.1, "mask": WEIGHT_DECAY_MASK},
    ),
)
