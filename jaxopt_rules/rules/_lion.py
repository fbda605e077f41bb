"""Lion: the sign of an interpolated momentum."""

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import optax

from jaxopt_rules._core import Array, Scalar, rule
from jaxopt_rules.rules._spec import WEIGHT_DECAY_MASK, RuleSpec


@rule(
    name="lion",
    per_leaf={"mask": True},
    constraints={
        "learning_rate": ">= 0",
        "b1": "[0, 1]",
        "b2": "[0, 1]",
        "weight_decay": ">= 0",
    },
    positional=("learning_rate", "b1", "b2", "mu_dtype", "weight_decay", "mask"),
)
def lion(
    grad: Array,
    mu: Array,
    param: Array,
    *,
    learning_rate: Scalar,
    b1: Scalar = 0.9,
    b2: Scalar = 0.99,
    weight_decay: Scalar = 1e-3,
    mask: Any | Callable[[optax.Params], Any] | None = None,
) -> tuple[Array, Array]:
    r"""Lion: steps of constant size in the sign of an interpolated momentum.

    A drop-in for ``optax.lion`` (same arguments, defaults and numbers). It
    keeps one slot, so half of Adam's state.

    Update::

        c_t = sign(b1 * m_{t-1} + (1 - b1) * g_t)
        m_t = b2 * m_{t-1} + (1 - b2) * g_t
        u_t = -lr_t * (c_t + wd_t * theta_{t-1})      (decay only where mask)

    Args:
        learning_rate: step size (typically 3-10x smaller than AdamW's).
        b1: interpolation between momentum and gradient for the step.
        b2: decay of the momentum.
        mu_dtype: storage dtype of the momentum (default: the parameter's).
        weight_decay: decoupled decay rate, a number or a schedule.
        mask: which leaves are decayed (pytree of booleans or a function of the
            gradients returning one); ``None`` decays every leaf.
        stochastic_rounding: round slots stored in bfloat16 stochastically
            (unbiased) instead of to nearest; the state then carries a key.
        rounding_seed: seed of the stochastic rounding (default 0).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp
        >>> import jaxopt_rules as jr
        >>> tx = jr.lion(0.1, weight_decay=0.0)
        >>> params = {"w": jnp.ones(3)}
        >>> grads = {"w": jnp.array([0.5, -2.0, 0.0])}
        >>> updates, _ = tx.update(grads, tx.init(params), params)
        >>> updates["w"]
        Array([-0.1,  0.1, -0. ], dtype=float32)

    References:
        Chen et al., "Symbolic Discovery of Optimization Algorithms",
        NeurIPS 2023. Verified against ``optax.lion``.
    """
    direction = jnp.sign((1 - b1) * grad + b1 * mu)
    mu = (1 - b2) * grad + b2 * mu
    if mask:
        direction = direction + weight_decay * param
    return -learning_rate * direction, mu


SPEC = RuleSpec(
    name="lion",
    factory=lion,
    hyperparams={"learning_rate": 2e-3, "weight_decay": 0.0},
    reference="optax.lion",
    reference_factory=optax.lion,
    reference_cases=(
        {"learning_rate": 1e-3},
        {"learning_rate": 1e-3, "b1": 0.95, "b2": 0.98, "weight_decay": 0.1},
        {"learning_rate": 1e-3, "weight_decay": 0.1, "mask": WEIGHT_DECAY_MASK},
    ),
)
