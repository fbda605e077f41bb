"""Adan: adaptive Nesterov momentum estimated from gradient differences."""

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import optax

from jaxopt_rules._core import Array, Scalar, Slot, abs_sq, rule
from jaxopt_rules.rules._spec import WEIGHT_DECAY_MASK, RuleSpec


@rule(
    name="adan",
    slots={"n": Slot(square=True)},
    per_leaf={"mask": True},
    complex_params=True,
    constraints={
        "learning_rate": ">= 0",
        "b1": "[0, 1)",
        "b2": "[0, 1)",
        "b3": "[0, 1)",
        "eps": ">= 0",
        "eps_root": ">= 0",
        "weight_decay": ">= 0",
    },
    positional=(
        "learning_rate",
        "b1",
        "b2",
        "b3",
        "eps",
        "eps_root",
        "weight_decay",
        "mask",
    ),
)
def adan(
    grad: Array,
    m: Array,
    v: Array,
    n: Array,
    g: Array,
    param: Array,
    step: Array,
    *,
    learning_rate: Scalar,
    b1: Scalar = 0.98,
    b2: Scalar = 0.92,
    b3: Scalar = 0.99,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 1e-8,
    weight_decay: Scalar = 0.0,
    mask: Any | Callable[[optax.Params], Any] | None = None,
) -> tuple[Array, Array, Array, Array, Array]:
    r"""Adan: Adam-like steps with a Nesterov momentum built from gradient differences.

    A drop-in for ``optax.adan`` (same arguments, defaults and numbers), plus
    ``m_dtype``, ``v_dtype``, ``n_dtype`` and ``g_dtype`` for the storage of
    the slots. ``g`` keeps the previous gradient, so the state holds four
    parameter-sized slots.

    Update::

        d_t = g_t - g_{t-1}                          (d_1 = 0)
        m_t = b1 * m_{t-1} + (1 - b1) * g_t
        v_t = b2 * v_{t-1} + (1 - b2) * d_t
        n_t = b3 * n_{t-1} + (1 - b3) * |g_t + (1 - b2) * d_t|**2
        m_hat, v_hat, n_hat = m_t / (1 - b1**t), v_t / (1 - b2**t), n_t / (1 - b3**t)
        r_t = (m_hat + (1 - b2) * v_hat) / (sqrt(n_hat + eps_root) + eps)
        u_t = -lr_t * (r_t + wd_t * theta_{t-1})     (the decay term only where mask)

    Differences from the paper (Xie et al., Algorithm 1), which this rule
    shares with optax: the paper writes the decays as the weights of the new
    term (its ``beta_1 = 0.02`` is ``1 - b1`` here) and weights the gradient
    difference by ``1 - beta_2 = b2`` (0.92) in ``n`` and in the step, where
    optax uses ``1 - b2`` (0.08); the moments start at zero and are
    bias-corrected instead of starting from the first gradient; and the weight
    decay is decoupled, ``-lr * wd * theta``, instead of the paper's proximal
    division by ``1 + lr * wd``.

    Args:
        learning_rate: step size, a number or a schedule of the step count.
        b1: decay of the average of the gradients, in [0, 1).
        b2: decay of the average of the gradient differences, in [0, 1).
        b3: decay of the average of the squared term, in [0, 1).
        eps: added to the root of the squared term (outside the square root).
        eps_root: added inside the square root.
        weight_decay: decoupled decay rate, a number or a schedule.
        mask: which leaves are decayed (pytree of booleans or a function of the
            parameters returning one); ``None`` decays every leaf.
        m_dtype: storage dtype of ``m`` (default: the parameter's).
        v_dtype: storage dtype of ``v`` (default: the parameter's).
        n_dtype: storage dtype of ``n`` (default: the parameter's).
        g_dtype: storage dtype of the previous gradient (default: the parameter's).
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> tx = jr.adan(0.1)
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.5])},
        ...                            tx.init(params), params)
        >>> updates["w"]
        Array([-0.1,  0.1], dtype=float32)
        >>> state.g["w"]  # the previous gradient
        Array([ 0.5, -0.5], dtype=float32)

    References:
        Xie, Zhou, Li, Lin and Yan, "Adan: Adaptive Nesterov Momentum Algorithm
        for Faster Optimizing Deep Models", IEEE TPAMI 2024 (arXiv:2208.06677).
        Verified against ``optax.adan``.
    """
    diff = jnp.where(step == 1, jnp.zeros_like(grad), grad - g)
    m = (1 - b1) * grad + b1 * m
    v = (1 - b2) * diff + b2 * v
    n = (1 - b3) * abs_sq(grad + (1 - b2) * diff) + b3 * n
    m_hat = m / (1 - b1**step)
    v_hat = v / (1 - b2**step)
    n_hat = n / (1 - b3**step)
    direction = (m_hat + (1 - b2) * v_hat) / (jnp.sqrt(n_hat + eps_root) + eps)
    if mask:
        direction = direction + weight_decay * param
    return -learning_rate * direction, m, v, n, grad


SPEC = RuleSpec(
    name="adan",
    factory=adan,
    hyperparams={"learning_rate": 1e-2},
    reference="optax.adan",
    reference_factory=optax.adan,
    reference_cases=(
        {"learning_rate": 1e-2},
        {"learning_rate": 1e-2, "b1": 0.9, "b2": 0.8, "b3": 0.95, "eps_root": 0.0},
        {"learning_rate": 1e-2, "weight_decay": 0.1, "eps": 1e-6},
        {"learning_rate": 1e-2, "weight_decay": 0.1, "mask": WEIGHT_DECAY_MASK},
        {"learning_rate": 1e-2, "b1": 0.0, "b2": 0.0, "b3": 0.0},
    ),
)
